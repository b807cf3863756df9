//! [`AtagLayer`]: injects users' third-party tokens into the tool calls that need them, or
//! challenges the client to connect the service.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, header};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tower_layer::Layer;
use tower_service::Service;

use super::ExternalToken;
use super::state::AtagState;
use crate::AuthContext;
use crate::BoxFuture;
use crate::audit;
use crate::jsonrpc::McpRequest;
use crate::policy::ToolPolicy;
use crate::wire::{MCP_PROTOCOL_VERSION, MCP_SESSION_ID, code, json_response, rpc_error};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Body of the ATAG service's responses.
pub type AtagBody = crate::wire::LayerBody;

/// JSON-RPC error of 2025-11-25: URL elicitation required.
pub const URL_ELICITATION_REQUIRED: i64 = code::URL_ELICITATION_REQUIRED;

/// How a client learns that a tool needs a service the user has not connected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChallengeMode {
    /// MCP URL elicitation where the client declared it (the `-32042` error for 2025-11-25
    /// sessions whose `initialize` declared `elicitation.url`; an `input_required` result for
    /// 2026-07-28 requests declaring it in `_meta`), a tool error otherwise.
    #[default]
    Auto,
    /// Always a `tools/call` result with `isError: true` whose text carries the connect URL:
    /// every client can show it.
    ToolError,
    /// The ATAG pattern's own challenge: HTTP 401 with a JSON body naming the service and its
    /// `auth_url`, and `WWW-Authenticate: ATAG …`. For ATAG-aware gateways and agents only:
    /// spec MCP clients answer any 401 by authorizing again with the MCP server.
    Atag401,
}

/// Applies [`AtagService`]. Made by [`Atag::layer`](super::Atag::layer); place it inside
/// the bearer and policy layers (it reads the `AuthContext` and the parsed envelope).
#[derive(Debug, Clone)]
pub struct AtagLayer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Arc<AtagState>,
    policy: ToolPolicy,
    mode: ChallengeMode,
    forward_header: Option<HeaderName>,
}

impl AtagLayer {
    pub(crate) fn new(state: Arc<AtagState>, policy: ToolPolicy) -> Self {
        policy.serve_services();
        AtagLayer {
            shared: Arc::new(Shared {
                state,
                policy,
                mode: ChallengeMode::Auto,
                forward_header: None,
            }),
        }
    }

    fn with(mut self, change: impl FnOnce(&mut Shared)) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            change(shared);
        } else {
            let mut shared = Shared {
                state: self.shared.state.clone(),
                policy: self.shared.policy.clone(),
                mode: self.shared.mode,
                forward_header: self.shared.forward_header.clone(),
            };
            change(&mut shared);
            self.shared = Arc::new(shared);
        }
        self
    }

    /// How clients are challenged (default [`ChallengeMode::Auto`]).
    #[must_use]
    pub fn mode(self, mode: ChallengeMode) -> Self {
        self.with(|s| s.mode = mode)
    }

    /// Also puts the token in this request header (`Bearer …`), for services that proxy the
    /// call onwards. Any such header a client sends is removed from every request.
    #[must_use]
    pub fn forward_header(self, name: HeaderName) -> Self {
        self.with(|s| s.forward_header = Some(name))
    }
}

