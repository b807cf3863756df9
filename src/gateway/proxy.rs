//! [`McpProxy`]: the innermost service of a gateway route, forwarding MCP requests to a backend.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Request, Response, StatusCode, header};
use http_body::Body;
use http_body_util::BodyExt;
use serde_json::Value;
use tower_service::Service;

use super::flight::{Bounded, Busy, Flights};
use super::hop::strip_hop_by_hop;
use super::session::{OpenedSession, SessionSeal};
use super::user_headers::UserHeaders;
use crate::wire::{BoxError, LayerBody, MCP_SESSION_ID, code, rpc_error};
use crate::{AuthContext, BoxFuture, ConfigError, audit};

/// Default time to open a connection to a backend.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time a backend has to start answering (the status and headers; a streamed body may
/// then take as long as it needs).
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default number of requests in flight to one backend (streams included).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 512;
/// Default number of requests one user may have in flight to one backend (streams included).
pub const DEFAULT_MAX_IN_FLIGHT_PER_USER: usize = 32;
/// Default number of idle connections kept open to one backend.
pub const DEFAULT_POOL_MAX_IDLE: usize = 32;
/// Default largest response body passed on from a backend.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 64 << 20;

/// The largest request body of known size sent as one buffer rather than streamed.
const MAX_BUFFERED_REQUEST: u64 = 4 << 20;

/// Forwards MCP requests (Streamable HTTP `POST`; for older revisions also the `GET` event
/// stream and `DELETE`) to one backend MCP server, streaming its answers back unbuffered.
///
/// It never forwards the client's credentials: `Authorization`, `Proxy-Authorization` and
/// `Cookie` are removed (so are headers named by [`strip_request_header`](McpProxyBuilder::strip_request_header),
/// such as an ingress token header), and the caller's identity travels in
/// [`UserHeaders`] instead, set from the request's [`AuthContext`]. From the answer it removes
/// hop-by-hop headers, `Set-Cookie` (a backend must not set cookies on the gateway's origin,
/// where the sign-in session lives) and `WWW-Authenticate`; a backend's own 401 or 407 becomes
/// a 502, so a client is never sent to authorize again for a failure it cannot fix.
///
/// Failures are JSON-RPC errors: 502 when the backend cannot be reached or answers badly, 504
/// when it does not start answering within the response timeout, 503 when the backend's
/// in-flight limit stays full that long. A body larger than the response limit is cut off.
///
/// ```
/// use std::time::Duration;
/// use tower_mcp_auth::gateway::McpProxy;
///
/// let proxy = McpProxy::builder("notes", "http://127.0.0.1:9000/mcp")
///     .response_timeout(Duration::from_secs(30))
///     .max_in_flight(128)
///     .build()
///     .unwrap();
/// # let _ = proxy;
/// ```
#[derive(Debug, Clone)]
pub struct McpProxy {
    shared: Arc<Shared>,
}

struct Shared {
    name: Box<str>,
    backend: url::Url,
    client: reqwest::Client,
    flights: Flights,
    response_timeout: Duration,
    max_response_bytes: u64,
    user_headers: UserHeaders,
    own_issuer: Option<Box<str>>,
    strip: Vec<HeaderName>,
    gateway_secret: Option<http::HeaderValue>,
    sessions: Option<SessionSeal>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The gateway secret and the session key stay out of logs.
        f.debug_struct("McpProxy")
            .field("name", &self.name)
            .field("backend", &self.backend.as_str())
            .field("response_timeout", &self.response_timeout)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("user_headers", &self.user_headers)
            .field(
                "gateway_secret",
                &self.gateway_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("sessions", &self.sessions)
            .finish_non_exhaustive()
    }
}

/// Builder of [`McpProxy`].
#[must_use]
pub struct McpProxyBuilder {
    name: String,
    backend: String,
    connect_timeout: Duration,
    response_timeout: Duration,
    max_in_flight: usize,
    max_in_flight_per_user: usize,
    pool_max_idle: usize,
    pool_idle_timeout: Duration,
    max_response_bytes: u64,
    user_headers: UserHeaders,
    own_issuer: Option<String>,
    strip: Vec<HeaderName>,
    gateway_secret: Option<String>,
    session_key: Option<[u8; 32]>,
}

