//! [`GatewayIdentityLayer`]: the backend's side of the gateway. It turns the user-context
//! headers a [`Gateway`](super::Gateway) sends into the [`AuthContext`] (and
//! [`ExternalToken`]) the crate's extractors read, so a server written for the embedded stack
//! (`Auth(auth): Auth`, `External(token): External`) runs unchanged behind the gateway.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use serde_json::{Map, Value, json};
use subtle::ConstantTimeEq;
use tower_layer::Layer;
use tower_service::Service;

use super::user_headers::{UserField, UserHeaders};
use crate::atag::{ExternalToken, TokenSet};
use crate::wire::{BoxError, LayerBody, code, rpc_error};
use crate::{AuthContext, BoxFuture, audit};

/// The header a gateway proves itself with to a backend that was given a shared secret.
pub const GATEWAY_SECRET_HEADER: HeaderName = HeaderName::from_static("x-mcp-gateway-secret");

/// Applies [`GatewayIdentityService`]: reads the caller from a gateway's user-context headers.
///
/// Use it only on a backend that nothing but the gateway can reach, and give both sides a
/// [shared secret](Self::shared_secret) ([`Backend::gateway_secret`](super::Backend::gateway_secret)
/// on the gateway) so a request that did not come through the gateway is refused even if it
/// does reach the backend. A request without the subject header (or without the right secret)
/// gets 401 and never reaches the inner service.
///
/// ```
/// use tower_mcp_auth::gateway::GatewayIdentityLayer;
///
/// let layer = GatewayIdentityLayer::new()
///     .shared_secret("a-secret-the-gateway-also-has-0123456789")
///     .issuer("https://gateway.example.com")
///     .service_token(tower_mcp_auth::gateway::DEFAULT_SERVICE_TOKEN_HEADER, "github");
/// # let _ = layer;
/// ```
#[derive(Debug, Clone, Default)]
pub struct GatewayIdentityLayer {
    shared: Arc<Shared>,
}

#[derive(Default, Clone)]
struct Shared {
    headers: UserHeaders,
    issuer: Option<String>,
    secret: Option<Box<[u8]>>,
    service_token: Option<(HeaderName, String)>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayIdentity")
            .field("headers", &self.headers)
            .field("issuer", &self.issuer)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("service_token", &self.service_token)
            .finish()
    }
}

/// The shortest shared secret accepted; a shorter one (an unset variable read as "") makes the
/// layer refuse every request rather than accept requests without one.
const MIN_SECRET: usize = 16;

impl GatewayIdentityLayer {
    /// Reads the default user headers; no secret, no issuer, no third-party token.
    pub fn new() -> Self {
        GatewayIdentityLayer::default()
    }

    /// The user headers, as configured on the gateway.
    #[must_use]
    pub fn user_headers(mut self, headers: UserHeaders) -> Self {
        Arc::make_mut(&mut self.shared).headers = headers;
        self
    }

    /// The gateway's issuer, put in the context (`AuthContext::issuer`).
    #[must_use]
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.shared).issuer = Some(issuer.into());
        self
    }

    /// Requires [`GATEWAY_SECRET_HEADER`] to carry `secret` (compared in constant time). A
    /// secret shorter than 16 bytes fails closed: every request is refused (and an error
    /// logged), so an unset variable read as an empty secret cannot open the backend.
    #[must_use]
    pub fn shared_secret(mut self, secret: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.shared).secret = Some(secret.into().into_bytes().into());
        self
    }

    /// Turns the third-party token the gateway sends in `header` (`Bearer …`) into the
    /// [`ExternalToken`] of `service`, for tools taking `External`.
    #[must_use]
    pub fn service_token(mut self, header: HeaderName, service: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.shared).service_token = Some((header, service.into()));
        self
    }
}

impl<S> Layer<S> for GatewayIdentityLayer {
    type Service = GatewayIdentityService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GatewayIdentityService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// Middleware reading a gateway's user-context headers; see [`GatewayIdentityLayer`].
#[derive(Debug, Clone)]
pub struct GatewayIdentityService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> GatewayIdentityService<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, B, ResBody> Service<Request<B>> for GatewayIdentityService<S>
where
    S: Service<Request<B>, Response = Response<ResBody>, Error = Infallible>,
    S::Future: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<LayerBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<LayerBody>, Infallible>>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        match self.shared.identify(request.headers()) {
            Ok((ctx, token)) => {
                // The application never needs the secret.
                request.headers_mut().remove(&GATEWAY_SECRET_HEADER);
                request.extensions_mut().insert(ctx);
                if let Some(token) = token {
                    request.extensions_mut().insert(token);
                }
                let future = self.inner.call(request);
                Box::pin(async move {
                    let response = match future.await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    };
                    Ok(response.map(|body| body.map_err(Into::into).boxed_unsync()))
                })
            }
            Err(why) => {
                tracing::warn!(target: audit::TARGET, decision = "deny", reason = why, "request not from the gateway refused");
                let refusal = rpc_error(
                    StatusCode::UNAUTHORIZED,
                    &Value::Null,
                    code::INVALID_REQUEST,
                    "this server is reached through its gateway",
                    None,
                );
                Box::pin(async move { Ok(refusal) })
            }
        }
    }
}