impl<S> Layer<S> for AtagLayer {
    type Service = AtagService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AtagService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// Middleware injecting third-party tokens; see [`AtagLayer`] and the [module docs](super).
#[derive(Debug, Clone)]
pub struct AtagService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> AtagService<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

/// What a request needs from this layer.
enum Plan {
    Pass,
    /// The standalone SSE stream of a session that declared URL elicitation: completion
    /// notifications join it.
    Stream(String),
    /// An `initialize` declaring URL elicitation: remember its session.
    Initialize,
    Call {
        id: Value,
        tool: String,
        service: String,
        scopes: Vec<String>,
        request_state: Option<String>,
        /// The client's answer to our connect prompt (2026-07-28 `inputResponses`).
        answer: Option<String>,
        modern: bool,
        url_elicitation: bool,
        session: Option<String>,
    },
    /// A batch holding a call that needs a service.
    Batch,
    /// No parsed envelope on a POST: the policy layer is missing.
    Misconfigured,
}

impl Shared {
    fn plan<B>(&self, request: &Request<B>) -> Plan {
        let session = request
            .headers()
            .get(&MCP_SESSION_ID)
            .and_then(|v| v.to_str().ok());
        let Some(mcp) = request.extensions().get::<McpRequest>() else {
            return match (request.method(), session) {
                (&http::Method::POST, _) => Plan::Misconfigured,
                (&http::Method::GET, Some(id)) if self.state.url_sessions.contains_key(id) => {
                    Plan::Stream(id.to_owned())
                }
                _ => Plan::Pass,
            };
        };
        let mut needing = mcp.messages.iter().filter_map(|m| {
            let tool = m
                .name
                .as_deref()
                .filter(|_| m.method.as_deref() == Some("tools/call"))?;
            Some((m, tool, self.policy.service_need(tool)?))
        });
        let Some((message, tool, need)) = needing.next() else {
            let initialize = mcp
                .messages
                .iter()
                .any(|m| m.method.as_deref() == Some("initialize") && m.url_elicitation);
            return if initialize {
                Plan::Initialize
            } else {
                Plan::Pass
            };
        };
        if mcp.batch {
            return Plan::Batch;
        }
        let header_version = request
            .headers()
            .get(&MCP_PROTOCOL_VERSION)
            .and_then(|v| v.to_str().ok());
        let version = message.protocol_version.as_deref().or(header_version);
        let modern = version.is_some_and(|v| v >= "2026-07-28");
        let session_declared = version == Some("2025-11-25")
            && session.is_some_and(|id| self.state.url_sessions.contains_key(id));
        Plan::Call {
            id: message.id.clone().unwrap_or(Value::Null),
            tool: tool.to_owned(),
            service: need.service.clone(),
            scopes: need.scopes.clone(),
            // Only our own states: a tool's own multi-round-trip state passes untouched.
            request_state: message
                .request_state
                .as_ref()
                .filter(|s| s.starts_with(super::state::REQUEST_STATE_PREFIX))
                .cloned(),
            answer: message
                .input_actions
                .iter()
                .filter(|_| modern)
                .find(|(key, _)| key.strip_prefix(INPUT_KEY_PREFIX) == Some(&need.service))
                .map(|(_, action)| action.clone()),
            modern,
            url_elicitation: if modern {
                message.url_elicitation
            } else {
                session_declared
            },
            session: session.filter(|_| session_declared).map(str::to_owned),
        }
    }
}

/// The prefix of our connect prompt's key among a 2026-07-28 result's `inputRequests`.
const INPUT_KEY_PREFIX: &str = "connect_";

/// The key of our connect prompt for `service`.
fn input_key(service: &str) -> String {
    format!("{INPUT_KEY_PREFIX}{service}")
}

impl<S, ResBody> Service<Request<Full<Bytes>>> for AtagService<S>
where
    S: Service<Request<Full<Bytes>>, Response = Response<ResBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<AtagBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<AtagBody>, Infallible>>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Full<Bytes>>) -> Self::Future {
        // Whatever a client sent in the forwarding header is never passed on as ours.
        if let Some(name) = &self.shared.forward_header {
            request.headers_mut().remove(name);
        }
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        Box::pin(async move {
            let boxed = |r: Response<ResBody>| r.map(|b| b.map_err(Into::into).boxed_unsync());
            match shared.plan(&request) {
                Plan::Pass => Ok(boxed(inner.call(request).await?)),
                Plan::Stream(session) => {
                    let response = inner.call(request).await?;
                    let is_sse = response
                        .headers()
                        .get(header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|v| v.starts_with("text/event-stream"));
                    if !response.status().is_success() || !is_sse {
                        return Ok(boxed(response));
                    }
                    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
                    shared.state.streams.insert(session, sender);
                    Ok(response.map(|body| {
                        super::stream::JoinedSse::new(body, receiver)
                            .map_err(Into::into)
                            .boxed_unsync()
                    }))
                }
                Plan::Initialize => {
                    let response = inner.call(request).await?;
                    if let Some(id) = response
                        .headers()
                        .get(&MCP_SESSION_ID)
                        .and_then(|v| v.to_str().ok())
                    {
                        shared.state.url_sessions.insert(id.to_owned(), ());
                    }
                    Ok(boxed(response))
                }
                Plan::Batch => Ok(rpc_error(
                    StatusCode::BAD_REQUEST,
                    &Value::Null,
                    code::INVALID_REQUEST,
                    "calls of tools that need a connected service cannot be batched",
                    None,
                )),
                Plan::Misconfigured => {
                    tracing::error!(
                        "AtagLayer found no parsed MCP request: put it inside the ToolPolicyLayer"
                    );
                    Ok(rpc_error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &Value::Null,
                        code::INTERNAL_ERROR,
                        "server misconfigured",
                        None,
                    ))
                }
                Plan::Call {
                    id,
                    tool,
                    service,
                    scopes,
                    request_state,
                    answer,
                    modern,
                    url_elicitation,
                    session,
                } => {
                    let call = Call {
                        shared: &shared,
                        id,
                        tool,
                        service,
                        scopes,
                        answer,
                        modern,
                        url_elicitation,
                        session,
                    };
                    match call.prepare(request, request_state.as_deref()).await {
                        Ok(request) => Ok(boxed(inner.call(request).await?)),
                        Err(response) => Ok(response),
                    }
                }
            }
        })
    }
}

