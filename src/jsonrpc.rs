//! The JSON-RPC envelope of MCP requests, parsed once, without parsing what the policy does
//! not need (tool arguments are skipped, not built).

use std::borrow::Cow;
use std::collections::HashMap;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;

/// What the client sent in one POST: one JSON-RPC message, or a batch (legal only in protocol
/// revision 2025-03-26). Inserted into the request extensions by the tool policy layer, so later
/// layers and handlers need not parse the body again.
#[derive(Debug, Clone, PartialEq)]
pub struct McpRequest {
    /// The messages, in body order.
    pub messages: Vec<McpMessage>,
    /// Whether the body was a JSON array.
    pub batch: bool,
}

/// One JSON-RPC message, reduced to what authorization needs.
#[derive(Debug, Clone, PartialEq)]
pub struct McpMessage {
    /// `id`, for requests and responses.
    pub id: Option<Value>,
    /// `method`, for requests and notifications.
    pub method: Option<String>,
    /// `params.name` (the tool of `tools/call`, the prompt of `prompts/get`).
    pub name: Option<String>,
    /// `params.uri` (the resource of `resources/read`).
    pub uri: Option<String>,
    /// `params._meta["io.modelcontextprotocol/protocolVersion"]` (revision 2026-07-28).
    pub protocol_version: Option<String>,
    /// `params.ref.name` and `params.ref.uri` (`completion/complete`).
    pub reference: Option<(Option<String>, Option<String>)>,
    /// Whether the message declares the URL mode of elicitation: `params.capabilities` of
    /// `initialize` (2025-11-25), or
    /// `params._meta["io.modelcontextprotocol/clientCapabilities"]` (2026-07-28).
    pub url_elicitation: bool,
    /// `params.requestState`: the opaque state a 2026-07-28 client echoes when it retries a
    /// request after an `input_required` result.
    pub request_state: Option<String>,
    /// `params.inputResponses` (revision 2026-07-28): each answer's key and its `action`
    /// (`accept`, `decline`, `cancel`), for answers that carry one (elicitation results).
    pub input_actions: Vec<(String, String)>,
}

impl McpMessage {
    /// The `action` of the answer to the input request `key`, if the message carries one.
    pub fn input_action(&self, key: &str) -> Option<&str> {
        self.input_actions
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, action)| action.as_str())
    }

    /// A request: a method and an id.
    pub fn is_request(&self) -> bool {
        self.method.is_some() && self.id.is_some()
    }

    /// A notification: a method, no id.
    pub fn is_notification(&self) -> bool {
        self.method.is_some() && self.id.is_none()
    }

    /// A response (result or error) the client sends back to the server.
    pub fn is_response(&self) -> bool {
        self.method.is_none()
    }

    /// The operation's target: the tool or prompt name, or the resource URI.
    pub fn target(&self) -> Option<&str> {
        self.name.as_deref().or(self.uri.as_deref())
    }
}

/// Why a body is not an acceptable JSON-RPC message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Not JSON (JSON-RPC -32700).
    #[error("the body is not valid JSON: {0}")]
    Parse(String),
    /// JSON, but not a JSON-RPC 2.0 message (JSON-RPC -32600).
    #[error("not a valid JSON-RPC 2.0 message: {0}")]
    Invalid(String),
}

impl EnvelopeError {
    /// The JSON-RPC error code.
    pub fn code(&self) -> i64 {
        match self {
            EnvelopeError::Parse(_) => crate::wire::code::PARSE_ERROR,
            EnvelopeError::Invalid(_) => crate::wire::code::INVALID_REQUEST,
        }
    }
}

/// Deserializes `T` from a JSON object only. Derived structs also accept arrays (positional
/// fields), which would let `"params": ["delete_all"]` read as a tool name here while the
/// server reads something else; objects only, so both sides see the same thing.
struct ObjectOnly<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectOnly<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Visit<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        deserializer
            .deserialize_map(Visit(std::marker::PhantomData))
            .map(ObjectOnly)
    }
}

