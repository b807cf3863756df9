//! RFC 7662 token introspection (for authenticated clients only).

use axum::extract::State;
use axum::response::Response;
use http::HeaderMap;
use serde_json::{Value, json};

use super::auth_server::AuthServer;
use super::error::OAuthError;
use super::primitives::{Form, required};
use super::revocation::{is_revoked, own_token};
use super::token::json_no_store;

pub(super) async fn introspect(
    State(server): State<AuthServer>,
    headers: HeaderMap,
    Form(form): Form,
) -> Result<Response, OAuthError> {
    let (client, _) = server.authenticate(&headers, &form).await?;
    // Introspection tells who a token belongs to: only clients configured in code (the
    // resource servers), never self-registered ones.
    if !server.registry().clients.contains_key(&client.client_id) {
        return Err(OAuthError::ForbiddenClient(
            "this client may not introspect tokens".into(),
        ));
    }
    let token = required(&form, "token")?;
    let mut answer = json!({"active": false});
    if let Some(ctx) = own_token(&server, token).await
        && !is_revoked(server.store().as_ref(), server.revocations(), &ctx).await?
    {
        answer = Value::Object(ctx.claims().clone());
        answer["active"] = Value::Bool(true);
        // The claims carry `cnf.jkt` for a bound token (RFC 9449 §6.2), and its type says so.
        answer["token_type"] = Value::from(super::token::token_type(ctx.dpop_key_thumbprint()));
    }
    Ok(json_no_store(answer))
}
