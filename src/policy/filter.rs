//! Rewriting list results so a caller sees only what it may use, in JSON and SSE responses.
//!
//! The filter goes by the *shape* of a result, not by the id of the request that asked for it:
//! any JSON-RPC result carrying a `tools`, `prompts`, `resources` or `resourceTemplates` array
//! is filtered, whatever request, stream or replay it arrives on. An id match would miss a
//! list rerouted to another request with the same id, or replayed on a resumed SSE stream.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame};
use pin_project_lite::pin_project;
use serde_json::Value;

use super::compiled::ToolPolicy;
use super::rules::Kind;
use crate::AuthContext;
use crate::wire::sse::LineEnds;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Result keys holding filterable lists: (key, kind, the item field naming it).
const LISTS: [(&str, Kind, &str); 4] = [
    ("tools", Kind::Tool, "name"),
    ("prompts", Kind::Prompt, "name"),
    ("resources", Kind::Resource, "uri"),
    ("resourceTemplates", Kind::Resource, "uriTemplate"),
];

/// The largest SSE event (or JSON response) the filter holds in memory.
pub(crate) const MAX_FILTERED: usize = 32 << 20;

/// Filters list results for one caller.
#[derive(Debug, Clone)]
pub(crate) struct ListFilter {
    pub(crate) policy: ToolPolicy,
    pub(crate) ctx: AuthContext,
    /// Mark filtered results `cacheScope: "private"` (protocol revision 2026-07-28).
    pub(crate) private: bool,
}

