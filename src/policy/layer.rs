use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::Body;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use serde_json::Value;
use tower_layer::Layer;
use tower_service::Service;

use super::compiled::ToolPolicy;
use super::filter::{ListFilter, MAX_FILTERED, SseFilterBody, may_hold_list};
use super::judge::{Refusal, with_required};
use super::rules::Kind;
use crate::BoxFuture;
use crate::audit;
use crate::jsonrpc::{self};
use crate::wire::{BoxError, MCP_PROTOCOL_VERSION, code, rpc_error};
use crate::{AuthContext, ProtectedResource};

/// Body of the policy service's responses.
pub type PolicyBody = crate::wire::LayerBody;

/// The default request body limit (rmcp's own default).
pub const DEFAULT_MAX_BODY: usize = 4 << 20;

/// JSON-RPC error code of a refusal by policy (implementation-defined server error range).
pub const FORBIDDEN_CODE: i64 = code::FORBIDDEN;
/// JSON-RPC error code of a header that disagrees with the body (protocol revision 2026-07-28).
pub const HEADER_MISMATCH_CODE: i64 = code::HEADER_MISMATCH;

/// Applies [`ToolPolicyService`]; see the [module docs](crate::policy).
#[derive(Debug, Clone)]
pub struct ToolPolicyLayer {
    shared: Arc<Shared>,
}

#[derive(Debug, Clone)]
pub(super) struct Shared {
    pub(super) policy: ToolPolicy,
    pub(super) resource: ProtectedResource,
    pub(super) max_body: usize,
    /// Tool-call limits per principal.
    #[cfg(feature = "rate-limit")]
    pub(super) limits: Option<Arc<super::limits::Limiter>>,
    /// Where the policy comes from when it can be replaced while serving.
    #[cfg(feature = "config")]
    pub(super) reload: Option<super::PolicyHandle>,
}

impl ToolPolicyLayer {
    /// Enforces `policy` on requests to `resource` (whose metadata URL the step-up challenges
    /// name). Place it inside the bearer layer: it needs the `AuthContext`.
    pub fn new(policy: ToolPolicy, resource: ProtectedResource) -> Self {
        ToolPolicyLayer {
            shared: Arc::new(Shared {
                policy,
                resource,
                max_body: DEFAULT_MAX_BODY,
                #[cfg(feature = "rate-limit")]
                limits: None,
                #[cfg(feature = "config")]
                reload: None,
            }),
        }
    }

    /// Enforces whatever policy `handle` holds when each request arrives.
    #[cfg(feature = "config")]
    pub(crate) fn reloadable(handle: super::PolicyHandle, resource: ProtectedResource) -> Self {
        let mut layer = ToolPolicyLayer::new(handle.current(), resource);
        if let Some(shared) = Arc::get_mut(&mut layer.shared) {
            shared.reload = Some(handle);
        }
        layer
    }

    /// Limits on tool calls per subject, client, or subject and tool (see [`RateLimits`](super::RateLimits)).
    #[cfg(feature = "rate-limit")]
    #[must_use]
    pub fn rate_limits(mut self, limits: super::RateLimits) -> Self {
        Arc::make_mut(&mut self.shared).limits = limits.build();
        self
    }

    /// The largest request body buffered (default 4 MiB); larger ones get 413.
    #[must_use]
    pub fn max_body_bytes(mut self, limit: usize) -> Self {
        Arc::make_mut(&mut self.shared).max_body = limit;
        self
    }
}

impl ToolPolicy {
    /// The layer enforcing this policy on `resource`.
    pub fn layer(&self, resource: &ProtectedResource) -> ToolPolicyLayer {
        ToolPolicyLayer::new(self.clone(), resource.clone())
    }
}

impl<S> Layer<S> for ToolPolicyLayer {
    type Service = ToolPolicyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ToolPolicyService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// Middleware enforcing a [`ToolPolicy`] on MCP requests; see the [module docs](crate::policy).
#[derive(Debug, Clone)]
pub struct ToolPolicyService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> ToolPolicyService<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B, ResBody> Service<Request<B>> for ToolPolicyService<S>
where
    S: Service<Request<Full<Bytes>>, Response = Response<ResBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<PolicyBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<PolicyBody>, Infallible>>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        #[cfg(feature = "config")]
        if let Some(handle) = &self.shared.reload {
            // One whole policy for the whole request, whatever is swapped meanwhile.
            let shared = Shared {
                policy: handle.current(),
                resource: self.shared.resource.clone(),
                max_body: self.shared.max_body,
                #[cfg(feature = "rate-limit")]
                limits: self.shared.limits.clone(),
                reload: None,
            };
            return Box::pin(async move { Ok(shared.handle(request, inner).await) });
        }
        let shared = self.shared.clone();
        Box::pin(async move { Ok(shared.handle(request, inner).await) })
    }
}