/// One `tools/call` of a tool that needs a service.
struct Call<'a> {
    shared: &'a Shared,
    id: Value,
    tool: String,
    service: String,
    scopes: Vec<String>,
    answer: Option<String>,
    modern: bool,
    url_elicitation: bool,
    session: Option<String>,
}

impl Call<'_> {
    /// The request with the token injected, or the response to send instead.
    async fn prepare(
        &self,
        mut request: Request<Full<Bytes>>,
        request_state: Option<&str>,
    ) -> Result<Request<Full<Bytes>>, Response<AtagBody>> {
        let state = &self.shared.state;
        let Some(ctx) = request.extensions().get::<AuthContext>().cloned() else {
            tracing::error!("AtagLayer found no AuthContext: put it inside the BearerLayer");
            return Err(rpc_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &self.id,
                code::INTERNAL_ERROR,
                "server misconfigured",
                None,
            ));
        };
        let Some(service) = state.services.get(&self.service) else {
            return Err(rpc_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &self.id,
                code::INTERNAL_ERROR,
                "unknown service",
                None,
            ));
        };
        // An echoed requestState is checked before anything else: a forged, foreign, expired
        // or replayed one is refused even if the user has connected meanwhile.
        if let Some(sealed) = request_state
            && let Err(refusal) = state
                .check_request_state(
                    sealed,
                    ctx.subject(),
                    ctx.client_id(),
                    &service.id,
                    &self.tool,
                )
                .await
        {
            tracing::warn!(target: audit::TARGET, user = ctx.subject(), tool = %crate::audit::Escaped(&self.tool), reason = refusal.message(), "requestState refused");
            return Err(rpc_error(
                StatusCode::OK,
                &self.id,
                code::INVALID_PARAMS,
                refusal.message(),
                None,
            ));
        }
        match state.token_for(ctx.subject(), service, &self.scopes).await {
            Ok(Some(tokens)) => {
                if let Some(name) = &self.shared.forward_header
                    && let Ok(value) =
                        HeaderValue::from_str(&format!("Bearer {}", tokens.access_token))
                {
                    let mut value = value;
                    value.set_sensitive(true);
                    request.headers_mut().insert(name.clone(), value);
                }
                request
                    .extensions_mut()
                    .insert(ExternalToken::new(&service.id, &tokens));
                crate::metrics::atag_event(&service.id, "injected");
                Ok(request)
            }
            // The person said no to the prompt for this request: the call ends here, with a
            // result that says so, instead of the same prompt again (the client would loop
            // until it gives up). A later call asks again.
            Ok(None) if matches!(self.answer.as_deref(), Some("decline" | "cancel")) => {
                let answer = self.answer.as_deref().unwrap_or_default();
                tracing::info!(target: audit::TARGET, user = ctx.subject(), service = %crate::audit::Escaped(&service.id), tool = %crate::audit::Escaped(&self.tool), answer, "third-party connection declined");
                let how = if answer == "cancel" {
                    "cancelled"
                } else {
                    "declined"
                };
                Err(self.tool_error(&format!(
                    "Connecting your {} account was {how}, so {} did not run. Call it again to be asked again.",
                    service.name(),
                    self.tool
                )))
            }
            Ok(None) => {
                crate::metrics::atag_event(&service.id, "challenge");
                Err(self.challenge(&ctx, service).await)
            }
            Err(e) => {
                crate::metrics::atag_event(&service.id, "vault_error");
                tracing::warn!(target: audit::TARGET, service = %crate::audit::Escaped(&service.id), error = %crate::audit::Escaped(&e), "third-party token unavailable");
                Err(rpc_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &self.id,
                    code::INTERNAL_ERROR,
                    &format!("{} is unavailable; try again later", service.name()),
                    None,
                ))
            }
        }
    }

    async fn challenge(
        &self,
        ctx: &AuthContext,
        service: &super::ExternalService,
    ) -> Response<AtagBody> {
        let state = &self.shared.state;
        let (url, elicitation) = match state
            .connect_link(
                ctx.subject(),
                ctx.client_id(),
                self.session.as_deref(),
                service,
                &self.scopes,
            )
            .await
        {
            Ok(link) => link,
            Err(e) => {
                return rpc_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &self.id,
                    code::INTERNAL_ERROR,
                    &e.to_string(),
                    None,
                );
            }
        };
        tracing::info!(target: audit::TARGET, user = ctx.subject(), service = %crate::audit::Escaped(&service.id), tool = %crate::audit::Escaped(&self.tool), "third-party connection required");
        let name = service.name();
        let message = format!(
            "Connect your {name} account so that {} can act for you.",
            self.tool
        );
        let mode = match self.shared.mode {
            ChallengeMode::Auto if self.url_elicitation => {
                if self.modern {
                    Mode::InputRequired
                } else {
                    Mode::Elicitation
                }
            }
            ChallengeMode::Atag401 => Mode::Atag401,
            _ => Mode::ToolError,
        };
        match mode {
            Mode::Elicitation => json_response(
                StatusCode::OK,
                &json!({"jsonrpc": "2.0", "id": self.id, "error": {
                    "code": code::URL_ELICITATION_REQUIRED,
                    "message": format!("{name} authorization required"),
                    "data": {"elicitations": [{
                        "mode": "url", "elicitationId": elicitation, "url": url, "message": message,
                    }]},
                }}),
            ),
            Mode::InputRequired => {
                let Some(request_state) =
                    state.request_state(ctx.subject(), ctx.client_id(), &service.id, &self.tool)
                else {
                    return rpc_error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &self.id,
                        code::INTERNAL_ERROR,
                        "cannot seal the request state",
                        None,
                    );
                };
                json_response(
                    StatusCode::OK,
                    &json!({"jsonrpc": "2.0", "id": self.id, "result": {
                        "resultType": "input_required",
                        "inputRequests": {
                            input_key(&service.id): {
                                "method": "elicitation/create",
                                "params": {"mode": "url", "url": url, "message": message},
                            },
                        },
                        "requestState": request_state,
                    }}),
                )
            }
            Mode::Atag401 => {
                let mut response = json_response(
                    StatusCode::UNAUTHORIZED,
                    &json!({
                        "error": "service_authorization_required",
                        "error_description": message,
                        "service": service.id, "auth_url": url,
                    }),
                );
                let challenge = format!(
                    "ATAG realm=\"{}\", service=\"{}\", auth_url=\"{url}\"",
                    state.urls.issuer(),
                    service.id
                );
                if let Ok(value) = HeaderValue::from_str(&challenge) {
                    response
                        .headers_mut()
                        .insert(header::WWW_AUTHENTICATE, value);
                }
                response
            }
            Mode::ToolError => self.tool_error(&format!(
                "{message} Open this link in your browser, approve, then call {} again: {url}",
                self.tool
            )),
        }
    }

    /// A `tools/call` result with `isError` and `text`.
    fn tool_error(&self, text: &str) -> Response<AtagBody> {
        crate::wire::tool_error(&self.id, text, self.modern)
    }
}

enum Mode {
    Elicitation,
    InputRequired,
    Atag401,
    ToolError,
}
