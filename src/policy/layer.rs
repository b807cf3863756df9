use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::Body;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use serde_json::{Value, json};
use tower_layer::Layer;
use tower_service::Service;

use super::compiled::{Decision, ToolPolicy};
use super::filter::{ListFilter, ListKind, SseFilterBody};
use super::rules::Kind;
use crate::bearer::policy::AUDIT;
use crate::challenge::{BearerErrorCode, Challenge};
use crate::jsonrpc::{self, McpMessage, McpRequest};
use crate::validate::BoxFuture;
use crate::{AuthContext, ProtectedResource, Scopes};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Body of the policy service's responses.
pub type PolicyBody = UnsyncBoxBody<Bytes, BoxError>;

/// The default request body limit (rmcp's own default).
pub const DEFAULT_MAX_BODY: usize = 4 << 20;
/// The largest JSON list response rewritten in memory.
const MAX_LIST_RESPONSE: usize = 32 << 20;

/// JSON-RPC error code of a refusal by policy (implementation-defined server error range).
pub const FORBIDDEN_CODE: i64 = -32003;
/// JSON-RPC error code of a header that disagrees with the body (protocol revision 2026-07-28).
pub const HEADER_MISMATCH_CODE: i64 = -32020;

/// Applies [`ToolPolicyService`]; see the [module docs](crate::policy).
#[derive(Debug, Clone)]
pub struct ToolPolicyLayer {
    shared: Arc<Shared>,
}

#[derive(Debug, Clone)]
struct Shared {
    policy: ToolPolicy,
    resource: ProtectedResource,
    max_body: usize,
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
            }),
        }
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

