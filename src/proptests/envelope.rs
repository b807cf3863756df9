//! `jsonrpc::parse`, the envelope the policy layer judges.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use proptest::prelude::*;
use serde_json::Value;
use tower::ServiceExt;

use super::json::{self, J, Style};
use super::{block_on, config};
use crate::jsonrpc;
use crate::policy::ToolPolicy;
use crate::{AuthContext, ProtectedResource};

const MESSAGE_KEYS: &[&str] = &[
    "jsonrpc", "id", "method", "params", "result", "error", "Method", "METHOD", "method ", "name",
    "x",
];
const PARAM_KEYS: &[&str] = &[
    "name",
    "uri",
    "arguments",
    "_meta",
    "ref",
    "capabilities",
    "requestState",
    "inputResponses",
    "Name",
    "name\u{0}",
];
const METHODS: &[&str] = &[
    "tools/call",
    "Tools/call",
    "TOOLS/CALL",
    "tools/call ",
    "tools/list",
    "ping",
    "notifications/initialized",
    "prompts/get",
    "resources/read",
    "completion/complete",
    "tools\u{2215}call",
];
const NAMES: &[&str] = &[
    "secret",
    "SECRET",
    "Secret",
    "secret ",
    "secret\u{0}",
    "\u{0455}ecret",
    "public",
    "other",
    "",
];

fn any_json() -> impl Strategy<Value = J> {
    json::value(&["a", "b", "name", "method", "params", "tools/call"])
}

fn string_from(pool: &'static [&'static str]) -> impl Strategy<Value = J> {
    prop::sample::select(pool).prop_map(J::s)
}

fn params() -> BoxedStrategy<J> {
    let member = prop_oneof![
        4 => (Just("name"), prop_oneof![6 => string_from(NAMES), 1 => any_json()]),
        1 => (Just("uri"), prop_oneof![
            Just(J::s("file:///public/a")),
            Just(J::s("file:///public/../private/k")),
            any_json(),
        ]),
        2 => (Just("arguments"), any_json()),
        1 => (Just("_meta"), prop_oneof![
            Just(J::obj(&[("io.modelcontextprotocol/protocolVersion", J::s("2026-07-28"))])),
            any_json(),
        ]),
        1 => (Just("ref"), prop_oneof![
            string_from(NAMES).prop_map(|n| J::Obj(vec![("name".into(), n)])),
            any_json(),
        ]),
        1 => (prop::sample::select(PARAM_KEYS), any_json()),
    ]
    .prop_map(|(k, v)| (k.to_owned(), v));
    prop_oneof![
        8 => prop::collection::vec(member, 0..5).prop_map(J::Obj),
        1 => any_json(),
        1 => string_from(NAMES).prop_map(|n| J::Arr(vec![n])),
    ]
    .boxed()
}

/// One message: mostly plausible, with duplicate keys, odd types and noise mixed in.
fn message() -> BoxedStrategy<J> {
    let id = prop_oneof![
        (0i64..100).prop_map(|n| J::Num(n.to_string())),
        json::number().prop_map(J::Num),
        json::text().prop_map(J::Str),
        Just(J::Null),
        any_json(),
    ];
    let jsonrpc = prop_oneof![
        9 => Just(J::s("2.0")),
        1 => prop_oneof![Just(J::s("1.0")), Just(J::Num("2.0".into())), Just(J::Null)],
    ];
    let method = prop_oneof![
        8 => string_from(METHODS),
        1 => Just(J::Null),
        1 => any_json(),
    ];
    let extra = prop_oneof![
        3 => (Just("method"), string_from(METHODS)),
        2 => (Just("params"), params()),
        1 => (Just("id"), any_json()),
        1 => (Just("result"), any_json()),
        1 => (Just("error"), any_json()),
        2 => (prop::sample::select(MESSAGE_KEYS), any_json()),
    ]
    .prop_map(|(k, v)| (k.to_owned(), v));
    (
        jsonrpc,
        id,
        method,
        params(),
        prop::collection::vec(extra, 0..3),
        any::<u64>(),
        prop::collection::vec(any::<bool>(), 4),
    )
        .prop_map(|(jsonrpc, id, method, params, extra, seed, keep)| {
            let mut members = Vec::new();
            for (keep, member) in keep.into_iter().zip([
                ("jsonrpc", jsonrpc),
                ("id", id),
                ("method", method),
                ("params", params),
            ]) {
                // The envelope keys are mostly present.
                if keep || member.0 != "params" {
                    members.push((member.0.to_owned(), member.1));
                }
            }
            members.extend(extra);
            // Any order.
            let len = members.len();
            for i in (1..len).rev() {
                let j = (seed >> (i % 16)) as usize % (i + 1);
                members.swap(i, j);
            }
            J::Obj(members)
        })
        .boxed()
}

