//! [`OriginLayer`]: the MCP transport's `Origin` check against DNS rebinding.
//!
//! The Streamable HTTP transport says servers MUST validate the `Origin` header and answer 403
//! when it is present and not allowed: a page on `http://evil.example` whose name an attacker
//! re-points at `127.0.0.1` would otherwise talk to a local MCP server from the victim's
//! browser. The check runs before the bearer layer (place this layer outside it), so a foreign
//! page learns nothing, not even whether a token would be accepted.
//!
//! Requests without `Origin` (every non-browser client) pass. A present `Origin` passes only if
//! it equals, as scheme, host and port, one of the allowed origins: the resource's own, those
//! added with [`OriginLayer::allow`], and with [`OriginLayer::allow_loopback`] any port of
//! `localhost`, `127.0.0.1` and `[::1]`. No suffix or substring matching; `null` never passes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{Either, Full};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::ConfigError;
use crate::bearer::ResponseBody;
use crate::resource::ProtectedResource;

/// An origin as a browser sends it: scheme, host and port, lower case, default port left out.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl Origin {
    /// Parses a serialized origin (`scheme://host[:port]`, nothing after): `None` for `null`,
    /// paths, user information, or anything else a browser would not send.
    fn parse(value: &str) -> Option<Origin> {
        let url = url::Url::parse(value).ok()?;
        let serialized = url.origin().ascii_serialization();
        // A real origin serializes back to itself (modulo case of scheme and host).
        if !serialized.eq_ignore_ascii_case(value.trim_end_matches('/'))
            || value.ends_with('/')
            || !matches!(url.scheme(), "http" | "https")
        {
            return None;
        }
        Some(Origin {
            scheme: url.scheme().to_owned(),
            host: url.host_str()?.to_ascii_lowercase(),
            port: url.port(),
        })
    }

    fn is_loopback(&self) -> bool {
        matches!(self.host.as_str(), "localhost" | "127.0.0.1" | "[::1]")
    }
}

/// The allowed origins, shared by every clone of the layer and its services.
#[derive(Debug, Clone)]
struct Allowed {
    origins: Vec<Origin>,
    loopback: bool,
}

impl Allowed {
    fn allows(&self, value: &HeaderValue) -> bool {
        let Some(origin) = value.to_str().ok().and_then(Origin::parse) else {
            return false;
        };
        (self.loopback && origin.is_loopback()) || self.origins.contains(&origin)
    }
}

/// Refuses browser requests from foreign origins with 403 (DNS rebinding, MCP transport
/// specification). Place it outside the [`BearerLayer`](crate::BearerLayer).
///
/// ```
/// use tower_mcp_auth::ProtectedResource;
/// use tower_mcp_auth::origin::OriginLayer;
///
/// let resource = ProtectedResource::builder("https://mcp.example.com/mcp")
///     .authorization_server("https://auth.example.com")
///     .build()
///     .unwrap();
/// // The resource's own origin, and a web client's.
/// let layer = OriginLayer::new(&resource)
///     .allow("https://app.example.com")
///     .unwrap();
/// # let _ = layer;
/// ```
#[derive(Debug, Clone)]
pub struct OriginLayer {
    allowed: Arc<Allowed>,
}

impl OriginLayer {
    /// Allows the origin of `resource`'s URI.
    pub fn new(resource: &ProtectedResource) -> Self {
        let own = Origin::parse(
            &url::Url::parse(resource.resource())
                .map(|u| u.origin().ascii_serialization())
                .unwrap_or_default(),
        );
        OriginLayer {
            allowed: Arc::new(Allowed {
                origins: own.into_iter().collect(),
                loopback: false,
            }),
        }
    }

