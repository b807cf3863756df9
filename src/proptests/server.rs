//! Redirect URIs, dynamic registration documents and client ID metadata documents, through the
//! authorization server's router (their parsers are private to it), and `canonical_audience`.

use axum::body::Body;
use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use proptest::prelude::*;
use tower::ServiceExt;

use super::{block_on, config};
use crate::server::AuthServer;

pub(super) const BASE: &str = "http://127.0.0.1:9";
pub(super) const BASE_HOST: &str = "127.0.0.1:9";

pub(super) fn server(
    configure: impl FnOnce(crate::server::AuthServerBuilder) -> crate::server::AuthServerBuilder,
) -> AuthServer {
    configure(
        AuthServer::builder(BASE)
            .resource(format!("{BASE}/mcp"))
            .scopes_supported(["mcp:tools", "notes:read"])
            .dev_user("demo", "demo")
            .registration_limit(None),
    )
    .build()
    .unwrap()
}

/// What a redirect URI must be to be accepted at all (RFC 6749 §3.1.2, RFC 8252, RFC 9700
/// §4.1): an absolute URL without fragment or user information, never an active or local
/// scheme, and plain http only on a loopback host.
pub(super) fn safe_redirect(uri: &str) -> bool {
    let Ok(url) = url::Url::parse(uri) else {
        return false;
    };
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    url.fragment().is_none()
        && url.username().is_empty()
        && url.password().is_none()
        && ![
            "javascript",
            "data",
            "file",
            "blob",
            "vbscript",
            "about",
            "ftp",
            "ws",
            "wss",
        ]
        .contains(&url.scheme())
        && (url.scheme() != "http" || loopback)
        && (url.scheme() != "https" || url.host().is_some())
}

/// Whether the server accepts `uri` as a redirect URI of a configured public client: the
/// verdict of `check_redirect_uri`, which is private to the server module.
pub(super) fn accepted_redirect(uri: &str) -> bool {
    AuthServer::builder(BASE)
        .resource(format!("{BASE}/mcp"))
        .dev_user("demo", "demo")
        .public_client("app", [uri], ["mcp:tools"])
        .build()
        .is_ok()
}

/// How `/oauth/authorize` treated a complete request: refused for its client or its
/// redirect URI (on the server's page), or started; anything else is unexpected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Outcome {
    UnknownClient,
    UnregisteredRedirect,
    Started,
    Other(StatusCode, String),
}

pub(super) fn outcome(status: StatusCode, body: &[u8]) -> Outcome {
    // The page words it as a sentence: compared without case.
    let body = String::from_utf8_lossy(body);
    let lower = body.to_lowercase();
    if lower.contains("unknown client") {
        Outcome::UnknownClient
    } else if lower.contains("redirect uri is not registered") {
        Outcome::UnregisteredRedirect
    } else if status == StatusCode::OK || status == StatusCode::SEE_OTHER {
        Outcome::Started
    } else {
        Outcome::Other(status, body.into_owned())
    }
}

pub(super) fn redirect_uri() -> impl Strategy<Value = String> {
    let scheme = prop::sample::select(vec![
        "https://",
        "http://",
        "HTTP://",
        "ftp://",
        "javascript:",
        "https:",
        "http:\\\\",
        "com.example.app:",
        "com.example.app://",
        "data.x:",
        "javascript.x:",
        "",
    ]);
    let host = prop::sample::select(vec![
        "127.0.0.1",
        "[::1]",
        "localhost",
        "LOCALHOST",
        "localhost.",
        "127.1",
        "2130706433",
        "0x7f.1",
        "app.example",
        "127.0.0.1.evil.example",
        "[::ffff:127.0.0.1]",
        "user:pw@127.0.0.1",
        "@127.0.0.1",
        "xn--nxa",
        "127.0.0.1\t",
        "évil.example",
        "",
    ]);
    let port = prop::sample::select(vec!["", ":80", ":4567", ":0", ":65536", ":080", ":"]);
    let path = prop::sample::select(vec![
        "/cb",
        "",
        "/",
        "/x/../cb",
        "/cb?x=1",
        "/cb#f",
        "/cb#",
        "\\cb",
        "/%2e%2e/cb",
        "/cb\n",
        "/ cb",
        "/c%0Ab",
    ]);
    (scheme, host, port, path).prop_map(|(s, h, p, pa)| format!("{s}{h}{p}{pa}"))
}

/// One request to the server's router, addressed to the server's own host.
pub(super) async fn call(
    router: axum::Router,
    mut request: Request<Body>,
) -> (StatusCode, http::HeaderMap, Vec<u8>) {
    request
        .headers_mut()
        .insert(header::HOST, http::HeaderValue::from_static(BASE_HOST));
    let response = router.oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, headers, body)
}