fn json_response(status: StatusCode, body: &Value) -> Response<PolicyBody> {
    let mut response = Response::new(boxed(Full::new(Bytes::from(body.to_string()))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn rpc_error(
    status: StatusCode,
    id: &Value,
    code: i64,
    message: &str,
    data: Option<Value>,
) -> Response<PolicyBody> {
    let mut error = json!({ "code": code, "message": message });
    if let Some(data) = data {
        error["data"] = data;
    }
    json_response(
        status,
        &json!({ "jsonrpc": "2.0", "id": id, "error": error }),
    )
}

/// MCP methods that a case or Unicode variant must not imitate.
const POLICED_METHODS: [&str; 7] = [
    "tools/call",
    "tools/list",
    "resources/read",
    "resources/list",
    "resources/templates/list",
    "prompts/get",
    "prompts/list",
];

/// What one message needs.
enum Verdict {
    Allow,
    Refuse(Decision, &'static str, String),
    Invalid(&'static str),
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
            tracing::error!(target: AUDIT, "ToolPolicyLayer without an AuthContext: put it inside BearerLayer");
            return rpc_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &Value::Null,
                -32603,
                "authorization is misconfigured",
                None,
            );
        };
        let bytes = match Limited::new(body, self.max_body).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
                tracing::info!(target: AUDIT, decision = "deny", subject = ctx.subject(), reason = "body too large", "request refused");
                return rpc_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &Value::Null,
                    -32600,
                    &format!("request body exceeds {} bytes", self.max_body),
                    None,
                );
            }
            Err(_) => {
                return rpc_error(
                    StatusCode::BAD_REQUEST,
                    &Value::Null,
                    -32600,
                    "the request body could not be read",
                    None,
                );
            }
        };

        let mut filter = None;
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
                    -32600,
                    "Content-Type must be application/json",
                    None,
                );
            }
            let mcp = match jsonrpc::parse(&bytes) {
                Ok(mcp) => mcp,
                Err(e) => {
                    tracing::info!(target: AUDIT, decision = "deny", subject = ctx.subject(), reason = %e, "unparseable request refused");
                    return rpc_error(
                        StatusCode::BAD_REQUEST,
                        &Value::Null,
                        e.code(),
                        &e.to_string(),
                        None,
                    );
                }
            };
            if let Some(refusal) = self.check_headers(&parts.headers, &mcp) {
                return refusal;
            }
            if let Some(refusal) = self.judge(&mcp, &ctx) {
                return refusal;
            }
            let lists: Vec<(Value, ListKind)> = mcp
                .messages
                .iter()
                .filter(|m| m.is_request())
                .filter_map(|m| Some((m.id.clone()?, ListKind::of(m.method.as_deref()?)?)))
                .collect();
            if !lists.is_empty() {
                let negotiated = parts
                    .headers
                    .get("mcp-protocol-version")
                    .and_then(|v| v.to_str().ok())
                    .or_else(|| {
                        mcp.messages
                            .iter()
                            .find_map(|m| m.protocol_version.as_deref())
                    });
                filter = Some(ListFilter {
                    lists,
                    policy: self.policy.clone(),
                    ctx: ctx.clone(),
                    private: negotiated.is_some_and(|v| v >= "2026-07-28"),
                });
            }
            parts.extensions.insert(mcp);
        } else if parts.method == Method::GET || parts.method == Method::DELETE {
            let decision = self
                .policy
                .decide(Kind::Method, parts.method.as_str(), &ctx);
            if !decision.is_allowed() {
                return self.refuse(decision, &Value::Null, &ctx, parts.method.as_str(), "");
            }
        }

        let response = match inner
            .call(Request::from_parts(parts, Full::new(bytes)))
            .await
        {
            Ok(response) => response,
            Err(never) => match never {},
        };
        match filter {
            None => response.map(boxed),
            Some(filter) => filter_list_response(response, filter).await,
        }
    }

    /// `Mcp-Method` / `Mcp-Name` (revision 2026-07-28) never decide anything; a value that
    /// disagrees with the body is refused, so no intermediary can be fooled by it either.
    fn check_headers(
        &self,
        headers: &http::HeaderMap,
        mcp: &McpRequest,
    ) -> Option<Response<PolicyBody>> {
        let [message] = mcp.messages.as_slice() else {
            return None;
        };
        let id = message.id.clone().unwrap_or(Value::Null);
        let mismatch = |what: &str| {
            tracing::info!(target: AUDIT, decision = "deny", reason = what, "header mismatch");
            Some(rpc_error(
                StatusCode::BAD_REQUEST,
                &id,
                HEADER_MISMATCH_CODE,
                &format!("the {what} header does not match the request body"),
                None,
            ))
        };
        for value in headers.get_all("mcp-method") {
            if Some(value.as_bytes()) != message.method.as_deref().map(str::as_bytes) {
                return mismatch("Mcp-Method");
            }
        }
        for value in headers.get_all("mcp-name") {
            let decoded = decode_header_value(value.as_bytes());
            if decoded.as_deref() != message.target().map(str::as_bytes) {
                return mismatch("Mcp-Name");
            }
        }
        None
    }

    /// Judges every message; the whole request is refused if any message is.
    fn judge(&self, mcp: &McpRequest, ctx: &AuthContext) -> Option<Response<PolicyBody>> {
        let mut scopes: Vec<String> = Vec::new();
        let mut refused: Option<(Decision, &'static str, String, Value)> = None;
        for message in mcp.messages.iter().filter(|m| m.is_request()) {
            let id = message.id.clone().unwrap_or(Value::Null);
            match self.judge_one(message, ctx) {
                Verdict::Allow => {}
                Verdict::Invalid(reason) => {
                    tracing::info!(target: AUDIT, decision = "deny", subject = ctx.subject(), reason, "invalid request refused");
                    let id = if mcp.batch { Value::Null } else { id };
                    return Some(rpc_error(
                        StatusCode::BAD_REQUEST,
                        &id,
                        -32600,
                        reason,
                        None,
                    ));
                }
                Verdict::Refuse(decision, method, target) => {
                    if let Decision::InsufficientScope { scopes: needed } = &decision {
                        scopes.extend(needed.iter().map(str::to_owned));
                    }
                    // A forbidden element decides the answer; otherwise the scopes add up.
                    let forbidden = matches!(decision, Decision::Forbidden { .. });
                    if refused.is_none() || forbidden {
                        refused = Some((decision, method, target, id));
                    }
                }
            }
        }
        let (decision, method, target, id) = refused?;
        let id = if mcp.batch { Value::Null } else { id };
        let decision = match decision {
            Decision::InsufficientScope { .. } => Decision::InsufficientScope {
                scopes: Scopes::new(&scopes),
            },
            other => other,
        };
        Some(self.refuse(decision, &id, ctx, method, &target))
    }

    fn judge_one(&self, message: &McpMessage, ctx: &AuthContext) -> Verdict {
        let Some(method) = message.method.as_deref() else {
            return Verdict::Allow;
        };
        if !method.bytes().all(|b| b.is_ascii_graphic()) {
            return Verdict::Invalid("method names must be printable ASCII");
        }
        if method.bytes().any(|b| b.is_ascii_uppercase()) {
            let lower = method.to_ascii_lowercase();
            if POLICED_METHODS.contains(&lower.as_str()) || self.policy.has_method_rule(&lower) {
                return Verdict::Invalid("method names are case-sensitive");
            }
        }
        let decision = self.policy.decide(Kind::Method, method, ctx);
        if !decision.is_allowed() {
            return Verdict::Refuse(decision, static_method(method), String::new());
        }
        let (kind, target) = match method {
            "tools/call" => (Kind::Tool, message.name.as_deref()),
            "prompts/get" => (Kind::Prompt, message.name.as_deref()),
            "resources/read" => (Kind::Resource, message.uri.as_deref()),
            _ => return Verdict::Allow,
        };
        let Some(target) = target else {
            return Verdict::Invalid("the request names no tool, prompt or resource");
        };
        match self.policy.decide(kind, target, ctx) {
            Decision::Allow => {
                tracing::debug!(target: AUDIT, decision = "allow", subject = ctx.subject(), client_id = ctx.client_id(), method, tool = target, "operation allowed");
                Verdict::Allow
            }
            decision => Verdict::Refuse(decision, static_method(method), target.to_owned()),
        }
    }

    fn refuse(
        &self,
        decision: Decision,
        id: &Value,
        ctx: &AuthContext,
        method: &str,
        target: &str,
    ) -> Response<PolicyBody> {
        match decision {
            Decision::Allow => rpc_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                id,
                -32603,
                "internal error",
                None,
            ),
            Decision::InsufficientScope { scopes } => {
                tracing::info!(target: AUDIT, decision = "deny", subject = ctx.subject(), client_id = ctx.client_id(), method, tool = target, reason = "insufficient scope", required = %scopes, "operation refused");
                let description = if target.is_empty() {
                    format!("{method} requires the scopes: {scopes}")
                } else {
                    format!("{method} {target} requires the scopes: {scopes}")
                };
                let challenge = Challenge::new(self.resource.metadata_url())
                    .scope(&scopes)
                    .error(BearerErrorCode::InsufficientScope, &description)
                    .to_header_value();
                let data = json!({ "required_scopes": scopes.iter().collect::<Vec<_>>() });
                let mut response = rpc_error(
                    StatusCode::FORBIDDEN,
                    id,
                    FORBIDDEN_CODE,
                    &description,
                    Some(data),
                );
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, challenge);
                response
            }
            Decision::Forbidden { reason } => {
                tracing::info!(target: AUDIT, decision = "deny", subject = ctx.subject(), client_id = ctx.client_id(), method, tool = target, reason, "operation refused");
                // No challenge: no scope would help, so the client must not step up.
                let message = if target.is_empty() {
                    format!("{method} is not permitted: {reason}")
                } else {
                    format!("{method} {target} is not permitted: {reason}")
                };
                rpc_error(StatusCode::FORBIDDEN, id, FORBIDDEN_CODE, &message, None)
            }
        }
    }
}

