//! A session's standalone SSE stream with our notifications joined in, at event boundaries.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::wire::sse::EventBoundary;

pin_project_lite::pin_project! {
    /// The inner SSE body, with each event from `extra` inserted between two of its events
    /// (never inside one).
    pub(crate) struct JoinedSse<B> {
        #[pin]
        inner: B,
        extra: Option<UnboundedReceiver<Bytes>>,
        // Whether the inner body's bytes so far end between two events.
        boundary: EventBoundary,
        done: bool,
    }
}

impl<B> JoinedSse<B> {
    pub(crate) fn new(inner: B, extra: UnboundedReceiver<Bytes>) -> Self {
        JoinedSse {
            inner,
            extra: Some(extra),
            boundary: EventBoundary::default(),
            done: false,
        }
    }
}

impl<B> Body for JoinedSse<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        // Between events: ours may go first.
        if this.boundary.between_events()
            && let Some(extra) = this.extra.as_mut()
        {
            match extra.poll_recv(cx) {
                Poll::Ready(Some(event)) => return Poll::Ready(Some(Ok(Frame::data(event)))),
                Poll::Ready(None) => *this.extra = None,
                Poll::Pending => {}
            }
        }
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.boundary.feed(data.chunk());
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                *this.done = true;
                Poll::Ready(None)
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn notifications_go_between_events_only() {
        let (events_tx, events_rx) =
            tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::convert::Infallible>>(8);
        let inner = http_body_util::StreamBody::new(tokio_stream_shim(events_rx));
        let (extra_tx, extra_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut joined = JoinedSse::new(inner, extra_rx);
        // Half an event arrives, then a notification is ready: it must wait for the end.
        events_tx
            .send(Ok(Frame::data(Bytes::from_static(b"data: {\"a\":"))))
            .await
            .unwrap();
        let first = joined.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&first[..], b"data: {\"a\":");
        extra_tx
            .send(Bytes::from_static(b"data: ours\n\n"))
            .unwrap();
        events_tx
            .send(Ok(Frame::data(Bytes::from_static(b"1}\n\n"))))
            .await
            .unwrap();
        let second = joined.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&second[..], b"1}\n\n");
        let third = joined.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&third[..], b"data: ours\n\n");
        drop(events_tx);
        assert!(joined.frame().await.is_none());
    }

    fn tokio_stream_shim<T>(
        mut rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures_util::Stream<Item = T> {
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }
}
