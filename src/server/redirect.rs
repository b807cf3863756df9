//! Redirect URIs: what may be registered, how a request's URI matches a registered one, and the
//! authorization response sent back to it.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use super::auth_server::AuthServer;
use super::error::no_store;
use super::pages::error_page;
use crate::resource::is_loopback;

/// What kind of redirect URI a client registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RedirectKind {
    /// `https` on a host name or IP address.
    Web,
    /// `http` on a loopback address (RFC 8252 §7.3).
    Loopback,
    /// A private-use scheme of a native app, in reverse domain form (RFC 8252 §7.1):
    /// `com.example.app:/callback`.
    PrivateUse,
}

/// Redirect URIs (RFC 6749 §3.1.2, RFC 8252, RFC 9700 §4.1): absolute; `https` on a valid host
/// name or IP address (no wildcard, no empty or malformed label), `http` on a loopback host, or
/// a reverse-domain private-use scheme; no fragment; no user information. Each refusal says
/// which rule.
pub(super) fn check_redirect_uri(uri: &str) -> Result<RedirectKind, &'static str> {
    let url = url::Url::parse(uri).map_err(|_| "not an absolute URL")?;
    if url.fragment().is_some() {
        return Err("redirect URIs must not have a fragment");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("redirect URIs must not carry credentials");
    }
    match url.scheme() {
        "https" => {
            check_host(&url)?;
            Ok(RedirectKind::Web)
        }
        "http" if is_loopback(&url) => Ok(RedirectKind::Loopback),
        "http" => Err("plain http redirect URIs are only allowed on loopback hosts"),
        scheme if is_private_use_scheme(scheme) => {
            if url.host().is_some() {
                return Err(
                    "a private-use scheme redirect URI has no host (`com.example.app:/path`)",
                );
            }
            Ok(RedirectKind::PrivateUse)
        }
        "javascript" | "data" | "file" | "blob" | "vbscript" | "about" => {
            Err("this scheme cannot be a redirect URI")
        }
        _ => Err(
            "redirect URIs must be https, http on loopback, or a reverse-domain private-use scheme",
        ),
    }
}

/// A host the redirect may go to: an IP address, or a DNS name of valid labels (letters,
/// digits, hyphens; no wildcard `*`, no empty label, no label starting or ending with `-`).
fn check_host(url: &url::Url) -> Result<(), &'static str> {
    match url.host() {
        Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)) => Ok(()),
        Some(url::Host::Domain(domain)) => {
            let domain = domain.strip_suffix('.').unwrap_or(domain);
            let valid = !domain.is_empty()
                && domain.len() <= 253
                && domain.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if valid {
                Ok(())
            } else {
                Err("the redirect URI's host is not a valid host name (no wildcards)")
            }
        }
        None => Err("the redirect URI has no host"),
    }
}

/// RFC 8252 §7.1: a private-use scheme is a reverse domain name the app controls (at least
/// one dot), so it cannot collide with `http` and friends.
fn is_private_use_scheme(scheme: &str) -> bool {
    scheme.contains('.')
        && scheme.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'+')
        })
}

/// Exact string match, except that a redirect URI registered on a loopback IP literal without a
/// port accepts any port (RFC 8252 §7.3): the rest of the string must be identical, compared
/// as written, never after URL normalization (which would fold `/x/../callback` into
/// `/callback`).
pub(super) fn redirect_matches(registered: &str, requested: &str) -> bool {
    if registered == requested {
        return true;
    }
    for host in ["http://127.0.0.1", "http://[::1]"] {
        let Some(registered_rest) = registered.strip_prefix(host) else {
            continue;
        };
        if !registered_rest.starts_with('/') {
            return false;
        }
        let Some(port_and_rest) = requested
            .strip_prefix(host)
            .and_then(|r| r.strip_prefix(':'))
        else {
            return false;
        };
        let digits = port_and_rest.bytes().take_while(u8::is_ascii_digit).count();
        let valid_port = (1..=5).contains(&digits)
            && port_and_rest[..digits].parse::<u16>().is_ok_and(|p| p > 0);
        return valid_port && &port_and_rest[digits..] == registered_rest;
    }
    false
}

/// Sends the authorization response back to the client: code or error, `state`, and `iss`
/// (RFC 9207) in every case.
pub(super) fn redirect_back(
    server: &AuthServer,
    redirect_uri: &str,
    state: Option<&str>,
    params: &[(&str, &str)],
) -> Response {
    let Ok(mut url) = url::Url::parse(redirect_uri) else {
        return error_page(server, StatusCode::BAD_REQUEST, "invalid redirect URI");
    };
    {
        let mut query = url.query_pairs_mut();
        for (k, v) in params {
            query.append_pair(k, v);
        }
        if let Some(state) = state {
            query.append_pair("state", state);
        }
        query.append_pair("iss", server.issuer());
    }
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(location) = HeaderValue::from_str(url.as_str()) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    no_store(response.headers_mut());
    response
}

#[cfg(test)]
mod tests {
    use super::{RedirectKind, check_redirect_uri, is_private_use_scheme, redirect_matches};