fn static_method(method: &str) -> &'static str {
    POLICED_METHODS
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("method")
}

/// SEP-2243 header values: plain, or `=?base64?…?=` for non-ASCII.
fn decode_header_value(value: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine;
    match value
        .strip_prefix(b"=?base64?")
        .and_then(|v| v.strip_suffix(b"?="))
    {
        Some(encoded) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok(),
        None => Some(value.to_vec()),
    }
}

async fn filter_list_response<ResBody>(
    response: Response<ResBody>,
    filter: ListFilter,
) -> Response<PolicyBody>
where
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let (mut parts, body) = response.into_parts();
    if content_type.starts_with("text/event-stream") {
        parts.headers.remove(header::CONTENT_LENGTH);
        return Response::from_parts(parts, boxed(SseFilterBody::new(body, filter)));
    }
    if !content_type.starts_with("application/json") {
        return Response::from_parts(parts, boxed(body));
    }
    let bytes = match Limited::new(body, MAX_LIST_RESPONSE).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            // Fail closed: an unfiltered list must not reach the client.
            return rpc_error(
                StatusCode::BAD_GATEWAY,
                &Value::Null,
                -32603,
                "the list response could not be filtered",
                None,
            );
        }
    };
    let rewritten = match serde_json::from_slice::<Value>(&bytes) {
        Ok(mut message) => {
            if filter.apply(&mut message) {
                Bytes::from(message.to_string())
            } else {
                bytes
            }
        }
        Err(_) => bytes,
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, boxed(Full::new(rewritten)))
}