/// A complete authorization request (code flow, PKCE): one the server either starts (200
/// or 303 towards sign-in) or refuses for its client or redirect URI.
pub(super) fn authorize_request(client_id: &str, redirect_uri: &str) -> Request<Body> {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("response_type", "code")
        .append_pair(
            "code_challenge",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        )
        .append_pair("code_challenge_method", "S256")
        .append_pair("state", "s")
        .finish();
    Request::get(format!("/oauth/authorize?{query}"))
        .body(Body::empty())
        .unwrap()
}

/// The reference reading of RFC 8252 §7.3 as the code documents it.
pub(super) fn reference_matches(registered: &str, requested: &str) -> bool {
    if registered == requested {
        return true;
    }
    for host in ["http://127.0.0.1", "http://[::1]"] {
        if let Some(rest) = registered.strip_prefix(host).filter(|r| r.starts_with('/')) {
            let Some(port_rest) = requested
                .strip_prefix(host)
                .and_then(|r| r.strip_prefix(':'))
            else {
                return false;
            };
            let digits: String = port_rest.chars().take_while(char::is_ascii_digit).collect();
            return !digits.is_empty()
                && digits.len() <= 5
                && digits
                    .parse::<u32>()
                    .is_ok_and(|p| (1..=65535).contains(&p))
                && &port_rest[digits.len()..] == rest;
        }
    }
    false
}

proptest! {
    #![proptest_config(config(128))]

    /// A configured public client's redirect URI is accepted only if safe, and always when
    /// plainly good; an accepted one matches itself at `/oauth/authorize`, and the loopback
    /// port rule admits only what RFC 8252 §7.3 allows: the same loopback IP literal, the
    /// same path and query, any valid port.
    #[test]
    fn redirect_uris_are_checked_and_matched_as_documented(
        registered in prop_oneof![
            3 => redirect_uri(),
            1 => (prop::sample::select(vec!["https://app.example", "http://127.0.0.1", "http://[::1]", "http://localhost", "https://127.0.0.1"]),
                  prop::sample::select(vec!["", ":8080"]),
                  "(/[a-z]{1,4}){0,2}(\\?[a-z]=[0-9])?")
                .prop_map(|(h, p, rest)| format!("{h}{p}{rest}")),
        ],
        requested in prop_oneof![
            1 => redirect_uri(),
            1 => (0u32..70_000, any::<bool>(), prop::sample::select(vec!["/cb", "/cb/", "/cb?x=1", "/x/../cb", "/CB"])).prop_map(|(p, v6, path)| {
                if v6 { format!("http://[::1]:{p}{path}") } else { format!("http://127.0.0.1:{p}{path}") }
            }),
        ],
    ) {
        let accepted = accepted_redirect(&registered);
        if accepted {
            prop_assert!(safe_redirect(&registered), "unsafe redirect URI accepted: {:?}", registered);
        }
        let plainly_good = url::Url::parse(&registered).is_ok_and(|u| {
            (u.as_str() == registered || u.as_str() == format!("{registered}/"))
                && u.fragment().is_none()
                && u.username().is_empty()
                && matches!(
                    (u.scheme(), u.host_str()),
                    ("https", Some("app.example")) | ("http", Some("127.0.0.1" | "[::1]" | "localhost"))
                )
        });
        if plainly_good {
            prop_assert!(accepted, "good redirect URI refused: {:?}", registered);
        }
        if !accepted {
            return Ok(());
        }
        let auth = AuthServer::builder(BASE)
            .resource(format!("{BASE}/mcp"))
            .dev_user("demo", "demo")
            .public_client("app", [registered.clone()], ["mcp:tools"])
            .build()
            .unwrap();
        let (status, _, body) = block_on(call(auth.router(), authorize_request("app", &registered)));
        prop_assert_eq!(outcome(status, &body), Outcome::Started, "{:?} does not match itself", registered);
        let (status, _, body) = block_on(call(auth.router(), authorize_request("app", &requested)));
        let got = outcome(status, &body);
        prop_assert!(matches!(got, Outcome::Started | Outcome::UnregisteredRedirect), "{:?}", got);
        prop_assert_eq!(got == Outcome::Started, reference_matches(&registered, &requested), "{:?} vs {:?}", registered, requested);
        if got == Outcome::Started && registered != requested {
            // Only the loopback port rule: the browser goes where the registered URI
            // points, but for the port.
            let (a, b) = (url::Url::parse(&registered).unwrap(), url::Url::parse(&requested).unwrap());
            prop_assert_eq!(a.scheme(), "http");
            prop_assert_eq!(a.host(), b.host());
            prop_assert!(matches!(b.host(), Some(url::Host::Ipv4(ip)) if ip.is_loopback()) || matches!(b.host(), Some(url::Host::Ipv6(ip)) if ip.is_loopback()));
            prop_assert_eq!(a.path(), b.path());
            prop_assert_eq!(a.query(), b.query());
            prop_assert!(b.port().is_some_and(|p| p != 0));
        }
    }
}
