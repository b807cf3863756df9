//! RFC 8414 / OpenID discovery metadata and the JWKS.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};

use super::SigningKeys;
use super::auth_server::Metadata;

pub(super) async fn metadata(State(Metadata(document)): State<Metadata>) -> Response {
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
        document,
    )
        .into_response()
}

pub(super) async fn jwks(State(keys): State<SigningKeys>) -> Response {
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
        axum::Json(keys.jwks()),
    )
        .into_response()
}