    #[test]
    fn each_redirect_uri_rule_refuses_with_its_reason() {
        let refused = [
            ("/callback", "not an absolute URL"),
            ("https://app.example/cb#frag", "must not have a fragment"),
            ("https://user@app.example/cb", "must not carry credentials"),
            ("https://:pw@app.example/cb", "must not carry credentials"),
            ("http://app.example/cb", "only allowed on loopback"),
            ("https://*.example.com/cb", "not a valid host name"),
            ("https://app..example/cb", "not a valid host name"),
            ("https://-app.example/cb", "not a valid host name"),
            ("https://app-.example/cb", "not a valid host name"),
            ("https://app_1.example/cb", "not a valid host name"),
            ("https://a.b$c.example/cb", "not a valid host name"),
            ("com.example.app://host/cb", "has no host"),
            ("javascript:alert(1)", "cannot be a redirect URI"),
            ("data:text/html,hi", "cannot be a redirect URI"),
            ("file:///etc/passwd", "cannot be a redirect URI"),
            ("myapp:/cb", "reverse-domain private-use scheme"),
            ("ftp://app.example/cb", "reverse-domain private-use scheme"),
        ];
        for (uri, reason) in refused {
            match check_redirect_uri(uri) {
                Err(message) => assert!(message.contains(reason), "{uri}: {message}"),
                Ok(kind) => panic!("{uri} accepted as {kind:?}"),
            }
        }
        let long_label = format!("https://{}.example/cb", "a".repeat(64));
        assert!(check_redirect_uri(&long_label).is_err());
        let long_name = format!("https://{}example/cb", "abcdefghi.".repeat(26));
        assert!(check_redirect_uri(&long_name).is_err());

        let accepted = [
            ("https://app.example/cb", RedirectKind::Web),
            ("https://app.example./cb", RedirectKind::Web),
            ("https://x-1.app.example:8443/cb?x=1", RedirectKind::Web),
            ("https://203.0.113.7/cb", RedirectKind::Web),
            ("https://[2001:db8::1]/cb", RedirectKind::Web),
            ("http://127.0.0.1:8080/cb", RedirectKind::Loopback),
            ("http://[::1]/cb", RedirectKind::Loopback),
            ("http://localhost:3000/cb", RedirectKind::Loopback),
            ("com.example.app:/oauth", RedirectKind::PrivateUse),
            ("com.example-app+dev:/oauth", RedirectKind::PrivateUse),
        ];
        for (uri, kind) in accepted {
            assert_eq!(check_redirect_uri(uri), Ok(kind), "{uri}");
        }
        let longest_label = format!("https://{}.example/cb", "a".repeat(63));
        assert_eq!(check_redirect_uri(&longest_label), Ok(RedirectKind::Web));
        let (a, d) = ("a".repeat(63), "d".repeat(61));
        let longest_name = format!("https://{a}.{a}.{a}.{d}/cb");
        assert_eq!(check_redirect_uri(&longest_name), Ok(RedirectKind::Web));
    }

    #[test]
    fn authorization_response_carries_params_state_and_iss() {
        let server = crate::server::AuthServer::builder("https://auth.example")
            .resource("https://mcp.example/mcp")
            .dev_user("demo", "demo")
            .build()
            .unwrap();
        let response = super::redirect_back(
            &server,
            "https://app.example/cb?keep=1",
            Some("s t"),
            &[("code", "abc")],
        );
        assert_eq!(response.status(), http::StatusCode::SEE_OTHER);
        assert_eq!(
            response.headers()[http::header::LOCATION],
            "https://app.example/cb?keep=1&code=abc&state=s+t&iss=https%3A%2F%2Fauth.example"
        );
        assert_eq!(response.headers()[http::header::CACHE_CONTROL], "no-store");
        let response = super::redirect_back(&server, "not a url", None, &[]);
        assert_eq!(response.status(), http::StatusCode::BAD_REQUEST);
        assert!(!response.headers().contains_key(http::header::LOCATION));
    }

    #[test]
    fn private_use_schemes_are_reverse_domain_names() {
        assert!(is_private_use_scheme("com.example.app"));
        for scheme in ["myapp", "com..app", ".com.app", "com.app.", "com.ex_ample"] {
            assert!(!is_private_use_scheme(scheme), "{scheme}");
        }
    }

    #[test]
    fn loopback_port_rule_is_narrow() {
        let r = "http://127.0.0.1/callback";
        assert!(redirect_matches(r, "http://127.0.0.1:4567/callback"));
        assert!(redirect_matches("http://[::1]/cb", "http://[::1]:80/cb"));
        for bad in [
            "http://127.0.0.1:4567/x/../callback",
            "http://127.0.0.1:4567/callback/",
            "http://127.0.0.1:4567/callback?x=1",
            "http://127.0.0.1:0/callback",
            "http://127.0.0.1:99999/callback",
            "http://2130706433:4567/callback",
            "http://localhost:4567/callback",
            "http://127.0.0.1.evil.example:4567/callback",
            "http://127.0.0.1:4567@evil.example/callback",
        ] {
            assert!(!redirect_matches(r, bad), "{bad}");
        }
        // A URI registered with a port, or on `localhost`, must match exactly.
        assert!(!redirect_matches(
            "http://127.0.0.1:3000/cb",
            "http://127.0.0.1:3001/cb"
        ));
        assert!(!redirect_matches(
            "http://localhost/cb",
            "http://localhost:3001/cb"
        ));
        assert!(redirect_matches(
            "https://app.example/cb",
            "https://app.example/cb"
        ));
        assert!(!redirect_matches(
            "https://app.example/cb",
            "https://APP.example/cb"
        ));
    }
}