/// A body: one message, a batch, or a batch with odd elements.
fn body() -> impl Strategy<Value = J> {
    prop_oneof![
        6 => message(),
        3 => prop::collection::vec(message(), 1..4).prop_map(J::Arr),
        1 => prop::collection::vec(prop_oneof![message(), any_json()], 0..3).prop_map(J::Arr),
    ]
}

fn messages(top: &J) -> Vec<&J> {
    match top {
        J::Arr(items) => items.iter().collect(),
        other => vec![other],
    }
}

fn method_of(m: &J, first: bool) -> Option<&str> {
    m.get("method", first)?.as_str()
}

fn param_of<'a>(m: &'a J, key: &str, first: bool) -> Option<&'a str> {
    m.get("params", first)?.get(key, first)?.as_str()
}

fn value_param<'a>(m: &'a Value, key: &str) -> Option<&'a str> {
    m.get("params")?.get(key)?.as_str()
}

proptest! {
    #![proptest_config(config(256))]

    /// Any bytes: an answer, never a panic.
    #[test]
    fn never_panics_on_bytes(body in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = jsonrpc::parse(&body);
    }

    /// A valid body with bytes replaced, inserted or removed: never a panic, and whatever
    /// is accepted reads as serde_json reads it.
    #[test]
    fn never_panics_on_mutated_bodies(
        top in body(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..4),
    ) {
        let mut bytes = json::render(&top, &mut Style::plain()).into_bytes();
        for (at, byte, op) in edits {
            let i = at.index(bytes.len() + 1);
            match op {
                0 if i < bytes.len() => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ if i < bytes.len() => { bytes.remove(i); }
                _ => {}
            }
        }
        // serde_json's `Value` may refuse what the envelope skips (a number out of range
        // in the arguments): the server then refuses it too.
        if let (Ok(request), Ok(value)) = (jsonrpc::parse(&bytes), serde_json::from_slice::<Value>(&bytes)) {
            let values = match &value { Value::Array(items) => items.iter().collect(), v => vec![v] };
            prop_assert_eq!(values.len(), request.messages.len());
            for (m, v) in request.messages.iter().zip(values) {
                prop_assert_eq!(m.method.as_deref(), v.get("method").and_then(Value::as_str));
                prop_assert_eq!(m.name.as_deref(), value_param(v, "name"));
            }
        }
    }

    /// Hostile but structured bodies (duplicate keys, escaped keys and names, case
    /// variants, batches, odd types): what the parser accepts, every reading agrees on.
    /// A parser keeping the first duplicate, one keeping the last, and serde_json all see
    /// the method, tool name and URI the policy sees; or the body is refused.
    #[test]
    fn accepted_bodies_read_the_same_to_every_parser(
        top in body(),
        style in prop::collection::vec(any::<u8>(), 1..64),
    ) {
        let text = json::render(&top, &mut Style::new(&style));
        let Ok(request) = jsonrpc::parse(text.as_bytes()) else {
            return Ok(());
        };
        prop_assert_eq!(request.batch, matches!(top, J::Arr(_)));
        let ours = messages(&top);
        prop_assert_eq!(ours.len(), request.messages.len());
        let value: Option<Value> = serde_json::from_str(&text).ok();
        let values: Vec<Option<&Value>> = match &value {
            Some(Value::Array(items)) => items.iter().map(Some).collect(),
            Some(v) => vec![Some(v)],
            None => vec![None; ours.len()],
        };
        for ((m, j), v) in request.messages.iter().zip(ours).zip(values) {
            for first in [true, false] {
                prop_assert_eq!(m.method.as_deref(), method_of(j, first), "{}", text);
                prop_assert_eq!(m.name.as_deref(), param_of(j, "name", first), "{}", text);
                prop_assert_eq!(m.uri.as_deref(), param_of(j, "uri", first), "{}", text);
            }
            if let Some(v) = v {
                prop_assert_eq!(m.method.as_deref(), v.get("method").and_then(Value::as_str));
                prop_assert_eq!(m.name.as_deref(), value_param(v, "name"));
            }
            // Duplicated envelope keys are never accepted.
            prop_assert!(!j.duplicates_among(&["jsonrpc", "id", "method", "params", "result", "error"]), "{}", text);
            if let Some(params) = j.get("params", true) {
                prop_assert!(!params.duplicates_among(&["name", "uri", "_meta", "ref"]), "{}", text);
            }
        }
    }

    /// Plain, well-formed messages with any names and any escapes are accepted and read
    /// exactly (the parser is strict, not merely suspicious).
    #[test]
    fn well_formed_messages_are_read_exactly(
        id in prop_oneof![(-1000i64..1000).prop_map(|n| J::Num(n.to_string())), json::text().prop_map(J::Str)],
        method in json::text(),
        name in json::text(),
        arguments in json::value(&["a", "b", "name"]),
        with_params in any::<bool>(),
        style in prop::collection::vec(any::<u8>(), 1..64),
    ) {
        let mut members = vec![("jsonrpc", J::s("2.0")), ("id", id.clone()), ("method", J::Str(method.clone()))];
        if with_params {
            members.push(("params", J::obj(&[("name", J::Str(name.clone())), ("arguments", arguments)])));
        }
        let text = json::render(&J::obj(&members), &mut Style::new(&style));
        let request = jsonrpc::parse(text.as_bytes());
        prop_assert!(request.is_ok(), "{:?} refused: {:?}", text, request);
        let request = request.unwrap();
        let m = &request.messages[0];
        prop_assert!(!request.batch);
        prop_assert_eq!(m.method.as_deref(), Some(method.as_str()));
        prop_assert_eq!(m.name.as_deref(), with_params.then_some(name.as_str()));
        let expected_id = match id { J::Num(n) => Value::from(n.parse::<i64>().unwrap()), J::Str(s) => Value::from(s), _ => unreachable!() };
        prop_assert_eq!(m.id.as_ref(), Some(&expected_id));
    }

    /// Ids of any size and form: integers are kept, integral floats below 2^53 become
    /// integers, everything else is refused; never a panic.
    #[test]
    fn ids_are_integers_or_refused(id in json::number()) {
        let text = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#);
        let parsed = jsonrpc::parse(text.as_bytes());
        let expected = match serde_json::from_str::<Value>(&id) {
            Ok(Value::Number(n)) if n.is_i64() || n.is_u64() => Some(Value::Number(n)),
            Ok(Value::Number(n)) => n
                .as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0)
                .map(|f| Value::from(f as i64)),
            _ => None,
        };
        match (parsed, expected) {
            (Ok(r), Some(e)) => prop_assert_eq!(r.messages[0].id.as_ref(), Some(&e)),
            (Err(_), None) => {}
            (r, e) => prop_assert!(false, "id {id}: {r:?}, expected {e:?}"),
        }
    }

    /// Deep nesting anywhere: an answer (serde_json's recursion limit), never a stack
    /// overflow.
    #[test]
    fn deep_nesting_never_overflows(depth in 1usize..20_000, place in 0u8..5, open in prop::sample::select(vec!["[", "{\"a\":"])) {
        let close = if open == "[" { "]" } else { "}" };
        let deep = format!("{}1{}", open.repeat(depth), close.repeat(depth));
        let body = match place {
            0 => deep,
            1 => format!(r#"{{"jsonrpc":"2.0","id":{deep},"method":"ping"}}"#),
            2 => format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"a","arguments":{deep}}}}}"#),
            3 => format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"_meta":{deep}}}}}"#),
            _ => format!(r#"[{{"jsonrpc":"2.0","id":1,"result":{deep}}}]"#),
        };
        let _ = jsonrpc::parse(body.as_bytes());
    }
}

