//! Small pieces every endpoint uses: the clock, random tokens, digests and form parsing.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use super::error::OAuthError;

/// Largest body any endpoint reads (form posts and registration documents are small).
pub(super) const MAX_BODY: usize = 64 * 1024;

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// A 256-bit random value, base64url: token ids and client secrets. `None` if the system RNG
/// fails, which callers answer with 500: never a predictable value in its place.
pub(crate) fn random_token() -> Option<String> {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).ok()?;
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// A form parameter the request must carry, or RFC 6749 `invalid_request`.
pub(super) fn required<'a>(
    form: &'a HashMap<String, String>,
    name: &str,
) -> Result<&'a String, OAuthError> {
    form.get(name)
        .ok_or_else(|| OAuthError::InvalidRequest(format!("{name} is required").into()))
}

pub(crate) fn parse_form(body: &[u8]) -> Result<HashMap<String, String>, OAuthError> {
    let mut form = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(body) {
        // RFC 6749 §3.2: parameters must not be repeated.
        if form.insert(k.into_owned(), v.into_owned()).is_some() {
            return Err(OAuthError::InvalidRequest("a parameter is repeated".into()));
        }
    }
    Ok(form)
}

/// A form body (`application/x-www-form-urlencoded`) whose parameters are not repeated
/// (RFC 6749 §3.2): a handler names it as an argument, and a refused body is a 400
/// `invalid_request` before the handler runs.
pub(crate) struct Form(pub(crate) HashMap<String, String>);

impl<S: Send + Sync> axum::extract::FromRequest<S> for Form {
    type Rejection = Response;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, Response> {
        let body = bytes::Bytes::from_request(request, state)
            .await
            .map_err(IntoResponse::into_response)?;
        parse_form(&body)
            .map(Form)
            .map_err(IntoResponse::into_response)
    }
}

pub(crate) fn digest(value: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(value.as_bytes()))
}
