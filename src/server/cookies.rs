//! The cookies of the sign-in flow, read and written with the `cookie` crate: HttpOnly,
//! SameSite=Lax; on an https issuer `Secure` and named with the `__Host-` prefix.

use std::time::Duration;

use axum::response::Response;
use cookie::{Cookie, SameSite};
use http::{HeaderMap, HeaderValue, header};

use super::auth_server::AuthServer;

/// The value of the cookie `name` the browser sent (the first, if it sent several).
pub(super) fn session_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
}

pub(super) fn browser_cookie_name(server: &AuthServer) -> String {
    format!("{}_b", server.sign_in().cookie_name)
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Lax, scoped to `path`, `Secure` on https.
pub(super) fn cookie_header(
    server: &AuthServer,
    name: &str,
    value: &str,
    path: &str,
    ttl: Duration,
) -> Option<HeaderValue> {
    let max_age = cookie::time::Duration::seconds(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
    let cookie = Cookie::build((name, value))
        .path(path)
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(server.issuer().starts_with("https://"))
        .max_age(max_age)
        .build();
    HeaderValue::from_str(&cookie.to_string()).ok()
}

/// Sets a cookie of the sign-in flow, scoped to the issuer's `/oauth` path; on https to `/`,
/// as the `__Host-` prefix of its name requires.
pub(super) fn set_cookie(
    server: &AuthServer,
    response: &mut Response,
    name: &str,
    value: &str,
    ttl: Duration,
) {
    let path = if name.starts_with("__Host-") {
        "/".to_owned()
    } else {
        server.urls().local_path("/oauth")
    };
    if let Some(value) = cookie_header(server, name, value, &path, ttl) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}
