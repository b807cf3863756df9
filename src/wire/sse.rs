//! SSE framing (WHATWG "server-sent events"): lines end with `\r\n`, `\n` or `\r`, and a
//! blank line ends an event. One reading of that grammar for every layer that looks into a
//! stream: the policy layer normalizes line ends to cut events and filter them, the ATAG layer
//! tracks event boundaries to join its notifications in between.

use bytes::BytesMut;

/// Normalizes line ends to `\n` across chunks (a `\r\n` may be split between two).
#[derive(Debug, Default, Clone)]
pub(crate) struct LineEnds {
    /// The previous chunk ended in `\r`: a `\n` opening the next one belongs to it.
    after_cr: bool,
}

impl LineEnds {
    /// Appends `chunk` to `buf` with `\r\n` and `\r` turned into `\n`.
    pub(crate) fn push(&mut self, buf: &mut BytesMut, chunk: &[u8]) {
        // An empty chunk between `\r` and `\n` must not forget the pending `\r`.
        if chunk.is_empty() {
            return;
        }
        let mut chunk = chunk;
        if self.after_cr && chunk.first() == Some(&b'\n') {
            chunk = &chunk[1..];
        }
        self.after_cr = false;
        let mut i = 0;
        while i < chunk.len() {
            match chunk[i] {
                b'\r' => {
                    buf.extend_from_slice(b"\n");
                    match chunk.get(i + 1) {
                        Some(b'\n') => i += 1,
                        Some(_) => {}
                        None => self.after_cr = true,
                    }
                }
                b => buf.extend_from_slice(&[b]),
            }
            i += 1;
        }
    }
}

#[cfg_attr(not(feature = "atag"), allow(dead_code))]
/// Whether the bytes seen so far end between two events (at the start, or after a blank
/// line), whatever line ends the stream uses.
#[derive(Debug, Clone)]
pub(crate) struct EventBoundary {
    after_cr: bool,
    line_empty: bool,
    between_events: bool,
}

impl Default for EventBoundary {
    fn default() -> Self {
        EventBoundary {
            after_cr: false,
            line_empty: true,
            between_events: true,
        }
    }
}

#[cfg_attr(not(feature = "atag"), allow(dead_code))]
impl EventBoundary {
    /// Takes in the next bytes of the stream.
    pub(crate) fn feed(&mut self, chunk: &[u8]) {
        for &b in chunk {
            if self.after_cr && b == b'\n' {
                // The `\n` of a `\r\n` whose `\r` ended the line already.
                self.after_cr = false;
                continue;
            }
            self.after_cr = b == b'\r';
            if b == b'\r' || b == b'\n' {
                self.between_events = self.line_empty;
                self.line_empty = true;
            } else {
                self.line_empty = false;
                self.between_events = false;
            }
        }
    }

    /// Whether an event may be inserted here without splitting one.
    pub(crate) fn between_events(&self) -> bool {
        self.between_events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_end_grammar_ends_an_event() {
        for stream in [
            &b"data: a\n\n"[..],
            b"data: a\r\r",
            b"data: a\r\n\r\n",
            b"data: a\n\r\n",
            b": keep-alive\n\ndata: b\r\n\r\n",
        ] {
            // Whole, and cut at every byte.
            for cut in 0..=stream.len() {
                let mut boundary = EventBoundary::default();
                boundary.feed(&stream[..cut]);
                boundary.feed(&stream[cut..]);
                assert!(boundary.between_events(), "{stream:?} cut at {cut}");
            }
        }
        for open in [&b"data: a"[..], b"data: a\n", b"data: a\r\n", b"data: a\r"] {
            let mut boundary = EventBoundary::default();
            boundary.feed(open);
            assert!(!boundary.between_events(), "{open:?}");
        }
    }

    #[test]
    fn line_ends_normalize_across_chunks() {
        let mut ends = LineEnds::default();
        let mut buf = BytesMut::new();
        for chunk in [&b"a\r"[..], b"\nb\r", b"c\r\n\r", b"\n"] {
            ends.push(&mut buf, chunk);
        }
        assert_eq!(&buf[..], b"a\nb\nc\n\n");
    }
}
