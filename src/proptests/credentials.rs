//! The `Authorization` header through `BearerLayer` (the credential parser is private to it),
//! and the `WWW-Authenticate` builder.

use std::convert::Infallible;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use proptest::prelude::*;
use serde_json::json;
use tower::ServiceExt;

use super::{block_on, config};
use crate::challenge::{BearerErrorCode, Challenge};
use crate::validate::{JwtKey, JwtValidator};
use crate::{BearerLayer, ProtectedResource, Scopes};

const SECRET: &[u8] = b"an example secret of 32 bytes!!!";
const ISSUER: &str = "https://auth.example.com";
const RESOURCE: &str = "https://mcp.example.com/mcp";

fn valid_token() -> String {
    let exp = super::unix_now() + 600;
    let claims =
        json!({"iss": ISSUER, "aud": RESOURCE, "sub": "alice", "scope": "mcp:tools", "exp": exp});
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

/// (status, the `error` of the challenge) for one request with these `Authorization` values.
fn ask(values: &[HeaderValue], uri: &str) -> (StatusCode, Option<String>) {
    let resource = ProtectedResource::builder(RESOURCE)
        .authorization_server(ISSUER)
        .scopes_supported(["mcp:tools"])
        .build()
        .unwrap();
    let validator = JwtValidator::builder(ISSUER, RESOURCE)
        .key(JwtKey::hmac(SECRET, Algorithm::HS256).unwrap())
        .build()
        .unwrap();
    let inner = tower::service_fn(|_: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
    });
    let service = tower_layer::Layer::layer(&BearerLayer::new(validator, resource), inner);
    let mut request = Request::post(uri).body(Full::new(Bytes::new())).unwrap();
    for v in values {
        request
            .headers_mut()
            .append(header::AUTHORIZATION, v.clone());
    }
    let response = block_on(service.oneshot(request)).unwrap();
    let challenge = response
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_owned());
    let error = challenge.as_deref().and_then(|c| {
        let params = parse_challenge(c).expect("a well-formed challenge");
        params
            .into_iter()
            .find(|(k, _)| k == "error")
            .map(|(_, v)| v)
    });
    if response.status() != StatusCode::OK {
        assert!(challenge.is_some(), "a refusal without a challenge");
    }
    (response.status(), error)
}

/// The RFC 6750 §2.1 `b64token` syntax, written out.
fn is_b64token(token: &[u8]) -> bool {
    let body_len = token.len() - token.iter().rev().take_while(|&&b| b == b'=').count();
    body_len > 0
        && token[..body_len]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

/// Reads `Bearer k="v", k="v"` back (values never hold `"` or `\`).
fn parse_challenge(challenge: &str) -> Option<Vec<(String, String)>> {
    let mut rest = challenge.strip_prefix("Bearer ")?;
    let mut params = Vec::new();
    loop {
        let (key, after) = rest.split_once("=\"")?;
        let (value, after) = after.split_once('"')?;
        if !key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            return None;
        }
        params.push((key.to_owned(), value.to_owned()));
        if after.is_empty() {
            return Some(params);
        }
        rest = after.strip_prefix(", ")?;
    }
}

fn header_value() -> impl Strategy<Value = Vec<u8>> {
    let scheme = prop_oneof![
        Just(b"Bearer".to_vec()),
        Just(b"bEaReR".to_vec()),
        Just(b"Basic".to_vec()),
        Just(b"Bearer:".to_vec()),
        Just(b"Bearer\t".to_vec()),
        Just(Vec::new()),
        prop::collection::vec(any::<u8>(), 0..8),
    ];
    let spaces = prop_oneof![
        Just(b"".to_vec()),
        Just(b" ".to_vec()),
        Just(b"   ".to_vec()),
        Just(b"\t".to_vec())
    ];
    let token = prop_oneof![
        "[A-Za-z0-9._~+/-]{1,12}=*".prop_map(String::into_bytes),
        prop::collection::vec(
            prop_oneof![4 => prop::sample::select(b"aZ9-._~+/= ".to_vec()), 1 => any::<u8>()],
            0..16
        ),
    ];
    (scheme, spaces, token).prop_map(|(mut s, sp, t)| {
        s.extend(sp);
        s.extend(t);
        s
    })
}