impl std::fmt::Debug for McpProxyBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpProxyBuilder")
            .field("name", &self.name)
            .field("backend", &self.backend)
            .field(
                "gateway_secret",
                &self.gateway_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("session_key", &self.session_key.map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl McpProxy {
    /// A proxy to the MCP endpoint at `backend` (`http://` or `https://`), called `name` in
    /// logs and errors (the backend's URL is never shown to clients).
    pub fn builder(name: impl Into<String>, backend: impl Into<String>) -> McpProxyBuilder {
        McpProxyBuilder {
            name: name.into(),
            backend: backend.into(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_in_flight_per_user: DEFAULT_MAX_IN_FLIGHT_PER_USER,
            pool_max_idle: DEFAULT_POOL_MAX_IDLE,
            pool_idle_timeout: Duration::from_secs(90),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            user_headers: UserHeaders::default(),
            own_issuer: None,
            strip: Vec::new(),
            gateway_secret: None,
            session_key: None,
        }
    }

    /// The backend's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }
}

impl McpProxyBuilder {
    /// Time to open a connection (default 5 s); past it the request gets 502.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Time the backend has to send its status and headers (default 60 s); past it the
    /// request gets 504. A streamed body is not limited in time.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// Requests in flight to the backend at once, open event streams included (default 512).
    /// A request waits for a free slot up to the response timeout, then gets 503.
    pub fn max_in_flight(mut self, limit: usize) -> Self {
        self.max_in_flight = limit.max(1);
        self
    }

    /// Requests one user (issuer and subject) may have in flight to the backend at once,
    /// open event streams included (default 32): past it the user gets 429 with
    /// `Retry-After` at once, and other users keep the rest of the backend's slots.
    pub fn max_in_flight_per_user(mut self, limit: usize) -> Self {
        self.max_in_flight_per_user = limit.max(1);
        self
    }

    /// Idle connections kept per backend host (default 32), and how long (default 90 s).
    pub fn pool(mut self, max_idle: usize, idle_timeout: Duration) -> Self {
        self.pool_max_idle = max_idle;
        self.pool_idle_timeout = idle_timeout;
        self
    }

    /// The largest response body passed on (default 64 MiB); a longer one is cut off (and one
    /// that announces a larger `Content-Length` gets 502).
    pub fn max_response_bytes(mut self, limit: u64) -> Self {
        self.max_response_bytes = limit;
        self
    }

    /// The user-context headers (default: every [`UserField`](super::UserField) under its
    /// default name).
    pub fn user_headers(mut self, headers: UserHeaders) -> Self {
        self.user_headers = headers;
        self
    }

    /// The issuer of the gateway's own authorization server, whose subjects name the provider
    /// the user signed in with (see [`UserField::Provider`](super::UserField::Provider)).
    pub fn own_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.own_issuer = Some(issuer.into());
        self
    }

    /// Never forwards `name` (e.g. an ingress header carrying the client's token).
    pub fn strip_request_header(mut self, name: HeaderName) -> Self {
        self.strip.push(name);
        self
    }

    /// Proves the gateway to the backend: every request carries `secret` in
    /// [`GATEWAY_SECRET_HEADER`](super::GATEWAY_SECRET_HEADER), which the backend's
    /// [`GatewayIdentityLayer::shared_secret`](super::GatewayIdentityLayer::shared_secret)
    /// checks. Whatever a client sends under that name is removed in any case.
    pub fn gateway_secret(mut self, secret: impl Into<String>) -> Self {
        self.gateway_secret = Some(secret.into());
        self
    }

    /// Binds stateful sessions to their user with `key`: clients get the backend's
    /// `Mcp-Session-Id` sealed with a MAC over the user (the request's [`AuthContext`]), the
    /// backend and the id; a request whose session id was not sealed for its user gets 404, the
    /// backend sees only its own ids. Gateway replicas given the same key accept each other's
    /// ids, so no sticky routing is needed. Off by default (ids pass unchanged).
    pub fn session_key(mut self, key: [u8; 32]) -> Self {
        self.session_key = Some(key);
        self
    }

    /// The proxy; fails on a backend URL that is not absolute `http`/`https` or carries
    /// credentials or a fragment.
    pub fn build(self) -> Result<McpProxy, ConfigError> {
        let invalid = |reason: &str| ConfigError::InvalidUrl {
            what: "backend",
            url: self.backend.clone(),
            reason: reason.into(),
        };
        let backend = url::Url::parse(&self.backend).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(backend.scheme(), "http" | "https") {
            return Err(invalid("the scheme must be http or https"));
        }
        if !backend.username().is_empty() || backend.password().is_some() {
            return Err(invalid("credentials in the URL are not allowed"));
        }
        if backend.fragment().is_some() {
            return Err(invalid("a fragment is not allowed"));
        }
        if self.max_response_bytes == 0
            || self.response_timeout.is_zero()
            || self.connect_timeout.is_zero()
        {
            return Err(ConfigError::InvalidServer(format!(
                "backend `{}`: timeouts and the response limit must be above zero",
                self.name
            )));
        }
        let gateway_secret = match self.gateway_secret {
            Some(secret) if secret.len() < 16 => {
                return Err(ConfigError::InvalidServer(
                    "the gateway secret must have 16 characters or more".into(),
                ));
            }
            Some(secret) => {
                let mut value = http::HeaderValue::from_str(&secret).map_err(|_| {
                    ConfigError::InvalidServer("the gateway secret must be visible ASCII".into())
                })?;
                // Never indexed by HTTP/2 header compression, never shown by `Debug`.
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        crate::validate::install_crypto_provider();
        let client = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .pool_max_idle_per_host(self.pool_max_idle)
            .pool_idle_timeout(self.pool_idle_timeout)
            .tcp_nodelay(true)
            // A backend is reached directly: no redirects, no proxy from the environment.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| ConfigError::HttpClient(e.to_string()))?;
        Ok(McpProxy {
            shared: Arc::new(Shared {
                name: self.name.into(),
                backend,
                client,
                flights: Flights::new(self.max_in_flight, self.max_in_flight_per_user),
                response_timeout: self.response_timeout,
                max_response_bytes: self.max_response_bytes,
                user_headers: self.user_headers,
                own_issuer: self.own_issuer.map(Into::into),
                strip: self.strip,
                gateway_secret,
                sessions: self.session_key.map(SessionSeal::new),
            }),
        })
    }
}

impl<B> Service<Request<B>> for McpProxy
where
    B: Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<LayerBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<LayerBody>, Infallible>>;

    #[inline]
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let shared = self.shared.clone();
        Box::pin(async move { Ok(shared.forward(request).await) })
    }
}

fn failure(status: StatusCode, message: &str) -> Response<LayerBody> {
    rpc_error(status, &Value::Null, code::INTERNAL_ERROR, message, None)
}

impl Shared {
    /// Replaces the client's sealed `Mcp-Session-Id` by the backend's own; `false` when the
    /// request must be refused.
    fn open_session(
        &self,
        seal: &SessionSeal,
        ctx: Option<&AuthContext>,
        opened: Option<&OpenedSession>,
        headers: &mut HeaderMap,
    ) -> bool {
        let mut ids = headers.get_all(&MCP_SESSION_ID).iter();
        let Some(outer) = ids.next() else {
            return true;
        };
        let inner = match (ids.next(), outer.to_str()) {
            // Opened by the session check inside the bearer layer: no second MAC.
            (None, _) if opened.is_some_and(|o| o.outer == outer) => {
                opened.map(|o| o.inner.clone())
            }
            (None, Ok(outer)) => seal
                .open(&self.name, ctx, outer)
                .and_then(|inner| http::HeaderValue::from_str(inner).ok()),
            _ => None,
        };
        match inner {
            Some(inner) => {
                headers.insert(MCP_SESSION_ID, inner);
                true
            }
            None => {
                tracing::warn!(target: audit::TARGET, decision = "deny", backend = %self.name, subject = ctx.map(|c| audit::Escaped(c.subject())).map(tracing::field::display), reason = "session not sealed for this principal", "session refused");
                false
            }
        }
    }

    async fn forward<B>(&self, request: Request<B>) -> Response<LayerBody>
    where
        B: Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        let (parts, body) = request.into_parts();
        let ctx = parts.extensions.get::<AuthContext>();
        let mut headers = parts.headers;
        strip_hop_by_hop(&mut headers);
        // Credentials stay here; the client recomputes the length and the host; and the
        // backend answers uncompressed, since the policy layer must read list answers.
        for name in [
            header::AUTHORIZATION,
            header::COOKIE,
            header::HOST,
            header::CONTENT_LENGTH,
            header::ACCEPT_ENCODING,
            super::GATEWAY_SECRET_HEADER,
            // What a client says about addresses is not evidence: a backend must not log or
            // trust a forged one.
            header::FORWARDED,
            HeaderName::from_static("x-forwarded-for"),
            HeaderName::from_static("x-forwarded-host"),
            HeaderName::from_static("x-forwarded-proto"),
            HeaderName::from_static("x-real-ip"),
        ] {
            headers.remove(name);
        }
        if let Some(secret) = &self.gateway_secret {
            headers.insert(super::GATEWAY_SECRET_HEADER, secret.clone());
        }
        if let Some(seal) = &self.sessions
            && !self.open_session(seal, ctx, parts.extensions.get(), &mut headers)
        {
            return rpc_error(
                StatusCode::NOT_FOUND,
                &Value::Null,
                code::INVALID_REQUEST,
                "no such session for this principal; initialize a new session",
                None,
            );
        }
        for name in &self.strip {
            headers.remove(name);
        }
        if let Err(why) = self
            .user_headers
            .apply(ctx, self.own_issuer.as_deref(), &mut headers)
        {
            tracing::warn!(target: audit::TARGET, backend = %self.name, reason = why, "request refused");
            return failure(StatusCode::BAD_REQUEST, why);
        }
        let mut url = self.backend.clone();
        match (self.backend.query(), parts.uri.query()) {
            (Some(own), Some(client)) => url.set_query(Some(&format!("{own}&{client}"))),
            (None, client) => url.set_query(client),
            (Some(_), None) => {}
        }
        let mut outgoing = reqwest::Request::new(parts.method, url);
        *outgoing.headers_mut() = headers;
        // A body of known, bounded size (what the policy layer hands on) goes as bytes, with a
        // Content-Length; anything else streams.
        let body = match body.size_hint().exact() {
            Some(len) if len <= MAX_BUFFERED_REQUEST => match body.collect().await {
                Ok(collected) => reqwest::Body::from(collected.to_bytes()),
                Err(_) => {
                    return failure(
                        StatusCode::BAD_REQUEST,
                        "the request body could not be read",
                    );
                }
            },
            _ => reqwest::Body::wrap(body),
        };
        *outgoing.body_mut() = Some(body);

        let started = tokio::time::Instant::now();
        let slot = match self.flights.enter(ctx, self.response_timeout).await {
            Ok(slot) => slot,
            Err(Busy::User) => {
                crate::metrics::count!(crate::metrics::REQUESTS, "layer" => "gateway", "decision" => "429", "reason" => "user_in_flight_limit");
                tracing::warn!(target: audit::TARGET, decision = "deny", backend = %self.name, subject = ctx.map(|c| audit::Escaped(c.subject())).map(tracing::field::display), reason = "too many requests in flight for this user", "request refused");
                let mut refusal = failure(
                    StatusCode::TOO_MANY_REQUESTS,
                    &format!(
                        "too many requests in flight to `{}`; retry later",
                        self.name
                    ),
                );
                refusal
                    .headers_mut()
                    .insert(header::RETRY_AFTER, http::HeaderValue::from_static("1"));
                return refusal;
            }
            Err(Busy::Backend) => {
                crate::metrics::count!(crate::metrics::REQUESTS, "layer" => "gateway", "decision" => "503", "reason" => "backend_in_flight_limit");
                tracing::warn!(target: audit::TARGET, backend = %self.name, "backend in-flight limit reached");
                return failure(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("the backend `{}` is busy; retry later", self.name),
                );
            }
        };
        let remaining = self.response_timeout.saturating_sub(started.elapsed());
        let response = match tokio::time::timeout(remaining, self.client.execute(outgoing)).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => {
                crate::metrics::backend_response(&self.name, "error");
                crate::metrics::count!(crate::metrics::REQUESTS, "layer" => "gateway", "decision" => "502", "reason" => "backend_unreachable");
                tracing::warn!(target: audit::TARGET, backend = %self.name, error = %e, connect = e.is_connect(), "backend request failed");
                return failure(
                    StatusCode::BAD_GATEWAY,
                    &format!("the backend `{}` could not be reached", self.name),
                );
            }
            Err(_) => {
                crate::metrics::backend_response(&self.name, "timeout");
                crate::metrics::count!(crate::metrics::REQUESTS, "layer" => "gateway", "decision" => "504", "reason" => "backend_timeout");
                tracing::warn!(target: audit::TARGET, backend = %self.name, timeout_ms = self.response_timeout.as_millis() as u64, "backend did not answer in time");
                return failure(
                    StatusCode::GATEWAY_TIMEOUT,
                    &format!("the backend `{}` did not answer in time", self.name),
                );
            }
        };
        let status = response.status();
        crate::metrics::backend_response(&self.name, crate::metrics::status_class(status));
        if matches!(
            status,
            StatusCode::UNAUTHORIZED | StatusCode::PROXY_AUTHENTICATION_REQUIRED
        ) || status.is_redirection()
        {
            // A redirect is not followed, nor passed on: its Location would show clients an
            // internal address.
            tracing::warn!(target: audit::TARGET, backend = %self.name, %status, "backend refused the gateway's request");
            return failure(
                StatusCode::BAD_GATEWAY,
                &format!("the backend `{}` refused the request", self.name),
            );
        }
        if response
            .content_length()
            .is_some_and(|len| len > self.max_response_bytes)
        {
            tracing::warn!(target: audit::TARGET, backend = %self.name, "backend response over the size limit");
            return failure(
                StatusCode::BAD_GATEWAY,
                &format!("the backend `{}` answered too much", self.name),
            );
        }
        let (mut parts, body) = http::Response::<reqwest::Body>::from(response).into_parts();
        strip_hop_by_hop(&mut parts.headers);
        if let Some(seal) = &self.sessions
            && let Some(inner) = parts.headers.get(&MCP_SESSION_ID)
        {
            let sealed = inner
                .to_str()
                .ok()
                .and_then(|inner| seal.seal(&self.name, ctx, inner))
                .and_then(|outer| http::HeaderValue::from_str(&outer).ok());
            match sealed {
                Some(outer) => {
                    parts.headers.insert(MCP_SESSION_ID, outer);
                }
                None => {
                    tracing::warn!(target: audit::TARGET, backend = %self.name, "backend sent an unusable Mcp-Session-Id");
                    return failure(
                        StatusCode::BAD_GATEWAY,
                        &format!("the backend `{}` answered badly", self.name),
                    );
                }
            }
        }
        parts.headers.remove(header::SET_COOKIE);
        parts.headers.remove(header::WWW_AUTHENTICATE);
        let body = Bounded::new(body, self.max_response_bytes, slot);
        Response::from_parts(parts, body.boxed_unsync())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backend_url_must_be_plain_http_or_https() {
        for bad in [
            "ftp://host/mcp",
            "http://user:pw@host/mcp",
            "http://host/mcp#x",
            "not a url",
        ] {
            assert!(McpProxy::builder("b", bad).build().is_err(), "{bad}");
        }
        assert!(
            McpProxy::builder("b", "https://host:8443/mcp")
                .build()
                .is_ok()
        );
    }
}
