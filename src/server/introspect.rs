//! RFC 7662 token introspection (for authenticated clients only).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::auth_server::AuthServer;
use super::primitives::{Form, no_store, oauth_error, required};
use super::revocation::{is_revoked, own_token};

pub(super) async fn introspect(
    State(server): State<AuthServer>,
    headers: HeaderMap,
    Form(form): Form,
) -> Response {
    match server.authenticate(&headers, &form).await {
        // Introspection tells who a token belongs to: only clients configured in code (the
        // resource servers), never self-registered ones.
        Ok((client, _)) if server.0.clients.contains_key(&client.client_id) => {}
        Ok(_) => {
            return oauth_error(
                StatusCode::FORBIDDEN,
                "unauthorized_client",
                "this client may not introspect tokens",
            );
        }
        Err(response) => return response,
    }
    let token = match required(&form, "token") {
        Ok(token) => token,
        Err(response) => return response,
    };
    let mut answer = json!({"active": false});
    if let Some(ctx) = own_token(&server, token).await {
        let revoked = match is_revoked(server.0.store.as_ref(), &ctx).await {
            Ok(revoked) => revoked,
            Err(e) => {
                return oauth_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    &e.to_string(),
                );
            }
        };
        if !revoked {
            answer = Value::Object(ctx.claims().clone());
            answer["active"] = Value::Bool(true);
            answer["token_type"] = Value::from("Bearer");
        }
    }
    let mut response = axum::Json(answer).into_response();
    no_store(response.headers_mut());
    response
}