/// The parser's contract: duplicate keys are refused wherever it reads.
#[test]
fn duplicate_input_responses_are_refused() {
    let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"gh","inputResponses":{"connect_github":{"action":"decline"},"connect_github":{"action":"accept"}}}}"#;
    assert!(jsonrpc::parse(body).is_err(), "{:?}", jsonrpc::parse(body));
}

type PolicyService = tower::util::BoxCloneService<
    Request<Full<Bytes>>,
    Response<crate::policy::PolicyBody>,
    Infallible,
>;

fn tool_policy() -> ToolPolicy {
    ToolPolicy::builder()
        .default_scopes(["mcp:tools"])
        .deny_tool("secret")
        .tool("public", ["a"])
        .build()
        .unwrap()
}

fn policy_service(policy: ToolPolicy) -> (PolicyService, Arc<Mutex<Vec<Bytes>>>) {
    let resource = ProtectedResource::builder("https://mcp.example.com/mcp")
        .authorization_server("https://auth.example.com")
        .build()
        .unwrap();
    let forwarded = Arc::new(Mutex::new(Vec::new()));
    let seen = forwarded.clone();
    let inner = tower::service_fn(move |request: Request<Full<Bytes>>| {
        let seen = seen.clone();
        async move {
            let body = request.into_body().collect().await.unwrap().to_bytes();
            seen.lock().unwrap().push(body);
            let mut response = Response::new(Full::new(Bytes::from_static(b"{}")));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            Ok::<_, Infallible>(response)
        }
    });
    let service = tower_layer::Layer::layer(&policy.layer(&resource), inner);
    (tower::util::BoxCloneService::new(service), forwarded)
}

