//! SSE framing: `LineEnds`, `EventBoundary`, and the event splitter of the policy layer's list
//! filter (`SseFilterBody`, reached through `ToolPolicyLayer`).

use std::convert::Infallible;

use bytes::{Bytes, BytesMut};
use http::{Request, Response, header};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use proptest::prelude::*;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::{block_on, config};
use crate::policy::ToolPolicy;
use crate::wire::sse::{EventBoundary, LineEnds};
use crate::{AuthContext, ProtectedResource};

/// The WHATWG reading of line ends: `\r\n`, `\r` and `\n` each end a line.
fn normalize(stream: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(stream.len());
    let mut i = 0;
    while i < stream.len() {
        match stream[i] {
            b'\r' => {
                out.push(b'\n');
                if stream.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// `bytes` cut at `cuts` (positions into it, in any order, repeats giving empty chunks).
fn chunks(bytes: &[u8], cuts: &[prop::sample::Index], empty: bool) -> Vec<Vec<u8>> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
    at.sort_unstable();
    if !empty {
        at.dedup();
    }
    let mut out = Vec::new();
    let mut start = 0;
    for cut in at {
        if empty || (cut > start && cut < bytes.len()) {
            out.push(bytes[start..cut].to_vec());
            start = cut;
        }
    }
    out.push(bytes[start..].to_vec());
    out
}

/// Bytes rich in line ends.
fn stream_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            3 => Just(b'\r'),
            3 => Just(b'\n'),
            2 => Just(b'a'),
            1 => Just(b':'),
            1 => any::<u8>(),
        ],
        0..64,
    )
}

fn push_all(chunks: &[Vec<u8>]) -> Vec<u8> {
    let mut ends = LineEnds::default();
    let mut buf = BytesMut::new();
    for chunk in chunks {
        ends.push(&mut buf, chunk);
    }
    buf.to_vec()
}

/// Whether a normalized stream ends between events: at the start, or after a blank line.
fn between_events(normalized: &[u8]) -> bool {
    normalized.is_empty() || normalized == b"\n" || normalized.ends_with(b"\n\n")
}

proptest! {
    #![proptest_config(config(256))]

    /// `LineEnds` normalizes as the grammar reads, whatever the (non-empty) chunking.
    #[test]
    fn line_ends_normalize_whatever_the_chunking(
        stream in stream_bytes(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let expected = normalize(&stream);
        prop_assert_eq!(push_all(std::slice::from_ref(&stream)), expected.clone());
        prop_assert_eq!(push_all(&chunks(&stream, &cuts, false)), expected);
    }

    /// The same with empty chunks among them (a body may yield empty data frames).
    #[test]
    fn line_ends_normalize_with_empty_chunks(
        stream in stream_bytes(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        prop_assert_eq!(push_all(&chunks(&stream, &cuts, true)), normalize(&stream));
    }

    /// `EventBoundary` knows, after every chunk (empty ones included), whether the stream so
    /// far ends between two events.
    #[test]
    fn event_boundary_tracks_every_prefix(
        stream in stream_bytes(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let mut boundary = EventBoundary::default();
        let mut seen = Vec::new();
        prop_assert!(boundary.between_events());
        for chunk in chunks(&stream, &cuts, true) {
            boundary.feed(&chunk);
            seen.extend_from_slice(&chunk);
            prop_assert_eq!(boundary.between_events(), between_events(&normalize(&seen)), "{:?}", seen);
        }
    }
}

#[test]
fn line_ends_empty_chunk_between_cr_and_lf() {
    // `data: a\r\n` is one line; cut as `data: a\r` | `` | `\n` it becomes two.
    assert_eq!(
        push_all(&[b"data: a\r".to_vec(), Vec::new(), b"\n".to_vec()]),
        b"data: a\n"
    );
}

/// One generated SSE event: its lines (without line ends), and the JSON message its data
/// lines carry, if any.
#[derive(Debug, Clone)]
struct Event {
    lines: Vec<String>,
    message: Option<Value>,
    /// Whether the message is a tool list holding the tool the caller may not see.
    list: bool,
}

fn event() -> impl Strategy<Value = Event> {
    let extra = prop::collection::vec(
        prop_oneof![
            Just("id: 7".to_owned()),
            Just("event: message".to_owned()),
            Just(": keep-alive".to_owned()),
            Just("retry: 3000".to_owned()),
            "id: [a-z0-9/]{1,6}",
        ],
        0..3,
    );
    let message = prop_oneof![
        3 => (0u32..100).prop_map(|id| (json!({"jsonrpc": "2.0", "id": id, "result": {"tools": [{"name": "public"}, {"name": "secret"}]}}), true)),
        1 => (0u32..100).prop_map(|id| (json!({"jsonrpc": "2.0", "id": id, "result": {"content": [{"type": "text", "text": "a\nb"}]}}), false)),
        1 => Just((json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {"data": "tools"}}), false)),
    ];
    (
        prop::option::weighted(0.9, message),
        any::<bool>(),
        extra,
        any::<bool>(),
    )
        .prop_map(|(message, pretty, extra, data_first)| {
            let mut lines: Vec<String> = Vec::new();
            let (message, list) = match message {
                Some((m, list)) => (Some(m), list),
                None => (None, false),
            };
            if let Some(m) = &message {
                let text = if pretty {
                    serde_json::to_string_pretty(m).unwrap()
                } else {
                    m.to_string()
                };
                // Several data lines join with `\n`: a pretty JSON text survives it.
                lines.extend(text.lines().map(|l| format!("data: {l}")));
            }
            if data_first {
                lines.extend(extra);
            } else {
                lines.splice(0..0, extra);
            }
            if lines.is_empty() {
                lines.push(": keep-alive".to_owned());
            }
            Event {
                lines,
                message,
                list,
            }
        })
}

/// The stream: each line and each event's blank line ended by a generated line end; a
/// `\r` is never followed by a lone `\n` (the two would read as one `\r\n`).
fn render(events: &[Event], ends: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut choice = ends.iter().cycle();
    let mut last_cr = false;
    let mut end = |out: &mut Vec<u8>| {
        let mut e: &[u8] = match choice.next().copied().unwrap_or(0) % 3 {
            0 => b"\n",
            1 => b"\r\n",
            _ => b"\r",
        };
        if last_cr && e == b"\n" {
            e = b"\r\n";
        }
        last_cr = e == b"\r";
        out.extend_from_slice(e);
    };
    for event in events {
        for line in &event.lines {
            out.extend_from_slice(line.as_bytes());
            end(&mut out);
        }
        end(&mut out);
    }
    out
}

/// The events of a normalized output stream: (data joined, other lines).
fn parse_output(output: &[u8]) -> Vec<(String, Vec<String>)> {
    let text = std::str::from_utf8(output).unwrap();
    let mut events = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.is_empty()) {
        let mut data: Option<String> = None;
        let mut other = Vec::new();
        for line in block.split('\n') {
            match line.strip_prefix("data:") {
                Some(d) => {
                    let d = d.strip_prefix(' ').unwrap_or(d);
                    match &mut data {
                        Some(data) => {
                            data.push('\n');
                            data.push_str(d);
                        }
                        None => data = Some(d.to_owned()),
                    }
                }
                None => other.push(line.to_owned()),
            }
        }
        other.sort();
        events.push((data.unwrap_or_default(), other));
    }
    events
}