    /// Also allows `origin` (`https://app.example.com`, `http://localhost:6274`): exactly that
    /// scheme, host and port.
    pub fn allow(mut self, origin: &str) -> Result<Self, ConfigError> {
        let parsed = Origin::parse(origin).ok_or_else(|| ConfigError::InvalidUrl {
            what: "allowed origin",
            url: origin.to_owned(),
            reason: "an origin is scheme://host[:port], without a path".into(),
        })?;
        Arc::make_mut(&mut self.allowed).origins.push(parsed);
        Ok(self)
    }

    /// Also allows every port of `localhost`, `127.0.0.1` and `[::1]`: for a server on loopback,
    /// so browser-based clients on the same machine (the MCP Inspector) keep working.
    pub fn allow_loopback(mut self) -> Self {
        Arc::make_mut(&mut self.allowed).loopback = true;
        self
    }
}

impl<S> Layer<S> for OriginLayer {
    type Service = OriginService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OriginService {
            inner,
            allowed: self.allowed.clone(),
        }
    }
}

/// The service of [`OriginLayer`].
#[derive(Debug, Clone)]
pub struct OriginService<S> {
    inner: S,
    allowed: Arc<Allowed>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for OriginService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let mut origins = request.headers().get_all(header::ORIGIN).iter();
        let refused = match (origins.next(), origins.next()) {
            (None, _) => false,
            (Some(origin), None) => !self.allowed.allows(origin),
            // Two Origin headers: no browser sends that.
            (Some(_), Some(_)) => true,
        };
        if refused {
            let origin = request
                .headers()
                .get(header::ORIGIN)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            tracing::warn!(target: crate::audit::TARGET, decision = "deny", origin = ?origin, "request from a foreign origin refused");
            return ResponseFuture {
                state: State::Refused {
                    response: Some(crate::challenge::json_error(
                        StatusCode::FORBIDDEN,
                        "forbidden",
                        "requests from this origin are not allowed",
                    )),
                },
            };
        }
        ResponseFuture {
            state: State::Inner {
                future: self.inner.call(request),
            },
        }
    }
}

pin_project! {
    /// Response future of [`OriginService`]: the inner service's, or a ready refusal.
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Inner {
            #[pin]
            future: F,
        },
        Refused {
            response: Option<Response<Full<Bytes>>>,
        },
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Inner { future } => future
                .poll(cx)
                .map(|result| result.map(|response| response.map(Either::Left))),
            StateProj::Refused { response } => Poll::Ready(Ok(response
                .take()
                .unwrap_or_else(|| {
                    crate::challenge::json_error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "server_error",
                        "response polled after completion",
                    )
                })
                .map(Either::Right))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_match_exactly_by_scheme_host_and_port() {
        let allowed = Allowed {
            origins: vec![Origin::parse("https://app.example.com").unwrap()],
            loopback: false,
        };
        let allows = |v: &str| allowed.allows(&HeaderValue::from_str(v).unwrap());
        assert!(allows("https://app.example.com"));
        assert!(allows("https://APP.example.com"));
        for foreign in [
            // A browser never writes the default port: not an origin it would send.
            "https://app.example.com:443",
            "http://app.example.com",
            "https://app.example.com:8443",
            "https://app.example.com.evil.example",
            "https://evil-app.example.com",
            "https://example.com",
            "null",
            "https://app.example.com/path",
            "https://user@app.example.com",
            "file://",
            "",
        ] {
            assert!(!allows(foreign), "{foreign}");
        }
    }

    #[test]
    fn loopback_allows_any_port_of_the_loopback_names_only() {
        let allowed = Allowed {
            origins: Vec::new(),
            loopback: true,
        };
        let allows = |v: &str| allowed.allows(&HeaderValue::from_str(v).unwrap());
        assert!(allows("http://localhost:6274"));
        assert!(allows("http://127.0.0.1:8080"));
        assert!(allows("http://[::1]:3000"));
        assert!(!allows("http://127.0.0.1.evil.example"));
        assert!(!allows("http://localhost.evil.example:6274"));
        assert!(!allows("null"));
    }
}