/// A JSON object read as a map, refusing duplicate keys (a plain `HashMap` keeps the last, so
/// two parsers could read two different answers).
struct UniqueMap<K, V>(HashMap<K, V>);

impl<'de, K, V> Deserialize<'de> for UniqueMap<K, V>
where
    K: Deserialize<'de> + Eq + std::hash::Hash,
    V: Deserialize<'de>,
{
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<K, V>(std::marker::PhantomData<(K, V)>);
        impl<'de, K, V> serde::de::Visitor<'de> for Visit<K, V>
        where
            K: Deserialize<'de> + Eq + std::hash::Hash,
            V: Deserialize<'de>,
        {
            type Value = HashMap<K, V>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object without repeated keys")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = HashMap::with_capacity(map.size_hint().unwrap_or(0).min(64));
                while let Some((key, value)) = map.next_entry()? {
                    if out.insert(key, value).is_some() {
                        return Err(serde::de::Error::custom("duplicate key"));
                    }
                }
                Ok(out)
            }
        }
        deserializer
            .deserialize_map(Visit(std::marker::PhantomData))
            .map(UniqueMap)
    }
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    jsonrpc: Option<Cow<'a, str>>,
    #[serde(default)]
    id: Option<Value>,
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    params: Option<ObjectOnly<Params<'a>>>,
    #[serde(default)]
    result: Option<IgnoredAny>,
    #[serde(default)]
    error: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct Params<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    uri: Option<Cow<'a, str>>,
    #[serde(rename = "_meta", borrow, default)]
    meta: Option<ObjectOnly<Meta<'a>>>,
    #[serde(rename = "ref", borrow, default)]
    reference: Option<ObjectOnly<Reference<'a>>>,
    #[serde(default)]
    capabilities: Option<ObjectOnly<Capabilities>>,
    #[serde(rename = "requestState", borrow, default)]
    request_state: Option<Cow<'a, str>>,
    #[serde(rename = "inputResponses", borrow, default)]
    input_responses: Option<UniqueMap<Cow<'a, str>, ObjectOnly<InputResponse<'a>>>>,
}

#[derive(Deserialize)]
struct InputResponse<'a> {
    #[serde(borrow, default)]
    action: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Capabilities {
    #[serde(default)]
    elicitation: Option<ObjectOnly<Elicitation>>,
}

#[derive(Deserialize)]
struct Elicitation {
    #[serde(default)]
    url: Option<IgnoredAny>,
}

impl Capabilities {
    fn url_elicitation(&self) -> bool {
        self.elicitation
            .as_ref()
            .is_some_and(|ObjectOnly(e)| e.url.is_some())
    }
}

#[derive(Deserialize)]
struct Reference<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    uri: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Meta<'a> {
    #[serde(rename = "io.modelcontextprotocol/protocolVersion", borrow, default)]
    protocol_version: Option<Cow<'a, str>>,
    #[serde(rename = "io.modelcontextprotocol/clientCapabilities", default)]
    client_capabilities: Option<ObjectOnly<Capabilities>>,
}

/// Parses a request body. Duplicate keys (`{"name":"a","name":"b"}`), non-object `params`, a
/// `jsonrpc` other than `"2.0"`, an empty batch, or a message that is neither request,
/// notification nor response are refused: a body two parsers could read differently must not
/// reach the server.
pub fn parse(body: &[u8]) -> Result<McpRequest, EnvelopeError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        let envelopes: Vec<ObjectOnly<Envelope<'_>>> = from_slice(body)?;
        if envelopes.is_empty() {
            return Err(EnvelopeError::Invalid("empty batch".into()));
        }
        let messages = envelopes
            .into_iter()
            .map(|ObjectOnly(e)| message(e))
            .collect::<Result<_, _>>()?;
        Ok(McpRequest {
            messages,
            batch: true,
        })
    } else {
        let ObjectOnly(envelope) = from_slice::<ObjectOnly<Envelope<'_>>>(body)?;
        Ok(McpRequest {
            messages: vec![message(envelope)?],
            batch: false,
        })
    }
}

