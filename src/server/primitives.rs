//! Small pieces every endpoint uses: the clock, random tokens, digests, form parsing and the
//! RFC 6749 error body.

// Helpers return a ready `Response` as their error: boxing it would add an allocation to
// every refusal for no gain.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use sha2::{Digest, Sha256};

/// Largest body any endpoint reads (form posts and registration documents are small).
pub(super) const MAX_BODY: usize = 64 * 1024;

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// An RFC 6749 §5.2 error response.
pub(crate) fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    // The same body the resource-server layers answer with, plus the HTTP/1.0 cache header
    // RFC 6749 §5.1 asks token responses to carry.
    let mut response = crate::challenge::json_error(status, error, description).into_response();
    no_store(response.headers_mut());
    response
}

pub(crate) fn no_store(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// A 256-bit random value, base64url: token ids and client secrets. `None` if the system RNG
/// fails, which callers answer with 500: never a predictable value in its place.
pub(crate) fn random_token() -> Option<String> {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).ok()?;
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

pub(crate) fn rng_failure() -> Response {
    oauth_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "server_error",
        "no randomness available",
    )
}

/// A form parameter the request must carry, or RFC 6749 `invalid_request`.
pub(super) fn required<'a>(
    form: &'a HashMap<String, String>,
    name: &str,
) -> Result<&'a String, Response> {
    form.get(name).ok_or_else(|| {
        oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("{name} is required"),
        )
    })
}

pub(crate) fn parse_form(body: &[u8]) -> Result<HashMap<String, String>, Response> {
    let mut form = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(body) {
        // RFC 6749 §3.2: parameters must not be repeated.
        if form.insert(k.into_owned(), v.into_owned()).is_some() {
            return Err(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "a parameter is repeated",
            ));
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
        parse_form(&body).map(Form)
    }
}

pub(crate) fn digest(value: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(value.as_bytes()))
}
