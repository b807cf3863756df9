//! Stateful MCP sessions bound to their user without shared state: the gateway hands clients
//! the backend's `Mcp-Session-Id` sealed with a MAC over the user and the backend, and opens it
//! on every request. Any gateway replica with the same key checks it, so a load balancer needs
//! no sticky routing and no session store.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response, StatusCode};
use tower_service::Service;

use crate::wire::{LayerBody, MCP_SESSION_ID, code, rpc_error};
use crate::{AuthContext, audit};

/// Bytes of the MAC kept in the sealed id (128 bits).
const TAG_BYTES: usize = 16;

/// The key and the sealing of session ids; see the [module docs](self).
#[derive(Clone)]
pub(crate) struct SessionSeal {
    key: [u8; 32],
}

impl std::fmt::Debug for SessionSeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionSeal(<key>)")
    }
}

impl SessionSeal {
    pub(crate) fn new(key: [u8; 32]) -> Self {
        SessionSeal { key }
    }

    fn tag(
        &self,
        backend: &str,
        ctx: Option<&AuthContext>,
        inner: &str,
    ) -> Option<[u8; TAG_BYTES]> {
        // HMAC takes keys of any length: this never fails, and would refuse if it did.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).ok()?;
        let issuer = ctx.and_then(AuthContext::issuer).unwrap_or("");
        let subject = ctx.map_or("", AuthContext::subject);
        // Each field length-prefixed: no two different tuples hash the same bytes.
        for field in [backend, issuer, subject, inner] {
            mac.update(&(field.len() as u64).to_be_bytes());
            mac.update(field.as_bytes());
        }
        let mut tag = [0u8; TAG_BYTES];
        tag.copy_from_slice(mac.finalize().into_bytes().get(..TAG_BYTES)?);
        Some(tag)
    }

    /// The id the client gets for the backend's session `inner`: `{inner}.{tag}`.
    pub(crate) fn seal(
        &self,
        backend: &str,
        ctx: Option<&AuthContext>,
        inner: &str,
    ) -> Option<String> {
        let tag = self.tag(backend, ctx, inner)?;
        Some(format!("{inner}.{}", URL_SAFE_NO_PAD.encode(tag)))
    }

    /// The backend's session id inside `outer`, when `outer` was sealed for this user and
    /// backend; `None` otherwise (another user's session, a forged or a bare id).
    pub(crate) fn open<'a>(
        &self,
        backend: &str,
        ctx: Option<&AuthContext>,
        outer: &'a str,
    ) -> Option<&'a str> {
        let (inner, tag) = outer.rsplit_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        let expected = self.tag(backend, ctx, inner)?;
        bool::from(tag.as_slice().ct_eq(&expected)).then_some(inner)
    }
}

/// Refuses, right inside the bearer layer, a request whose `Mcp-Session-Id` was not sealed for
/// its user and this backend, so the policy and ATAG layers (which key per-session state by the
/// id) never see another user's session. [`McpProxy`](super::McpProxy) unseals it later.
#[derive(Debug, Clone)]
pub(crate) struct SessionCheckLayer {
    seal: SessionSeal,
    backend: std::sync::Arc<str>,
}

impl SessionCheckLayer {
    pub(crate) fn new(seal: SessionSeal, backend: &str) -> Self {
        SessionCheckLayer {
            seal,
            backend: backend.into(),
        }
    }
}

impl<S> tower_layer::Layer<S> for SessionCheckLayer {
    type Service = SessionCheck<S>;

    fn layer(&self, inner: S) -> SessionCheck<S> {
        SessionCheck {
            inner,
            layer: self.clone(),
        }
    }
}

/// A session id [`SessionCheckLayer`] opened: the client's sealed id and the backend's own, so
/// the proxy swaps them without computing the MAC a second time. Only server-side layers put
/// request extensions; a client cannot.
#[derive(Debug, Clone)]
pub(crate) struct OpenedSession {
    pub(crate) outer: http::HeaderValue,
    pub(crate) inner: http::HeaderValue,
}