fn from_slice<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, EnvelopeError> {
    serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            EnvelopeError::Parse(e.to_string())
        }
        _ => EnvelopeError::Invalid(e.to_string()),
    })
}

fn message(envelope: Envelope<'_>) -> Result<McpMessage, EnvelopeError> {
    if envelope.jsonrpc.as_deref() != Some("2.0") {
        return Err(EnvelopeError::Invalid("`jsonrpc` must be \"2.0\"".into()));
    }
    let is_response = envelope.result.is_some() || envelope.error.is_some();
    match (&envelope.method, is_response) {
        (Some(_), true) => {
            return Err(EnvelopeError::Invalid(
                "a message cannot be both a request and a response".into(),
            ));
        }
        (None, false) => {
            return Err(EnvelopeError::Invalid(
                "no `method`, `result` or `error`".into(),
            ));
        }
        _ => {}
    }
    let id = envelope.id.map(normalize_id).transpose()?;
    let Some(ObjectOnly(p)) = envelope.params else {
        return Ok(McpMessage {
            id,
            method: envelope.method.map(Cow::into_owned),
            name: None,
            uri: None,
            protocol_version: None,
            reference: None,
            url_elicitation: false,
            request_state: None,
            input_actions: Vec::new(),
        });
    };
    let (protocol_version, meta_url_elicitation) = match p.meta {
        Some(ObjectOnly(m)) => (
            m.protocol_version.map(Cow::into_owned),
            m.client_capabilities
                .is_some_and(|ObjectOnly(c)| c.url_elicitation()),
        ),
        None => (None, false),
    };
    let url_elicitation = meta_url_elicitation
        || p.capabilities
            .is_some_and(|ObjectOnly(c)| c.url_elicitation());
    Ok(McpMessage {
        id,
        method: envelope.method.map(Cow::into_owned),
        name: p.name.map(Cow::into_owned),
        uri: p.uri.map(Cow::into_owned),
        protocol_version,
        reference: p
            .reference
            .map(|ObjectOnly(r)| (r.name.map(Cow::into_owned), r.uri.map(Cow::into_owned))),
        url_elicitation,
        request_state: p.request_state.map(Cow::into_owned),
        input_actions: p
            .input_responses
            .map(|UniqueMap(answers)| {
                answers
                    .into_iter()
                    .filter_map(|(key, ObjectOnly(answer))| {
                        Some((key.into_owned(), answer.action?.into_owned()))
                    })
                    .collect()
            })
            .unwrap_or_default(),
    })
}

