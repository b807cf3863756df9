//! Properties of the documents clients send: registration requests (RFC 7591) and client ID
//! metadata documents, against reference readings written here.

use super::json::{self, J, Style};
use super::{block_on, config};
use crate::resource::canonical_audience;
use crate::server::AuthServer;
use axum::body::Body;
use http::{Request, StatusCode, header};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use super::server::*;

/// A registration document: mostly the right members with odd values, sometimes
/// duplicated, sometimes not an object at all.
fn registration() -> impl Strategy<Value = J> {
    let strings = |pool: Vec<&'static str>| {
        prop_oneof![
            4 => prop::collection::vec(prop::sample::select(pool).prop_map(J::s), 0..3).prop_map(J::Arr),
            1 => Just(J::Null),
            1 => json::value(&["a"]),
        ]
    };
    let member = prop_oneof![
        4 => (Just("redirect_uris"), prop_oneof![
            6 => prop::collection::vec(redirect_uri().prop_map(J::Str), 0..3).prop_map(J::Arr),
            1 => Just(J::Arr(vec![J::s("https://app.example/cb"); 11])),
            1 => json::value(&["a"]),
        ]),
        1 => (Just("grant_types"), strings(vec!["authorization_code", "refresh_token", "client_credentials", "implicit", "AUTHORIZATION_CODE"])),
        1 => (Just("response_types"), strings(vec!["code", "token", "Code"])),
        1 => (Just("token_endpoint_auth_method"), prop_oneof![prop::sample::select(vec!["none", "client_secret_basic", "client_secret_post", "private_key_jwt", "None"]).prop_map(J::s), json::value(&["a"])]),
        1 => (Just("scope"), prop_oneof![prop::sample::select(vec!["mcp:tools", "notes:read mcp:tools", "", "  mcp:tools  ", "admin", "mcp:tools\tx"]).prop_map(J::s), json::value(&["a"])]),
        1 => (Just("application_type"), prop_oneof![prop::sample::select(vec!["native", "web", "Web", "service"]).prop_map(J::s), json::value(&["a"])]),
        1 => (Just("client_name"), prop_oneof![json::text().prop_map(J::Str), "a{195,205}".prop_map(J::Str), Just("é".repeat(101)).prop_map(J::Str), json::value(&["a"])]),
        1 => (prop::sample::select(vec!["client_id", "client_secret", "jwks", "x"]), json::value(&["a"])),
    ]
    .prop_map(|(k, v)| (k.to_owned(), v));
    prop_oneof![
        12 => (Just(J::Arr(vec![J::s("https://app.example/cb")])), prop::collection::vec(member, 0..6)).prop_map(|(uris, mut members)| {
            if !members.iter().any(|(k, _)| k == "redirect_uris") {
                members.push(("redirect_uris".into(), uris));
            }
            J::Obj(members)
        }),
        1 => json::value(&["redirect_uris", "client_name"]),
    ]
}

/// The members of `doc` as a JSON array, in the order of the handler's struct fields.
fn positional(doc: &J) -> J {
    J::Arr(
        [
            "client_name",
            "grant_types",
            "response_types",
            "token_endpoint_auth_method",
            "scope",
            "redirect_uris",
            "application_type",
        ]
        .iter()
        .map(|k| doc.get(k, true).cloned().unwrap_or(J::Null))
        .collect(),
    )
}

/// Whether RFC 7591 (as the handler documents it) accepts this document.
fn reference_registration(doc: &J) -> bool {
    const KNOWN: [&str; 7] = [
        "client_name",
        "grant_types",
        "response_types",
        "token_endpoint_auth_method",
        "scope",
        "redirect_uris",
        "application_type",
    ];
    let J::Obj(_) = doc else {
        return false;
    };
    if doc.duplicates_among(&KNOWN) {
        return false;
    }
    let field = |k: &str| doc.get(k, true).filter(|v| **v != J::Null);
    let strings = |k: &str| -> Result<Option<Vec<&str>>, ()> {
        match field(k) {
            None => Ok(None),
            Some(J::Arr(items)) => items
                .iter()
                .map(|i| i.as_str().ok_or(()))
                .collect::<Result<_, _>>()
                .map(Some),
            Some(_) => Err(()),
        }
    };
    let string = |k: &str| -> Result<Option<&str>, ()> {
        match field(k) {
            None => Ok(None),
            Some(J::Str(s)) => Ok(Some(s)),
            Some(_) => Err(()),
        }
    };
    let (Ok(grants), Ok(responses), Ok(uris), Ok(method), Ok(scope), Ok(app), Ok(name)) = (
        strings("grant_types"),
        strings("response_types"),
        strings("redirect_uris"),
        string("token_endpoint_auth_method"),
        string("scope"),
        string("application_type"),
        string("client_name"),
    ) else {
        return false;
    };
    let grants = grants.unwrap_or_else(|| vec!["authorization_code"]);
    let uris = uris.unwrap_or_default();
    grants
        .iter()
        .all(|g| ["authorization_code", "refresh_token"].contains(g))
        && grants.contains(&"authorization_code")
        && responses.is_none_or(|r| r.iter().all(|t| *t == "code"))
        && (1..=10).contains(&uris.len())
        && uris.iter().all(|u| accepted_redirect(u))
        && match app.unwrap_or("native") {
            "native" => true,
            // Web clients: https redirect URIs only (no loopback, no private-use scheme).
            "web" => uris
                .iter()
                .all(|u| url::Url::parse(u).is_ok_and(|u| u.scheme() == "https")),
            _ => false,
        }
        && ["none", "client_secret_basic", "client_secret_post"].contains(&method.unwrap_or("none"))
        && scope.is_none_or(|s| {
            s.split(' ')
                .filter(|s| !s.is_empty())
                .all(|s| ["mcp:tools", "notes:read"].contains(&s))
        })
        && name.is_none_or(|n| n.len() <= 200)
}