fn boxed<B>(body: B) -> PolicyBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

impl Shared {
    async fn handle<S, B, ResBody>(&self, request: Request<B>, mut inner: S) -> Response<PolicyBody>
    where
        S: Service<Request<Full<Bytes>>, Response = Response<ResBody>, Error = Infallible>,
        B: Body<Data = Bytes>,
        B::Error: Into<BoxError>,
        ResBody: Body<Data = Bytes> + Send + 'static,
        ResBody::Error: Into<BoxError>,
    {
        let (mut parts, body) = request.into_parts();
        let Some(ctx) = parts.extensions.get::<AuthContext>().cloned() else {
            // Fail closed: the policy cannot judge an unauthenticated request.
            tracing::error!(target: audit::TARGET, "ToolPolicyLayer without an AuthContext: put it inside BearerLayer");
            return rpc_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &Value::Null,
                code::INTERNAL_ERROR,
                "authorization is misconfigured",
                None,
            );
        };
        if ![Method::POST, Method::GET, Method::DELETE].contains(&parts.method) {
            let mut response = rpc_error(
                StatusCode::METHOD_NOT_ALLOWED,
                &Value::Null,
                code::INVALID_REQUEST,
                "method not allowed",
                None,
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, POST, DELETE"));
            return response;
        }
        let bytes = match Limited::new(body, self.max_body).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
                crate::metrics::count!(crate::metrics::REQUESTS, "layer" => "policy", "decision" => "413", "reason" => "body_too_large");
                tracing::info!(target: audit::TARGET, decision = "deny", subject = ctx.subject(), client_id = ctx.client_id(), reason = "body too large", "request refused");
                return rpc_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &Value::Null,
                    code::INVALID_REQUEST,
                    &format!("request body exceeds {} bytes", self.max_body),
                    None,
                );
            }
            Err(_) => {
                return rpc_error(
                    StatusCode::BAD_REQUEST,
                    &Value::Null,
                    code::INVALID_REQUEST,
                    "the request body could not be read",
                    None,
                );
            }
        };

        // Whether a JSON answer could carry a list result the filter must see; GET and DELETE
        // answer with streams, which are always filtered.
        let mut json_may_list = true;
        let mut negotiated = parts
            .headers
            .get(&MCP_PROTOCOL_VERSION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if parts.method == Method::POST {
            let is_json = parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(';').next())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
            if !is_json {
                return rpc_error(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    &Value::Null,
                    code::INVALID_REQUEST,
                    "Content-Type must be application/json",
                    None,
                );
            }
            let mcp = match jsonrpc::parse(&bytes) {
                Ok(mcp) => mcp,
                Err(e) => {
                    crate::metrics::count!(crate::metrics::REQUESTS, "layer" => "policy", "decision" => "400", "reason" => "bad_json_rpc");
                    tracing::info!(target: audit::TARGET, decision = "deny", subject = ctx.subject(), client_id = ctx.client_id(), reason = %crate::audit::Escaped(&e), "unparseable request refused");
                    return rpc_error(
                        StatusCode::BAD_REQUEST,
                        &Value::Null,
                        e.code(),
                        &e.to_string(),
                        None,
                    );
                }
            };
            if let Some(refusal) = self.check_headers(&parts.headers, &mcp, &ctx) {
                return refusal;
            }
            if let Some(refusal) = self.judge(&mcp, &ctx, &parts.extensions) {
                return refusal;
            }
            #[cfg(feature = "rate-limit")]
            if let Some(limiter) = &self.limits
                && let Err(wait) = limiter.check(&mcp, &ctx)
            {
                return rate_limited(&mcp, &ctx, wait);
            }
            if negotiated.is_none() {
                negotiated = mcp.messages.iter().find_map(|m| m.protocol_version.clone());
            }
            json_may_list = mcp.messages.iter().any(|m| !answer_never_lists(m));
            parts.extensions.insert(mcp);
            crate::metrics::count!(crate::metrics::REQUESTS, "layer" => "policy", "decision" => "allowed", "reason" => "");
        } else {
            let decision = self
                .policy
                .decide(Kind::Method, parts.method.as_str(), &ctx);
            if let Some(refusal) = Refusal::of(decision) {
                let refusal = with_required(refusal, &parts.extensions);
                return self.refuse(refusal, &Value::Null, &ctx, parts.method.as_str(), "");
            }
            crate::metrics::count!(crate::metrics::REQUESTS, "layer" => "policy", "decision" => "allowed", "reason" => "");
            tracing::debug!(target: audit::TARGET, decision = "allow", subject = ctx.subject(), client_id = ctx.client_id(), method = parts.method.as_str(), "operation allowed");
        }

        let filter = ListFilter {
            policy: self.policy.clone(),
            ctx,
            private: negotiated.as_deref().is_some_and(|v| v >= "2026-07-28"),
        };
        let response = match inner
            .call(Request::from_parts(parts, Full::new(bytes)))
            .await
        {
            Ok(response) => response,
            Err(never) => match never {},
        };
        filter_lists(response, filter, json_may_list).await
    }
}