/// Ids as the server will see them: rmcp reads `1.0` and `1e0` as the integer `1`, so we do too
/// (a response must be recognisable by its id); fractional and oversized numbers are refused.
fn normalize_id(id: Value) -> Result<Value, EnvelopeError> {
    const MAX_SAFE: f64 = 9_007_199_254_740_992.0; // 2^53
    match id {
        Value::Number(n) if n.is_i64() || n.is_u64() => Ok(Value::Number(n)),
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < MAX_SAFE => Ok(Value::from(f as i64)),
            _ => Err(EnvelopeError::Invalid(
                "`id` must be an integer or a string".into(),
            )),
        },
        id @ (Value::String(_) | Value::Null) => Ok(id),
        _ => Err(EnvelopeError::Invalid(
            "`id` must be a string or a number".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_call_without_building_arguments() {
        let r = parse(br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"del\u0065te","arguments":{"deep":[1,2,{"x":"y"}]}}}"#).unwrap();
        assert!(!r.batch);
        assert_eq!(r.messages[0].name.as_deref(), Some("delete"));
        assert_eq!(r.messages[0].id, Some(Value::from(7)));
        assert!(r.messages[0].is_request());
    }

    #[test]
    fn refuses_ambiguous_bodies() {
        for body in [
            &br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}}"#[..],
            br#"{"jsonrpc":"2.0","id":1,"method":"a","method":"b"}"#,
            br#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":["a"]}"#,
            br#"{"jsonrpc":"2.0","id":{"x":1},"method":"ping"}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"ping","result":{}}"#,
            br#"{"jsonrpc":"2.0","id":1}"#,
            br#"[]"#,
            br#"[["2.0", 1, "tools/call"]]"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","_meta":["2026-07-28"]}}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"ping"} trailing"#,
        ] {
            assert!(parse(body).is_err(), "{}", String::from_utf8_lossy(body));
        }
        assert_eq!(parse(b"{not json").unwrap_err().code(), -32700);
    }

    #[test]
    fn ids_are_normalized_like_the_server_does() {
        let r = parse(br#"{"jsonrpc":"2.0","id":1.0,"method":"tools/list"}"#).unwrap();
        assert_eq!(r.messages[0].id, Some(Value::from(1)));
        let r = parse(br#"{"jsonrpc":"2.0","id":-0.0,"method":"tools/list"}"#).unwrap();
        assert_eq!(r.messages[0].id, Some(Value::from(0)));
        assert!(parse(br#"{"jsonrpc":"2.0","id":1.5,"method":"tools/list"}"#).is_err());
        assert!(parse(br#"{"jsonrpc":"2.0","id":1e300,"method":"tools/list"}"#).is_err());
    }

    #[test]
    fn reads_url_elicitation_capability_and_request_state() {
        let init = parse(br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{"elicitation":{"form":{},"url":{}}},"clientInfo":{"name":"c","version":"1"}}}"#).unwrap();
        assert!(init.messages[0].url_elicitation);
        let form_only = parse(br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"capabilities":{"elicitation":{}}}}"#).unwrap();
        assert!(!form_only.messages[0].url_elicitation);
        let call = parse(br#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"gh","requestState":"abc","inputResponses":{"x":{"action":"accept"}},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"elicitation":{"url":{}}}}}}"#).unwrap();
        assert!(call.messages[0].url_elicitation);
        assert_eq!(call.messages[0].request_state.as_deref(), Some("abc"));
        assert_eq!(call.messages[0].input_action("x"), Some("accept"));
        assert_eq!(call.messages[0].input_action("y"), None);
    }

    #[test]
    fn parses_batches_and_meta() {
        let r = parse(br#"[{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}},{"jsonrpc":"2.0","method":"notifications/initialized"},{"jsonrpc":"2.0","id":"s1","result":{}}]"#).unwrap();
        assert!(r.batch);
        assert_eq!(
            r.messages[0].protocol_version.as_deref(),
            Some("2026-07-28")
        );
        assert!(r.messages[1].is_notification());
        assert!(r.messages[2].is_response());
    }

    fn one(body: &str) -> McpMessage {
        let mut r = parse(body.as_bytes()).unwrap();
        assert_eq!(r.messages.len(), 1);
        r.messages.remove(0)
    }

    /// A notification is let through without an answer, a response is matched to a pending
    /// server request: each kind must be recognised as exactly itself, or a tool call could be
    /// passed off as a notification or a response.
    #[test]
    fn message_kinds_are_exclusive() {
        let request =
            one(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}"#);
        let notification = one(r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"x"}}"#);
        let response = one(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#);
        let error = one(r#"{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"m"}}"#);
        let kinds = |m: &McpMessage| (m.is_request(), m.is_notification(), m.is_response());
        assert_eq!(kinds(&request), (true, false, false));
        assert_eq!(kinds(&notification), (false, true, false));
        assert_eq!(kinds(&response), (false, false, true));
        assert_eq!(kinds(&error), (false, false, true));
        // A response with a null id is still a response, not a request.
        let null_id = one(r#"{"jsonrpc":"2.0","id":null,"error":{"code":1,"message":"m"}}"#);
        assert_eq!(kinds(&null_id), (false, false, true));
    }

    /// The target the policy judges is the tool or prompt name, else the resource URI; a
    /// message naming neither has none (so it cannot borrow another rule's target).
    #[test]
    fn target_is_the_name_then_the_uri() {
        let call =
            one(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_all"}}"#);
        assert_eq!(call.target(), Some("delete_all"));
        let read = one(
            r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///etc/shadow"}}"#,
        );
        assert_eq!(read.target(), Some("file:///etc/shadow"));
        let both = one(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"uri":"file:///a","name":"delete_all"}}"#,
        );
        assert_eq!(both.target(), Some("delete_all"));
        let none = one(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}"#);
        assert_eq!(none.target(), None);
        let no_params = one(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#);
        assert_eq!(no_params.target(), None);
        let empty = one(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":""}}"#);
        assert_eq!(empty.target(), Some(""));
    }

    /// Integer ids are kept exactly, however large: one id rounded through `f64` would match
    /// another client's pending request (2^53 + 1 and 2^53 are one `f64`).
    #[test]
    fn large_integer_ids_are_kept_exactly() {
        for id in [
            Value::from(i64::MAX),
            Value::from(i64::MIN),
            Value::from(u64::MAX),
            Value::from(9_007_199_254_740_993_i64),
            Value::from(-9_007_199_254_740_993_i64),
        ] {
            let m = one(&format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#));
            assert_eq!(m.id, Some(id));
        }
        let m = one(r#"{"jsonrpc":"2.0","id":-3,"method":"ping"}"#);
        assert_eq!(m.id, Some(Value::from(-3)));
        let m = one(r#"{"jsonrpc":"2.0","id":"7","method":"ping"}"#);
        assert_eq!(m.id, Some(Value::from("7")));
    }

    /// Non-integer spellings of ids are refused from 2^53 on: `9007199254740993.0` reads as the
    /// `f64` 2^53, so it would be taken for the id 9007199254740992.
    #[test]
    fn float_ids_from_two_to_the_53_are_refused() {
        for id in [
            "9007199254740992.0",
            "9007199254740993.0",
            "-9007199254740992.0",
            "9.007199254740992e15",
        ] {
            let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#);
            assert_eq!(parse(body.as_bytes()).unwrap_err().code(), -32600, "{id}");
        }
        let m = one(r#"{"jsonrpc":"2.0","id":1e3,"method":"ping"}"#);
        assert_eq!(m.id, Some(Value::from(1000)));
        let m = one(r#"{"jsonrpc":"2.0","id":-2e0,"method":"ping"}"#);
        assert_eq!(m.id, Some(Value::from(-2)));
    }

    /// Structural errors are `invalid_request`, syntax errors `parse_error`, and a non-object
    /// `params` says why.
    #[test]
    fn error_codes_and_messages() {
        assert_eq!(
            parse(br#"{"jsonrpc":"2.0","id":1}"#).unwrap_err().code(),
            -32600
        );
        assert_eq!(parse(br#"{"jsonrpc":"2.0""#).unwrap_err().code(), -32700);
        assert_eq!(parse(b"  [").unwrap_err().code(), -32700);
        let e =
            parse(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":["x"]}"#).unwrap_err();
        assert_eq!(e.code(), -32600);
        assert!(e.to_string().contains("expected a JSON object"), "{e}");
        let e = parse(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"gh","inputResponses":[{"action":"accept"}]}}"#)
            .unwrap_err();
        assert_eq!(e.code(), -32600);
        assert!(
            e.to_string()
                .contains("expected a JSON object without repeated keys"),
            "{e}"
        );
    }
}