static REGISTRAR: LazyLock<AuthServer> = LazyLock::new(|| server(|b| b));

proptest! {
    #![proptest_config(config(128))]

    /// `/oauth/register` with hostile documents: 201 exactly when the documented rules
    /// accept the document, else 400; never a 5xx; a registered client is as requested.
    #[test]
    fn registration_accepts_exactly_the_documented_documents(
        doc in registration(),
        style in prop::collection::vec(any::<u8>(), 1..32),
    ) {
        check_registration(&doc, &style)?;
    }

    /// RFC 7591 §3.1: the metadata are the members of a JSON object; the same members as
    /// a JSON array are no registration.
    #[test]
    fn registration_refuses_positional_arrays(
        doc in registration(),
        style in prop::collection::vec(any::<u8>(), 1..32),
    ) {
        check_registration(&positional(&doc), &style)?;
    }
}

fn check_registration(doc: &J, style: &[u8]) -> Result<(), TestCaseError> {
    let text = json::render(doc, &mut Style::new(style));
    let request = Request::post("/oauth/register")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(text.clone()))
        .unwrap();
    let (status, _, body) = block_on(call(REGISTRAR.router(), request));
    let expected = reference_registration(doc);
    prop_assert!(
        status == StatusCode::CREATED || status == StatusCode::BAD_REQUEST,
        "{} for {}",
        status,
        text
    );
    prop_assert_eq!(
        status == StatusCode::CREATED,
        expected,
        "{}: {}",
        text,
        String::from_utf8_lossy(&body)
    );
    if status == StatusCode::CREATED {
        let registered: Value = serde_json::from_slice(&body).unwrap();
        let Some(J::Arr(asked)) = doc.get("redirect_uris", true) else {
            unreachable!()
        };
        let asked: Vec<&str> = asked.iter().filter_map(J::as_str).collect();
        prop_assert_eq!(&registered["redirect_uris"], &json!(asked));
    }
    Ok(())
}