/// HTTP 429 with `Retry-After` (whole seconds, at least 1) and a JSON-RPC error the SDKs show.
#[cfg(feature = "rate-limit")]
fn rate_limited(
    request: &jsonrpc::McpRequest,
    ctx: &AuthContext,
    wait: std::time::Duration,
) -> Response<PolicyBody> {
    crate::metrics::count!(crate::metrics::REQUESTS, "layer" => "policy", "decision" => "429", "reason" => "rate_limited");
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let seconds = seconds.max(1);
    tracing::info!(target: audit::TARGET, decision = "deny", subject = ctx.subject(), client_id = ctx.client_id(), reason = "rate limited", retry_after = seconds, "request refused");
    let id = match request.messages.as_slice() {
        [one] => one.id.clone().unwrap_or(Value::Null),
        _ => Value::Null,
    };
    let mut response = rpc_error(
        StatusCode::TOO_MANY_REQUESTS,
        &id,
        code::RATE_LIMITED,
        &format!("too many tool calls; retry in {seconds} s"),
        Some(serde_json::json!({ "retry_after": seconds })),
    );
    if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// Whether the answer to `message` is, by the MCP schema, never a list result: a tool's output,
/// a prompt, a resource's contents, completions, a ping. Everything else (the list methods,
/// `tasks/result`, methods this layer does not know, client responses) is filtered.
fn answer_never_lists(message: &jsonrpc::McpMessage) -> bool {
    matches!(
        message.method.as_deref(),
        Some("tools/call" | "prompts/get" | "resources/read" | "completion/complete" | "ping")
    )
}

/// Filters list results out of every JSON or SSE response (see [`super::filter`]): SSE as it
/// streams, JSON once collected, unless `json_may_list` says no request in it can be answered
/// with a list (then a JSON answer streams through untouched, however large). A body the
/// filter cannot read (compressed, or beyond the size cap) is refused rather than passed on.
async fn filter_lists<ResBody>(
    response: Response<ResBody>,
    filter: ListFilter,
    json_may_list: bool,
) -> Response<PolicyBody>
where
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map_or(&b""[..], HeaderValue::as_bytes);
    let starts_with = |prefix: &str| {
        content_type
            .get(..prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
    };
    let is_sse = starts_with("text/event-stream");
    let is_json = starts_with("application/json");
    let filtered = is_sse || (is_json && json_may_list);
    if !filtered {
        return response.map(boxed);
    }
    let encoded = response
        .headers()
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    if encoded {
        return rpc_error(
            StatusCode::BAD_GATEWAY,
            &Value::Null,
            code::INTERNAL_ERROR,
            "encoded responses cannot be filtered; put compression outside the policy layer",
            None,
        );
    }
    let (mut parts, body) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    if is_sse {
        return Response::from_parts(parts, boxed(SseFilterBody::new(body, filter)));
    }
    let bytes = match Limited::new(body, MAX_FILTERED).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return rpc_error(
                StatusCode::BAD_GATEWAY,
                &Value::Null,
                code::INTERNAL_ERROR,
                "the response could not be filtered",
                None,
            );
        }
    };
    if !may_hold_list(&bytes) {
        return Response::from_parts(parts, boxed(Full::new(bytes)));
    }
    let rewritten = match serde_json::from_slice::<Value>(&bytes) {
        Ok(mut message) => {
            if filter.apply(&mut message) {
                Bytes::from(message.to_string())
            } else {
                bytes
            }
        }
        // It may hold a list we cannot see into: refused, never passed unfiltered.
        Err(_) => {
            tracing::warn!(target: crate::audit::TARGET, decision = "deny", "an unparseable response that may hold a list was refused");
            return rpc_error(
                StatusCode::BAD_GATEWAY,
                &Value::Null,
                code::INTERNAL_ERROR,
                "the response could not be filtered",
                None,
            );
        }
    };
    Response::from_parts(parts, boxed(Full::new(rewritten)))
}