/// The service of [`SessionCheckLayer`].
#[derive(Debug, Clone)]
pub(crate) struct SessionCheck<S> {
    inner: S,
    layer: SessionCheckLayer,
}

/// A refusal as the policy layer would answer it.
fn unknown_session() -> Response<LayerBody> {
    rpc_error(
        StatusCode::NOT_FOUND,
        &serde_json::Value::Null,
        code::INVALID_REQUEST,
        "no such session for this principal; initialize a new session",
        None,
    )
}

impl<S, B> Service<Request<B>> for SessionCheck<S>
where
    S: Service<Request<B>, Response = Response<LayerBody>, Error = Infallible>,
{
    type Response = Response<LayerBody>;
    type Error = Infallible;
    type Future = CheckFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let mut ids = request.headers().get_all(&MCP_SESSION_ID).iter();
        if let Some(outer) = ids.next() {
            let ctx = request.extensions().get::<AuthContext>();
            let opened = match (ids.next(), outer.to_str()) {
                (None, Ok(text)) => self
                    .layer
                    .seal
                    .open(&self.layer.backend, ctx, text)
                    .and_then(|inner| http::HeaderValue::from_str(inner).ok())
                    .map(|inner| OpenedSession {
                        outer: outer.clone(),
                        inner,
                    }),
                _ => None,
            };
            if let Some(opened) = opened {
                request.extensions_mut().insert(opened);
            } else {
                tracing::warn!(target: audit::TARGET, decision = "deny", backend = %self.layer.backend, subject = ctx.map(|c| audit::Escaped(c.subject())).map(tracing::field::display), reason = "session not sealed for this principal", "session refused");
                return CheckFuture::Refused {
                    response: Some(unknown_session()),
                };
            }
        }
        CheckFuture::Inner {
            future: self.inner.call(request),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`SessionCheck`]: the inner service's, or a refusal.
    #[project = CheckProj]
    pub(crate) enum CheckFuture<F> {
        Inner { #[pin] future: F },
        Refused { response: Option<Response<LayerBody>> },
    }
}

impl<F> Future for CheckFuture<F>
where
    F: Future<Output = Result<Response<LayerBody>, Infallible>>,
{
    type Output = Result<Response<LayerBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            CheckProj::Inner { future } => future.poll(cx),
            CheckProj::Refused { response } => {
                Poll::Ready(Ok(response.take().unwrap_or_else(unknown_session)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(sub: &str) -> AuthContext {
        AuthContext::from_claims(
            json!({"sub": sub, "iss": "https://gw"})
                .as_object()
                .unwrap()
                .clone(),
        )
        .unwrap()
    }

    #[test]
    fn a_sealed_id_opens_only_for_its_user_and_backend() {
        let seal = SessionSeal::new([7; 32]);
        let alice = user("alice");
        let outer = seal.seal("notes", Some(&alice), "3f0c-uuid").unwrap();
        assert_eq!(seal.open("notes", Some(&alice), &outer), Some("3f0c-uuid"));
        assert_eq!(
            seal.open("notes", Some(&user("bob")), &outer),
            None,
            "another user"
        );
        assert_eq!(
            seal.open("search", Some(&alice), &outer),
            None,
            "another backend"
        );
        assert_eq!(
            seal.open("notes", Some(&alice), "3f0c-uuid"),
            None,
            "a bare backend id"
        );
        let (inner, _) = outer.rsplit_once('.').unwrap();
        assert_eq!(
            seal.open(
                "notes",
                Some(&alice),
                &format!("{inner}.AAAAAAAAAAAAAAAAAAAAAA")
            ),
            None
        );
        assert_eq!(
            SessionSeal::new([8; 32]).open("notes", Some(&alice), &outer),
            None,
            "another key"
        );
        // Ids with dots of their own still round-trip.
        let dotted = seal.seal("notes", Some(&alice), "a.b.c").unwrap();
        assert_eq!(seal.open("notes", Some(&alice), &dotted), Some("a.b.c"));
    }
}
