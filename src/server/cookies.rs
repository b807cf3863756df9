//! The cookies of the sign-in flow: HttpOnly, SameSite=Lax, scoped to the issuer's path.

use std::time::Duration;

use axum::response::Response;
use http::{HeaderMap, HeaderValue, header};

use super::auth_server::AuthServer;

pub(super) fn session_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

pub(super) fn browser_cookie_name(server: &AuthServer) -> String {
    format!("{}_b", server.0.cookie_name)
}

/// Sets an `HttpOnly`, `SameSite=Lax` cookie scoped to the issuer's path, `Secure` on https.
pub(super) fn set_cookie(
    server: &AuthServer,
    response: &mut Response,
    name: &str,
    value: &str,
    ttl: Duration,
) {
    let secure = if server.issuer().starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let path = server.0.urls.local_path("/oauth");
    let cookie = format!(
        "{name}={value}; Path={path}; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
        ttl.as_secs()
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}
