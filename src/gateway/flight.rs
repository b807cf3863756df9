//! What a backend has in flight: a slot per request (open streams included) out of the
//! backend's limit, at most a few per user, held by the answer's body until it is dropped.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::AuthContext;
use crate::wire::BoxError;

type Counts = Arc<Mutex<HashMap<Box<str>, usize>>>;

/// The backend's slots, and each user's share of them.
#[derive(Debug)]
pub(crate) struct Flights {
    total: Arc<Semaphore>,
    per_user: usize,
    users: Counts,
}

/// Why no slot was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Busy {
    /// Every slot of the backend stayed taken for the whole wait.
    Backend,
    /// The user already has their share in flight (answered at once, without waiting).
    User,
}

/// A request's slot; dropping it frees the backend slot and the user's share.
#[derive(Debug)]
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
    user: Option<(Box<str>, Counts)>,
}

fn lock(counts: &Counts) -> std::sync::MutexGuard<'_, HashMap<Box<str>, usize>> {
    // A poisoned lock only means a panic elsewhere mid-update; the counts are still usable.
    counts.lock().unwrap_or_else(|e| e.into_inner())
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some((user, counts)) = &self.user {
            let mut counts = lock(counts);
            if let Some(count) = counts.get_mut(user) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    counts.remove(user);
                }
            }
        }
    }
}

impl Flights {
    pub(crate) fn new(total: usize, per_user: usize) -> Self {
        Flights {
            total: Arc::new(Semaphore::new(total.max(1))),
            per_user: per_user.max(1),
            users: Arc::default(),
        }
    }

    /// A slot for a request of `user`, waiting up to `wait` for the backend's; the user's share
    /// is checked first and never waited for. The map holds only users with requests in flight.
    pub(crate) async fn enter(
        &self,
        user: Option<&AuthContext>,
        wait: Duration,
    ) -> Result<Slot, Busy> {
        let user = match user {
            Some(ctx) => {
                let key: Box<str> =
                    format!("{}\0{}", ctx.issuer().unwrap_or(""), ctx.subject()).into();
                let mut counts = lock(&self.users);
                let count = counts.entry(key.clone()).or_insert(0);
                if *count >= self.per_user {
                    return Err(Busy::User);
                }
                *count += 1;
                Some((key, self.users.clone()))
            }
            None => None,
        };
        // From here the user's share is counted: a refusal below gives it back through `Slot`'s
        // drop of this partial value.
        let guard = UserShare(user);
        match tokio::time::timeout(wait, self.total.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Slot {
                _permit: permit,
                user: guard.take(),
            }),
            // The semaphore is never closed; a full one past the deadline is "busy".
            Ok(Err(_)) | Err(_) => Err(Busy::Backend),
        }
    }
}

/// A counted share not yet in a [`Slot`]: given back if the backend slot is not obtained.
struct UserShare(Option<(Box<str>, Counts)>);

impl UserShare {
    fn take(mut self) -> Option<(Box<str>, Counts)> {
        self.0.take()
    }
}

impl Drop for UserShare {
    fn drop(&mut self) {
        if let Some((user, counts)) = self.0.take() {
            let mut counts = lock(&counts);
            if let Some(count) = counts.get_mut(&user) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    counts.remove(&user);
                }
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// A backend's body, cut off past the response limit; it holds the request's [`Slot`]
    /// until it is dropped (so an open event stream counts as in flight).
    pub(crate) struct Bounded {
        #[pin]
        inner: reqwest::Body,
        remaining: u64,
        _slot: Slot,
    }
}

impl Bounded {
    pub(crate) fn new(inner: reqwest::Body, limit: u64, slot: Slot) -> Self {
        Bounded {
            inner,
            remaining: limit,
            _slot: slot,
        }
    }
}

/// The error that ends a response past the size limit.
#[derive(Debug, thiserror::Error)]
#[error("the backend's response exceeds the gateway's size limit")]
struct TooLarge;

impl Body for Bounded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > *this.remaining {
                        *this.remaining = 0;
                        return Poll::Ready(Some(Err(Box::new(TooLarge))));
                    }
                    *this.remaining -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(sub: &str) -> AuthContext {
        AuthContext::from_claims(json!({"sub": sub}).as_object().unwrap().clone()).unwrap()
    }

    #[tokio::test]
    async fn one_user_cannot_hold_more_than_their_share_and_shares_come_back() {
        let flights = Flights::new(10, 2);
        let wait = Duration::from_millis(10);
        let a1 = flights.enter(Some(&user("a")), wait).await.unwrap();
        let _a2 = flights.enter(Some(&user("a")), wait).await.unwrap();
        assert_eq!(
            flights.enter(Some(&user("a")), wait).await.unwrap_err(),
            Busy::User
        );
        let _b = flights.enter(Some(&user("b")), wait).await.unwrap();
        drop(a1);
        let _a3 = flights.enter(Some(&user("a")), wait).await.unwrap();
        assert_eq!(lock(&flights.users).len(), 2);
    }

    #[tokio::test]
    async fn a_full_backend_is_busy_and_a_refused_user_share_is_given_back() {
        let flights = Flights::new(1, 5);
        let wait = Duration::from_millis(10);
        let held = flights.enter(None, wait).await.unwrap();
        assert_eq!(
            flights.enter(Some(&user("a")), wait).await.unwrap_err(),
            Busy::Backend
        );
        assert!(lock(&flights.users).is_empty(), "the share was given back");
        drop(held);
        let _a = flights.enter(Some(&user("a")), wait).await.unwrap();
        drop(_a);
        assert!(
            lock(&flights.users).is_empty(),
            "no entry stays for users with nothing in flight"
        );
    }
}