/// Whether a payload could hold a list result at all: a cheap scan that spares the JSON parse
/// of ordinary responses (tool results, pings, notifications).
pub(crate) fn may_hold_list(payload: &[u8]) -> bool {
    // Every list key is one of these quoted words (`"resourceTemplates"` contains none, so it
    // is listed too). An escaped key (`"t\u006fols"`) reads as `tools` to every JSON parser:
    // any escape means a full parse. The SIMD searchers are built once, not per response.
    static FINDERS: std::sync::LazyLock<[memchr::memmem::Finder<'static>; 5]> =
        std::sync::LazyLock::new(|| {
            [
                &b"\"tools\""[..],
                b"\"prompts\"",
                b"\"resources\"",
                b"\"resourceTemplates\"",
                b"\\u",
            ]
            .map(memchr::memmem::Finder::new)
        });
    FINDERS.iter().any(|finder| finder.find(payload).is_some())
}

impl ListFilter {
    /// Filters one JSON-RPC message (or a batch of them) in place; returns whether it changed.
    pub(crate) fn apply(&self, message: &mut Value) -> bool {
        match message {
            Value::Array(items) => {
                // Every element is visited: no short-circuit past the first filtered one.
                let mut changed = false;
                for item in items {
                    changed |= self.apply_one(item);
                }
                changed
            }
            _ => self.apply_one(message),
        }
    }

    fn apply_one(&self, message: &mut Value) -> bool {
        let Some(result) = message.get_mut("result").and_then(Value::as_object_mut) else {
            return false;
        };
        let mut changed = false;
        for (key, kind, field) in LISTS {
            if let Some(Value::Array(items)) = result.get_mut(key) {
                items.retain(|item| {
                    item.get(field).and_then(Value::as_str).is_some_and(|name| {
                        self.policy.permits(kind, name, &self.ctx)
                            && (kind != Kind::Tool || self.policy.serves(name))
                    })
                });
                changed = true;
            }
        }
        if changed && self.private {
            result.insert("cacheScope".into(), Value::from("private"));
        }
        changed
    }

    /// Rewrites one SSE event (line ends normalized to `\n`, without its blank line): `Ok(None)`
    /// to pass it unchanged, `Err` for an event that may hold a list but cannot be read (not
    /// UTF-8, data that is not JSON): it must not pass unfiltered.
    fn rewrite_event(&self, event: &[u8]) -> Result<Option<Vec<u8>>, Unfilterable> {
        if !may_hold_list(event) {
            return Ok(None);
        }
        let text = std::str::from_utf8(event).map_err(|_| Unfilterable)?;
        let mut data = String::new();
        let mut other = Vec::new();
        for line in text.split('\n').filter(|l| !l.is_empty()) {
            match line.strip_prefix("data:") {
                Some(d) => {
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(d.strip_prefix(' ').unwrap_or(d));
                }
                None => other.push(line),
            }
        }
        if data.is_empty() {
            // No message in the event (comments, an `event:` line): nothing to filter.
            return Ok(None);
        }
        let mut message: Value = serde_json::from_str(&data).map_err(|_| Unfilterable)?;
        if !self.apply(&mut message) {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(event.len());
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(message.to_string().as_bytes());
        out.push(b'\n');
        for line in other {
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
        Ok(Some(out))
    }
}

/// An event or body that may hold a list result but cannot be parsed: refused, never passed
/// unfiltered (it could carry a tool the caller may not see).
#[derive(Debug)]
pub(crate) struct Unfilterable;

pin_project! {
    /// An SSE body whose list results are filtered as events go by. Line ends are normalized
    /// to `\n` (the SSE grammar treats `\r\n`, `\r` and `\n` alike), events are cut at blank
    /// lines, and an event larger than the cap ends the stream with an error rather than
    /// passing unfiltered.
    pub(crate) struct SseFilterBody<B> {
        #[pin]
        inner: B,
        filter: ListFilter,
        pending: BytesMut,
        // Bytes of `pending` already searched for an event end.
        scanned: usize,
        line_ends: LineEnds,
        started: bool,
        done: bool,
    }
}

impl<B> SseFilterBody<B> {
    pub(crate) fn new(inner: B, filter: ListFilter) -> Self {
        SseFilterBody {
            inner,
            filter,
            pending: BytesMut::new(),
            scanned: 0,
            line_ends: LineEnds::default(),
            started: false,
            done: false,
        }
    }
}

impl<B> Body for SseFilterBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        loop {
            let start = this.scanned.saturating_sub(1).min(this.pending.len());
            if let Some(pos) = this.pending[start..].windows(2).position(|w| w == b"\n\n") {
                let end = start + pos + 2;
                *this.scanned = 0;
                let event = this.pending.split_to(end).freeze();
                let out = match this.filter.rewrite_event(&event[..end - 1]) {
                    Ok(Some(mut rewritten)) => {
                        rewritten.push(b'\n');
                        Bytes::from(rewritten)
                    }
                    Ok(None) => event,
                    Err(Unfilterable) => {
                        *this.done = true;
                        this.pending.clear();
                        return Poll::Ready(Some(Err("an SSE event could not be filtered".into())));
                    }
                };
                return Poll::Ready(Some(Ok(Frame::data(out))));
            }
            *this.scanned = this.pending.len();
            if this.pending.len() > MAX_FILTERED {
                *this.done = true;
                this.pending.clear();
                return Poll::Ready(Some(Err("SSE event too large to filter".into())));
            }
            if *this.done {
                if this.pending.is_empty() {
                    return Poll::Ready(None);
                }
                // An unterminated last event is still an event: filter it like the others.
                let rest = this.pending.split().freeze();
                *this.scanned = 0;
                let out = match this.filter.rewrite_event(&rest) {
                    Ok(Some(rewritten)) => Bytes::from(rewritten),
                    Ok(None) => rest,
                    Err(Unfilterable) => {
                        return Poll::Ready(Some(Err("an SSE event could not be filtered".into())));
                    }
                };
                return Poll::Ready(Some(Ok(Frame::data(out))));
            }
            match ready!(this.inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        this.line_ends.push(this.pending, &data);
                        // A byte order mark may open the stream; it is not part of an event,
                        // and it may arrive cut across frames: decide once three bytes are in.
                        if !*this.started {
                            const BOM: &[u8] = b"\xEF\xBB\xBF";
                            let seen = this.pending.len().min(BOM.len());
                            if this.pending[..seen] != BOM[..seen] {
                                *this.started = true;
                            } else if seen == BOM.len() {
                                let _ = this.pending.split_to(BOM.len());
                                *this.scanned = 0;
                                *this.started = true;
                            }
                        }
                    }
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                None => *this.done = true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    fn filter() -> ListFilter {
        let policy = ToolPolicy::builder().tool("public", ["a"]).build().unwrap();
        let claims = serde_json::json!({"sub": "u", "scope": "a"});
        ListFilter {
            policy,
            ctx: AuthContext::from_claims(claims.as_object().cloned().unwrap()).unwrap(),
            private: false,
        }
    }

    async fn run(chunks: Vec<&'static [u8]>) -> String {
        let frames = chunks
            .into_iter()
            .map(|c| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(c))));
        let body = SseFilterBody::new(
            StreamBody::new(futures_util::stream::iter(frames)),
            filter(),
        );
        let bytes = body.collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn filters_across_chunks_and_line_ends_keeping_event_fields() {
        let out = run(vec![
            b"data:\r\nid: 0\r\nretry: 3000\r\n\r\n",
            b"data: {\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{\"tools\":[{\"name\":\"public\"},",
            b"{\"name\":\"secret\"}]}}\r",
            b"\nid: 1/3\r\nevent: message\r\n\r\n",
            b"data: {\"jsonrpc\":\"2.0\",\"id\":8,\"result\":{\"tools\":[{\"name\":\"secret\"}]}}\nid: 9",
        ])
        .await;
        assert!(!out.contains("secret"), "{out}");
        assert!(out.contains("{\"name\":\"public\"}"), "{out}");
        assert!(out.contains("id: 1/3\nevent: message\n\n"), "{out}");
        assert!(out.starts_with("data:\nid: 0\nretry: 3000\n\n"), "{out}");
    }

    #[tokio::test]
    async fn multi_line_data_is_joined_before_filtering() {
        let out = run(vec![
            b"data: {\"jsonrpc\":\"2.0\",\"id\":1,\n",
            b"data: \"result\":{\"prompts\":[{\"name\":\"x\"}]}}\n\n",
        ])
        .await;
        assert!(out.contains("\"prompts\":[]"), "{out}");
    }
}