proptest! {
    #![proptest_config(config(256))]

    /// Any `Authorization` value (that HTTP lets through): another scheme is no credential
    /// (401, no error), a malformed token is `invalid_request` (400), a well-formed one goes
    /// to the validator (401 `invalid_token`): exactly as RFC 6750 reads it.
    #[test]
    fn authorization_header_is_classified_as_the_rfc_reads_it(value in header_value()) {
        let Ok(header) = HeaderValue::from_bytes(&value) else {
            return Ok(());
        };
        let (status, error) = ask(std::slice::from_ref(&header), "/mcp");
        // HTTP strips surrounding whitespace (a parsed header has none).
        let value = header.as_bytes();
        let (scheme, rest) = match value.iter().position(|&b| b == b' ') {
            Some(i) => (&value[..i], &value[i..]),
            None => (value, &[][..]),
        };
        let token = &rest[rest.iter().take_while(|&&b| b == b' ').count()..];
        let expected = if !scheme.eq_ignore_ascii_case(b"bearer") {
            (StatusCode::UNAUTHORIZED, None)
        } else if !is_b64token(token) {
            (StatusCode::BAD_REQUEST, Some("invalid_request".to_owned()))
        } else {
            (StatusCode::UNAUTHORIZED, Some("invalid_token".to_owned()))
        };
        prop_assert_eq!((status, error), expected, "{:?}", String::from_utf8_lossy(value));
    }

    /// A good token is admitted whatever the scheme's case and the spaces before it, and
    /// only when no `access_token` rides in the query as well.
    #[test]
    fn valid_token_is_admitted_once(
        scheme in "[bB][eE][aA][rR][eE][rR]",
        spaces in 1usize..4,
        query in prop::collection::vec(prop_oneof![
            Just("access_token=x"), Just("access%5Ftoken=x"), Just("access_token"), Just("a=1"),
            Just("access_token%3Dx"), Just("access+token=x"), Just("ACCESS_TOKEN=x"), Just("&"), Just("%zz"),
        ], 0..3),
        repeat in prop::bool::weighted(0.1),
    ) {
        let value = HeaderValue::from_str(&format!("{scheme}{}{}", " ".repeat(spaces), valid_token())).unwrap();
        let query = query.join("&");
        let uri = if query.is_empty() { "/mcp".to_owned() } else { format!("/mcp?{query}") };
        let values = if repeat { vec![value.clone(), value] } else { vec![value] };
        let in_query = url::form_urlencoded::parse(query.as_bytes()).any(|(k, _)| k == "access_token");
        let (status, error) = ask(&values, &uri);
        if repeat || in_query {
            prop_assert_eq!((status, error.as_deref()), (StatusCode::BAD_REQUEST, Some("invalid_request")));
        } else {
            prop_assert_eq!(status, StatusCode::OK);
        }
    }

    /// Any metadata URL, scopes and description: the challenge is a valid header value (never
    /// the fallback), its parameters read back in order with disallowed characters as `?`.
    #[test]
    fn challenge_is_always_a_valid_header(
        metadata in "\\PC{0,24}|[\\x00-\\x7f]{0,24}",
        scopes in prop::collection::vec("[!-~ \"\\\\é]{0,6}", 0..3),
        error in prop::option::of((0u8..3, "\\PC{0,24}|[\\x00-\\x7f]{0,24}")),
    ) {
        let scopes = Scopes::new(&scopes);
        let mut challenge = Challenge::new(&metadata).scope(&scopes);
        let code = error.as_ref().map(|(c, d)| {
            let code = [BearerErrorCode::InvalidRequest, BearerErrorCode::InvalidToken, BearerErrorCode::InsufficientScope][usize::from(*c)];
            (code, d.as_str())
        });
        if let Some((code, description)) = code {
            challenge = challenge.error(code, description);
        }
        let text = challenge.to_string();
        let value = challenge.to_header_value();
        prop_assert_eq!(value.to_str().unwrap(), text.as_str());
        let clean = |s: &str| -> String {
            s.chars().map(|c| if matches!(c, '\x20'..='\x21' | '\x23'..='\x5b' | '\x5d'..='\x7e') { c } else { '?' }).collect()
        };
        let mut expected = vec![("resource_metadata".to_owned(), clean(&metadata))];
        if !scopes.is_empty() {
            expected.push(("scope".to_owned(), clean(&scopes.to_string())));
        }
        if let Some((code, description)) = code {
            expected.push(("error".to_owned(), code.as_str().to_owned()));
            if !description.is_empty() {
                expected.push(("error_description".to_owned(), clean(description)));
            }
        }
        prop_assert_eq!(parse_challenge(&text), Some(expected), "{}", text);
    }
}
