//! RFC 8414 / OpenID discovery metadata and the JWKS.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};

use super::auth_server::AuthServer;

pub(super) async fn metadata(State(server): State<AuthServer>) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
        ],
        server.0.metadata.clone(),
    )
        .into_response()
}

pub(super) async fn jwks(State(server): State<AuthServer>) -> Response {
    (
        [
            (
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            ),
        ],
        axum::Json(server.0.keys.jwks()),
    )
        .into_response()
}