/// POSTs `body` through the policy layer for a caller with `scope`: the status, and
/// whether the server got the request.
pub(super) fn post(policy: ToolPolicy, scope: &str, body: &str) -> (StatusCode, bool) {
    let (service, forwarded) = policy_service(policy);
    let claims = serde_json::json!({"sub": "u", "scope": scope});
    let mut request = Request::post("/mcp")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    request
        .extensions_mut()
        .insert(AuthContext::from_claims(claims.as_object().cloned().unwrap()).unwrap());
    let response = block_on(service.oneshot(request)).unwrap();
    let passed = !forwarded.lock().unwrap().is_empty();
    (response.status(), passed)
}

fn is_denied_call(method: Option<&str>, name: Option<&str>) -> bool {
    method.is_some_and(|m| m.eq_ignore_ascii_case("tools/call"))
        && name.is_some_and(|n| n.eq_ignore_ascii_case("secret"))
}

proptest! {
    #![proptest_config(config(256))]

    /// End to end through the policy layer: a `tools/call` of the denied tool never reaches
    /// the server, however it is hidden (batch, duplicate keys, escapes, case, `id: null`),
    /// whichever way the server reads duplicates.
    #[test]
    fn denied_tool_call_never_reaches_the_server(
        top in body(),
        style in prop::collection::vec(any::<u8>(), 1..64),
    ) {
        let text = json::render(&top, &mut Style::new(&style));
        let (status, passed) = post(tool_policy(), "a mcp:tools", &text);
        prop_assert_eq!(passed, status == StatusCode::OK);
        if passed {
            for m in messages(&top) {
                for first in [true, false] {
                    prop_assert!(!is_denied_call(method_of(m, first), param_of(m, "name", first)), "forwarded: {}", text);
                }
            }
            if let Ok(value) = serde_json::from_str::<Value>(&text) {
                let values = match &value { Value::Array(items) => items.iter().collect(), v => vec![v] };
                for v in values {
                    prop_assert!(!is_denied_call(v.get("method").and_then(Value::as_str), value_param(v, "name")), "forwarded: {}", text);
                }
            }
        }
    }
}