#[test]
fn registration_refuses_an_array_document() {
    let body = r#"["App", null, null, null, null, ["https://app.example/cb"]]"#;
    let request = Request::post("/oauth/register")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap();
    let (status, _, _) = block_on(call(REGISTRAR.router(), request));
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// A local server handing out client ID metadata documents: path → body.
struct Documents {
    base: String,
    documents: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    next: Mutex<u64>,
}

static DOCUMENTS: LazyLock<Documents> = LazyLock::new(|| {
    let documents: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
    let served = documents.clone();
    let app = axum::Router::new().route(
        "/doc/{n}",
        axum::routing::get(move |axum::extract::Path(n): axum::extract::Path<String>| {
            let served = served.clone();
            async move {
                let body = served.lock().unwrap().get(&n).cloned().unwrap_or_default();
                ([(header::CONTENT_TYPE, "application/json")], body)
            }
        }),
    );
    let listener = super::RUNTIME
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    super::RUNTIME.spawn(async move { axum::serve(listener, app).await.unwrap() });
    Documents {
        base,
        documents,
        next: Mutex::new(0),
    }
});

static CIMD: LazyLock<AuthServer> =
    LazyLock::new(|| server(|b| b.allow_development_client_metadata()));

fn document() -> impl Strategy<Value = J> {
    let member = prop_oneof![
        3 => (Just("redirect_uris"), prop_oneof![
            6 => prop::collection::vec(redirect_uri().prop_map(J::Str), 0..3).prop_map(J::Arr),
            1 => json::value(&["a"]),
        ]),
        1 => (Just("client_name"), prop_oneof![json::text().prop_map(J::Str), json::value(&["a"])]),
        1 => (Just("token_endpoint_auth_method"), prop_oneof![prop::sample::select(vec!["none", "client_secret_basic", "None"]).prop_map(J::s), json::value(&["a"])]),
        1 => (Just("scope"), prop_oneof![prop::sample::select(vec!["mcp:tools", "", "admin"]).prop_map(J::s), json::value(&["a"])]),
        1 => (Just("client_id"), json::value(&["a"])),
        1 => (prop::sample::select(vec!["client_uri", "x", "logo_uri"]), json::value(&["a"])),
    ]
    .prop_map(|(k, v)| (k.to_owned(), v));
    (
        prop::collection::vec(member, 0..5),
        prop::sample::select(vec!["same", "same", "same", "slash", "case", "none"]),
        any::<bool>(),
    )
        .prop_map(|(mut members, id, name)| {
            if name {
                members.insert(0, ("client_name".into(), J::s("App")));
            }
            if !members.iter().any(|(k, _)| k == "redirect_uris") {
                members.push((
                    "redirect_uris".into(),
                    J::Arr(vec![J::s("https://app.example/cb")]),
                ));
            }
            // The client id is filled in once the URL is known (`ID` stands for it).
            let own = match id {
                "same" => Some(J::s("ID")),
                "slash" => Some(J::s("ID/")),
                "case" => Some(J::s("HTTP://ID")),
                _ => None,
            };
            if let Some(own) = own {
                members.insert(0, ("client_id".into(), own));
            }
            J::Obj(members)
        })
}

fn with_id(j: &J, id: &str) -> J {
    match j {
        J::Str(s) if s == "ID" => J::Str(id.to_owned()),
        J::Str(s) if s == "ID/" => J::Str(format!("{id}/")),
        J::Str(s) if s == "HTTP://ID" => J::Str(id.replace("http://", "HTTP://")),
        J::Obj(members) => J::Obj(
            members
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        if k == "client_id" {
                            with_id(v, id)
                        } else {
                            v.clone()
                        },
                    )
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Whether the documented rules accept this client ID metadata document for `id`.
fn reference_document(doc: &J, id: &str) -> bool {
    const KNOWN: [&str; 5] = [
        "client_id",
        "client_name",
        "redirect_uris",
        "token_endpoint_auth_method",
        "scope",
    ];
    if !matches!(doc, J::Obj(_)) || doc.duplicates_among(&KNOWN) {
        return false;
    }
    let optional_string = |k: &str| match doc.get(k, true) {
        None | Some(J::Null) => Ok(None),
        Some(J::Str(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(()),
    };
    let uris = match doc.get("redirect_uris", true) {
        Some(J::Arr(items)) => items.iter().map(J::as_str).collect::<Option<Vec<_>>>(),
        _ => None,
    };
    let (Ok(method), Ok(scope)) = (
        optional_string("token_endpoint_auth_method"),
        optional_string("scope"),
    ) else {
        return false;
    };
    doc.get("client_id", true).and_then(J::as_str) == Some(id)
        && doc.get("client_name", true).and_then(J::as_str).is_some()
        && uris.is_some_and(|u| !u.is_empty() && u.iter().all(|u| accepted_redirect(u)))
        && method.is_none_or(|m| m == "none")
        && scope.is_none_or(|s| {
            s.split(' ')
                .filter(|s| !s.is_empty())
                .all(|s| ["mcp:tools", "notes:read"].contains(&s))
        })
}

proptest! {
    #![proptest_config(config(64))]

    /// Client ID metadata documents served over (development-mode) HTTP: the client is
    /// known at `/oauth/authorize` exactly when the documented rules accept its document.
    #[test]
    fn metadata_documents_are_accepted_as_documented(
        doc in document(),
        style in prop::collection::vec(any::<u8>(), 1..32),
    ) {
        let docs = &*DOCUMENTS;
        let n = {
            let mut next = docs.next.lock().unwrap();
            *next += 1;
            *next
        };
        let id = format!("{}/doc/{n}", docs.base);
        let doc = with_id(&doc, &id);
        let text = json::render(&doc, &mut Style::new(&style));
        docs.documents.lock().unwrap().insert(n.to_string(), text.clone().into_bytes());
        let redirect = match doc.get("redirect_uris", true) {
            Some(J::Arr(items)) => items.first().and_then(J::as_str).unwrap_or("https://app.example/cb").to_owned(),
            _ => "https://app.example/cb".to_owned(),
        };
        let (status, _, body) = block_on(call(CIMD.router(), authorize_request(&id, &redirect)));
        let got = outcome(status, &body);
        prop_assert_eq!(got != Outcome::UnknownClient, reference_document(&doc, &id), "{} {:?}", text, got);
        if got != Outcome::UnknownClient {
            prop_assert_eq!(got, Outcome::Started);
        }
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// `canonical_audience` is idempotent, and never changes what is not an http(s) URL.
    #[test]
    fn canonical_audience_is_idempotent(
        aud in prop_oneof![
            "\\PC{0,24}",
            (prop::sample::select(vec!["https://", "HTTP://", "http://", "api://", "urn:", "https:"]), "[a-zA-Z0-9.:@%/?#\\[\\]_~é -]{0,24}").prop_map(|(s, r)| format!("{s}{r}")),
        ],
    ) {
        let once = canonical_audience(&aud).into_owned();
        let twice = canonical_audience(&once).into_owned();
        prop_assert_eq!(&twice, &once, "{:?}", aud);
        if !url::Url::parse(&aud).is_ok_and(|u| matches!(u.scheme(), "http" | "https")) {
            prop_assert_eq!(once, aud);
        }
    }
}