/// What the client receives: the body's bytes, up to the error that ends it, if any.
#[derive(Debug, PartialEq)]
pub(super) struct Received {
    bytes: Vec<u8>,
    error: Option<String>,
}

impl Received {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// The policy layer around a server answering a GET with `chunks` (one data frame each)
/// in a `content_type` response; what the client receives.
pub(super) fn through_policy(chunks: Vec<Vec<u8>>, content_type: &'static str) -> Received {
    let policy = ToolPolicy::builder()
        .default_scopes(["mcp:tools"])
        .tool("public", ["a"])
        .build()
        .unwrap();
    let resource = ProtectedResource::builder("https://mcp.example.com/mcp")
        .authorization_server("https://auth.example.com")
        .build()
        .unwrap();
    let inner = tower::service_fn(move |_: Request<Full<Bytes>>| {
        let frames: Vec<Result<Frame<Bytes>, Infallible>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from(c.clone()))))
            .collect();
        async move {
            let mut response = Response::new(StreamBody::new(futures_util::stream::iter(frames)));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static(content_type),
            );
            Ok::<_, Infallible>(response)
        }
    });
    let service = tower_layer::Layer::layer(&policy.layer(&resource), inner);
    let claims = json!({"sub": "u", "scope": "a"});
    let mut request = Request::get("/mcp").body(Full::new(Bytes::new())).unwrap();
    request
        .extensions_mut()
        .insert(AuthContext::from_claims(claims.as_object().cloned().unwrap()).unwrap());
    block_on(async move {
        let response = service.oneshot(request).await.unwrap();
        let mut body = response.into_body();
        let mut received = Received {
            bytes: Vec::new(),
            error: None,
        };
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        received.bytes.extend_from_slice(&data);
                    }
                }
                Err(e) => {
                    received.error = Some(e.to_string());
                    break;
                }
            }
        }
        received
    })
}

