//! Rewriting `tools/list`, `resources/list`, `resources/templates/list` and `prompts/list`
//! responses so a caller sees only what it may use, in JSON and in SSE responses.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame};
use pin_project_lite::pin_project;
use serde_json::Value;

use super::compiled::ToolPolicy;
use super::rules::Kind;
use crate::AuthContext;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A list method and where its items and their names are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ListKind {
    kind: Kind,
    items: &'static str,
    key: &'static str,
}

impl ListKind {
    pub(crate) fn of(method: &str) -> Option<ListKind> {
        let (kind, items, key) = match method {
            "tools/list" => (Kind::Tool, "tools", "name"),
            "resources/list" => (Kind::Resource, "resources", "uri"),
            "resources/templates/list" => (Kind::Resource, "resourceTemplates", "uriTemplate"),
            "prompts/list" => (Kind::Prompt, "prompts", "name"),
            _ => return None,
        };
        Some(ListKind { kind, items, key })
    }
}

/// Which response ids to filter, and how.
#[derive(Debug, Clone)]
pub(crate) struct ListFilter {
    pub(crate) lists: Vec<(Value, ListKind)>,
    pub(crate) policy: ToolPolicy,
    pub(crate) ctx: AuthContext,
    /// Mark filtered results `cacheScope: "private"` (protocol revision 2026-07-28).
    pub(crate) private: bool,
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
        let Some(list) = message
            .get("id")
            .and_then(|id| self.lists.iter().find(|(want, _)| want == id))
            .map(|(_, list)| *list)
        else {
            return false;
        };
        let Some(result) = message.get_mut("result").and_then(Value::as_object_mut) else {
            return false;
        };
        if let Some(Value::Array(items)) = result.get_mut(list.items) {
            items.retain(|item| {
                item.get(list.key)
                    .and_then(Value::as_str)
                    .is_some_and(|name| self.policy.permits(list.kind, name, &self.ctx))
            });
        }
        if self.private {
            result.insert("cacheScope".into(), Value::from("private"));
        }
        true
    }

    /// Rewrites one SSE event (without its terminating blank line), or returns it unchanged.
    fn rewrite_event(&self, event: &[u8]) -> Option<Vec<u8>> {
        let text = std::str::from_utf8(event).ok()?;
        let mut data = String::new();
        let mut other = Vec::new();
        for line in text.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
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
        let mut message: Value = serde_json::from_str(&data).ok()?;
        if !self.apply(&mut message) {
            return None;
        }
        let mut out = Vec::with_capacity(event.len());
        for line in other {
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(message.to_string().as_bytes());
        out.push(b'\n');
        Some(out)
    }
}

pin_project! {
    /// An SSE body whose list responses are filtered as events go by. Events are cut at blank
    /// lines; other events pass unchanged and unbuffered beyond their own length.
    pub(crate) struct SseFilterBody<B> {
        #[pin]
        inner: B,
        filter: ListFilter,
        pending: BytesMut,
        done: bool,
    }
}

impl<B> SseFilterBody<B> {
    pub(crate) fn new(inner: B, filter: ListFilter) -> Self {
        SseFilterBody {
            inner,
            filter,
            pending: BytesMut::new(),
            done: false,
        }
    }
}

/// The end of the first event in `buf` (index past its blank line), if complete.
fn event_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i < buf.len() {
        if buf[i] == b'\n' {
            if buf.get(i + 1) == Some(&b'\n') {
                return Some((i + 1, i + 2));
            }
            if buf.get(i + 1) == Some(&b'\r') && buf.get(i + 2) == Some(&b'\n') {
                return Some((i + 1, i + 3));
            }
        }
        i += 1;
    }
    None
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
            if let Some((event_len, consumed)) = event_end(this.pending) {
                let chunk = this.pending.split_to(consumed).freeze();
                let out = match this.filter.rewrite_event(&chunk[..event_len]) {
                    Some(mut rewritten) => {
                        rewritten.push(b'\n');
                        Bytes::from(rewritten)
                    }
                    None => chunk,
                };
                return Poll::Ready(Some(Ok(Frame::data(out))));
            }
            if *this.done {
                if this.pending.is_empty() {
                    return Poll::Ready(None);
                }
                let rest = this.pending.split().freeze();
                return Poll::Ready(Some(Ok(Frame::data(rest))));
            }
            match ready!(this.inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => this.pending.extend_from_slice(&data),
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                None => *this.done = true,
            }
        }
    }
}