fn decoded(headers: &HeaderMap, name: Option<&HeaderName>) -> Option<String> {
    let value = headers.get(name?)?.to_str().ok()?;
    percent_encoding::percent_decode_str(value)
        .decode_utf8()
        .ok()
        .map(|v| v.into_owned())
}

impl Shared {
    fn identify(
        &self,
        headers: &HeaderMap,
    ) -> Result<(AuthContext, Option<ExternalToken>), &'static str> {
        if let Some(secret) = &self.secret {
            if secret.len() < MIN_SECRET {
                tracing::error!(target: audit::TARGET, "GatewayIdentityLayer: the shared secret is shorter than 16 bytes; refusing every request");
                return Err("the backend's gateway secret is too short");
            }
            let Some(sent) = headers.get(&GATEWAY_SECRET_HEADER) else {
                return Err("no gateway secret");
            };
            if !bool::from(sent.as_bytes().ct_eq(secret)) {
                return Err("wrong gateway secret");
            }
        }
        let read = |f: UserField| decoded(headers, self.headers.name(f));
        let subject = read(UserField::Subject).ok_or("no subject header")?;
        let mut claims = Map::new();
        claims.insert("sub".into(), json!(subject));
        if let Some(issuer) = &self.issuer {
            claims.insert("iss".into(), json!(issuer));
        }
        for (field, claim) in [
            (UserField::Email, "email"),
            (UserField::Name, "name"),
            (UserField::Provider, "idp"),
            (UserField::ClientId, "client_id"),
            (UserField::Scopes, "scope"),
        ] {
            if let Some(value) = read(field) {
                claims.insert(claim.into(), json!(value));
            }
        }
        let ctx = AuthContext::from_claims(claims).ok_or("unusable user headers")?;
        let token = self.service_token.as_ref().and_then(|(header, service)| {
            let value = headers.get(header)?.to_str().ok()?;
            let secret = value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))?;
            Some(ExternalToken::new(
                service,
                &TokenSet {
                    access_token: secret.to_owned(),
                    refresh_token: None,
                    expires_at: None,
                    scopes: Vec::new(),
                },
            ))
        });
        Ok((ctx, token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn the_context_is_what_the_gateway_sent_decoded() {
        let shared = Shared {
            issuer: Some("https://gw".into()),
            service_token: Some((super::super::DEFAULT_SERVICE_TOKEN_HEADER, "github".into())),
            ..Shared::default()
        };
        let (ctx, token) = shared
            .identify(&headers(&[
                ("x-mcp-user-subject", "github|42"),
                ("x-mcp-user-name", "Zo%C3%AB"),
                ("x-mcp-user-scopes", "notes:read notes:write"),
                ("x-mcp-client-id", "app"),
                ("x-mcp-service-token", "Bearer gho_x"),
            ]))
            .unwrap();
        assert_eq!(ctx.subject(), "github|42");
        assert_eq!(ctx.issuer(), Some("https://gw"));
        assert_eq!(ctx.claim("name").unwrap(), "Zoë");
        assert!(ctx.has_scope("notes:write"));
        assert_eq!(ctx.client_id(), Some("app"));
        let token = token.unwrap();
        assert_eq!((token.service(), token.secret()), ("github", "gho_x"));
    }

    #[test]
    fn requests_not_from_the_gateway_are_refused() {
        let open = Shared::default();
        assert!(open.identify(&headers(&[])).is_err(), "no subject");
        let guarded = Shared {
            secret: Some(b"s3cret-of-16-bytes".to_vec().into()),
            ..Shared::default()
        };
        let forged = headers(&[("x-mcp-user-subject", "admin")]);
        assert!(guarded.identify(&forged).is_err(), "no secret");
        let wrong = headers(&[
            ("x-mcp-user-subject", "admin"),
            ("x-mcp-gateway-secret", "s3cret-of-16-byte"),
        ]);
        assert!(guarded.identify(&wrong).is_err(), "a prefix of the secret");
        let right = headers(&[
            ("x-mcp-user-subject", "alice"),
            ("x-mcp-gateway-secret", "s3cret-of-16-bytes"),
        ]);
        assert_eq!(guarded.identify(&right).unwrap().0.subject(), "alice");
        // An unset variable read as "": nothing gets in, not even without the header.
        let empty = Shared {
            secret: Some(Vec::new().into()),
            ..Shared::default()
        };
        assert!(
            empty.identify(&forged).is_err(),
            "an empty secret fails closed"
        );
        let empty_header = headers(&[
            ("x-mcp-user-subject", "admin"),
            ("x-mcp-gateway-secret", ""),
        ]);
        assert!(empty.identify(&empty_header).is_err());
        assert!(
            !format!("{guarded:?}").contains("s3cret"),
            "Debug hides the secret"
        );
    }
}