/// What the client must see of `events`: the same events, in order, with the hidden tool
/// filtered out of list results.
fn check_output(events: &[Event], output: &[u8]) -> Result<(), TestCaseError> {
    let got = parse_output(output);
    prop_assert_eq!(
        got.len(),
        events.len(),
        "{}",
        String::from_utf8_lossy(output)
    );
    for (event, (data, other)) in events.iter().zip(got) {
        let mut expected_other: Vec<String> = event
            .lines
            .iter()
            .filter(|l| !l.starts_with("data:"))
            .cloned()
            .collect();
        expected_other.sort();
        prop_assert_eq!(other, expected_other);
        match &event.message {
            Some(message) => {
                let mut expected = message.clone();
                if event.list {
                    expected["result"]["tools"] = json!([{"name": "public"}]);
                }
                let got: Value = serde_json::from_str(&data).unwrap();
                prop_assert_eq!(got, expected);
            }
            None => prop_assert_eq!(data, ""),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    /// N events with any mix of `\n`, `\r\n`, `\r` line ends, cut into any non-empty
    /// chunks: the client gets the same N events as from the stream in one piece, list
    /// results filtered.
    #[test]
    fn filter_splits_the_same_events_whatever_the_chunking(
        events in prop::collection::vec(event(), 1..5),
        ends in prop::collection::vec(any::<u8>(), 1..16),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let stream = render(&events, &ends);
        let whole = through_policy(vec![stream.clone()], "text/event-stream");
        prop_assert_eq!(&whole.error, &None);
        check_output(&events, &whole.bytes)?;
        let chunked = through_policy(chunks(&stream, &cuts, false), "text/event-stream");
        prop_assert_eq!(chunked, whole);
    }

    /// The same, with empty data frames and a byte order mark, cut anywhere.
    #[test]
    fn filter_splits_the_same_events_with_empty_chunks_and_a_bom(
        events in prop::collection::vec(event(), 1..5),
        ends in prop::collection::vec(any::<u8>(), 1..16),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
        bom in any::<bool>(),
    ) {
        let mut stream = render(&events, &ends);
        if bom {
            stream.splice(0..0, *b"\xEF\xBB\xBF");
        }
        let chunked = through_policy(chunks(&stream, &cuts, true), "text/event-stream");
        prop_assert_eq!(&chunked.error, &None, "{}", chunked.text());
        check_output(&events, &chunked.bytes)?;
    }

    /// A list result whose keys are written with JSON escapes is still a list result:
    /// the filter must read it as the client's JSON parser will.
    #[test]
    fn filter_reads_escaped_keys(
        style in prop::collection::vec(any::<u8>(), 1..32),
        sse in any::<bool>(),
    ) {
        use super::json::{J, Style, render};
        let list = J::obj(&[
            ("jsonrpc", J::s("2.0")),
            ("id", J::Num("1".into())),
            ("result", J::obj(&[("tools", J::Arr(vec![J::obj(&[("name", J::s("public"))]), J::obj(&[("name", J::s("secret"))])]))])),
        ]);
        let text = render(&list, &mut Style::new(&style)).replace(['\n', '\r'], " ");
        let output = if sse {
            through_policy(vec![format!("data: {text}\n\n").into_bytes()], "text/event-stream")
        } else {
            through_policy(vec![text.into_bytes()], "application/json")
        };
        // Refusing (a 502, an error ending the stream) would be safe too.
        if output.error.is_none() && output.bytes.starts_with(b"{") || output.bytes.starts_with(b"data: ") {
            let text = output.text();
            let data = text.strip_prefix("data: ").unwrap_or(&text);
            let seen: Value = serde_json::from_str(data.trim_end()).unwrap();
            prop_assert!(seen["result"]["tools"] == json!([{"name": "public"}]) || seen.get("error").is_some(), "{}", text);
        }
    }
}

const LIST: &[u8] =
    br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"public"},{"name":"secret"}]}}"#;

#[test]
fn empty_frame_between_cr_and_lf_does_not_split_an_event() {
    // One event, two data lines, CRLF line ends; the server's body yields an empty data
    // frame between the `\r` and the `\n` of the first line end. The client must get one
    // event whose data is `a\nb`; it gets `data: a` and `data: b` as two events.
    let output = through_policy(
        vec![
            b"data: a\r".to_vec(),
            Vec::new(),
            b"\ndata: b\r\n\r\n".to_vec(),
        ],
        "text/event-stream",
    );
    assert_eq!(output.text(), "data: a\ndata: b\n\n");
    // The same cut inside a list result ends the stream with an error (before fbbe0e3
    // the halves passed unfiltered).
    let output = through_policy(
        vec![
            br#"data: {"jsonrpc":"2.0","id":1,"result":"#.to_vec(),
            b"\r".to_vec(),
            Vec::new(),
            b"\ndata: {\"tools\":[{\"name\":\"public\"},{\"name\":\"secret\"}]}}\r\n\r\n".to_vec(),
        ],
        "text/event-stream",
    );
    assert_eq!(output.error, None, "{}", output.text());
}

#[test]
fn bom_split_across_frames_cannot_smuggle_a_tool_list() {
    let mut rest = b"\xBF".to_vec();
    rest.extend_from_slice(b"data: ");
    rest.extend_from_slice(LIST);
    rest.extend_from_slice(b"\n\n");
    let output = through_policy(vec![b"\xEF\xBB".to_vec(), rest], "text/event-stream");
    assert!(!output.text().contains("secret"), "{}", output.text());
}

#[test]
fn escaped_tools_key_cannot_smuggle_a_tool_list() {
    let escaped = br#"{"jsonrpc":"2.0","id":1,"result":{"t\u006fols":[{"name":"public"},{"name":"secret"}]}}"#;
    let json = through_policy(vec![escaped.to_vec()], "application/json");
    let client: Value = serde_json::from_slice(&json.bytes).unwrap();
    assert_eq!(client["result"]["tools"], json!([{"name": "public"}]));
}
