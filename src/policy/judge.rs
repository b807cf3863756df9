//! What the policy layer decides about one parsed request: the methods and targets it names,
//! the `Mcp-Method`/`Mcp-Name` headers against the body, and the refusal (one challenge naming
//! every scope the operation needs).

use http::{Response, StatusCode, header};
use serde_json::{Value, json};

use super::compiled::Decision;
use super::layer::{PolicyBody, Shared};
use super::rules::Kind;
use crate::audit;
use crate::challenge::{BearerErrorCode, Challenge};
use crate::jsonrpc::{McpMessage, McpRequest};
use crate::wire::{code, rpc_error, tool_error};
use crate::{AuthContext, RequiredScopes, Scopes};

/// The longest tool or prompt name judged (MCP names are at most 128 characters).
const MAX_NAME: usize = 256;
/// The longest resource URI judged.
const MAX_URI: usize = 4096;

/// MCP methods that a case variant must not imitate.
const POLICED_METHODS: [&str; 13] = [
    "tools/call",
    "tools/list",
    "resources/read",
    "resources/list",
    "resources/templates/list",
    "resources/subscribe",
    "resources/unsubscribe",
    "resources/directory/read",
    "prompts/get",
    "prompts/list",
    "completion/complete",
    "skills/get",
    "subscriptions/listen",
];

/// The operation a message performs on a tool, prompt or resource, if any.
fn target_of<'m>(
    message: &'m McpMessage,
    method: &str,
) -> Result<Option<(Kind, &'m str)>, &'static str> {
    let named = |kind, value: Option<&'m String>| {
        value
            .map(|v| Some((kind, v.as_str())))
            .ok_or("the request names no tool, prompt or resource")
    };
    match method {
        "tools/call" => named(Kind::Tool, message.name.as_ref()),
        "prompts/get" => named(Kind::Prompt, message.name.as_ref()),
        // Everything that reads, lists below, watches or completes a resource is judged as
        // reading it: `skills/get` and `resources/directory/read` serve resource content too.
        "resources/read"
        | "resources/subscribe"
        | "resources/unsubscribe"
        | "resources/directory/read"
        | "skills/get" => named(Kind::Resource, message.uri.as_ref()),
        "completion/complete" => match &message.reference {
            Some((Some(name), _)) => Ok(Some((Kind::Prompt, name.as_str()))),
            Some((None, Some(uri))) => Ok(Some((Kind::Resource, uri.as_str()))),
            _ => Err("the completion names no prompt or resource"),
        },
        _ => Ok(None),
    }
}

/// A resource URI must be in the canonical form a URL parser gives it: no dot segments, no
/// upper-case scheme, no encoded `.` `/` `\`. Otherwise `file:///public/../private/k` would
/// dodge a rule on `file:///private/*` and reach a server that normalizes it.
fn canonical_resource_uri(uri: &str) -> bool {
    let lower = uri.to_ascii_lowercase();
    if ["%2e", "%2f", "%5c"].iter().any(|e| lower.contains(e)) {
        return false;
    }
    match url::Url::parse(uri) {
        Ok(url) => url.as_str() == uri || url.as_str().strip_suffix('/') == Some(uri),
        // Not a URL the parser knows (e.g. no scheme): matched as written, but never with
        // path tricks in it.
        Err(_) => !uri.split('/').any(|seg| seg == ".." || seg == "."),
    }
}

/// A decision that refuses: the only kind [`Shared::refuse`] answers, so an allow can never
/// reach it.
pub(super) enum Refusal {
    /// Scopes would help: a step-up challenge naming them.
    InsufficientScope(Scopes),
    /// Nothing would help.
    Forbidden(&'static str),
}

impl Refusal {
    /// The refusal in `decision`, if it refuses.
    pub(super) fn of(decision: Decision) -> Option<Refusal> {
        match decision {
            Decision::Allow => None,
            Decision::InsufficientScope { scopes } => Some(Refusal::InsufficientScope(scopes)),
            Decision::Forbidden { reason } => Some(Refusal::Forbidden(reason)),
        }
    }
}

/// What one message needs.
enum Verdict {
    Allow,
    Refuse(Refusal, String, String),
    Invalid(&'static str),
    /// A permitted tool that needs a third-party service no ATAG layer serves here.
    Unserved(String),
}

/// A scope refusal names the bearer layer's required scopes too: one challenge carries every
/// scope the operation needs, so a token with exactly those works.
pub(super) fn with_required(refusal: Refusal, extensions: &http::Extensions) -> Refusal {
    match (refusal, extensions.get::<RequiredScopes>()) {
        (Refusal::InsufficientScope(scopes), Some(required)) => {
            Refusal::InsufficientScope(scopes.iter().chain(required.scopes().iter()).collect())
        }
        (refusal, _) => refusal,
    }
}

/// The revision 2026-07-28 headers that mirror the body (SEP-2243), parsed once.
static MCP_METHOD: http::HeaderName = http::HeaderName::from_static("mcp-method");
static MCP_NAME: http::HeaderName = http::HeaderName::from_static("mcp-name");

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

impl Shared {
    /// `Mcp-Method` / `Mcp-Name` (revision 2026-07-28) never decide anything; a value that
    /// disagrees with the body is refused, so no intermediary can be fooled by it either. The
    /// field `Mcp-Name` mirrors follows the method, as in rmcp.
    pub(super) fn check_headers(
        &self,
        headers: &http::HeaderMap,
        mcp: &McpRequest,
        ctx: &AuthContext,
    ) -> Option<Response<PolicyBody>> {
        let [message] = mcp.messages.as_slice() else {
            return None;
        };
        let id = message.id.clone().unwrap_or(Value::Null);
        let mismatch = |what: &str| {
            tracing::info!(target: audit::TARGET, decision = "deny", subject = ctx.subject(), client_id = ctx.client_id(), reason = what, "header mismatch");
            Some(rpc_error(
                StatusCode::BAD_REQUEST,
                &id,
                code::HEADER_MISMATCH,
                &format!("the {what} header does not match the request body"),
                None,
            ))
        };
        let mut methods = headers.get_all(&MCP_METHOD).iter();
        let (method, extra) = (methods.next(), methods.next());
        if extra.is_some()
            || method
                .is_some_and(|v| Some(v.as_bytes()) != message.method.as_deref().map(str::as_bytes))
        {
            return mismatch("Mcp-Method");
        }
        let mut names = headers.get_all(&MCP_NAME).iter();
        let (name, extra) = (names.next(), names.next());
        if extra.is_some() {
            return mismatch("Mcp-Name");
        }
        let mirrored = match message.method.as_deref() {
            Some("tools/call" | "prompts/get") => message.name.as_deref(),
            Some("resources/read" | "resources/subscribe" | "resources/unsubscribe") => {
                message.uri.as_deref()
            }
            // Other methods (tasks/*) mirror fields the policy does not judge.
            _ => return None,
        };
        if let Some(value) = name
            && decode_header_value(value.as_bytes()).as_deref() != mirrored.map(str::as_bytes)
        {
            return mismatch("Mcp-Name");
        }
        None
    }

    /// Judges every message that names a method (requests, and notifications too: a message
    /// with `"id": null` must not pass as a notification if some server runs it); the whole
    /// request is refused if any message is.
    pub(super) fn judge(
        &self,
        mcp: &McpRequest,
        ctx: &AuthContext,
        extensions: &http::Extensions,
    ) -> Option<Response<PolicyBody>> {
        let mut scopes: Vec<String> = Vec::new();
        let mut refused: Option<(Refusal, String, String, Value)> = None;
        for message in mcp.messages.iter().filter(|m| m.method.is_some()) {
            let verdict = self.judge_one(message, ctx);
            if matches!(verdict, Verdict::Allow) {
                continue;
            }
            // Only a refusal answers with the id: no copy of it for what is allowed.
            let id = message.id.clone().unwrap_or(Value::Null);
            match verdict {
                Verdict::Allow => {}
                Verdict::Unserved(tool) => {
                    tracing::error!(target: audit::TARGET, subject = ctx.subject(), client_id = ctx.client_id(), tool, "tool needs a third-party service, but no ATAG layer was built from this policy");
                    let text = format!(
                        "{tool} needs a connected third-party account, which this server cannot provide (it has no ATAG layer). Ask its operator."
                    );
                    if mcp.batch {
                        return Some(rpc_error(
                            StatusCode::BAD_REQUEST,
                            &Value::Null,
                            code::INVALID_REQUEST,
                            &text,
                            None,
                        ));
                    }
                    // A server configuration gap, not a malformed request: a tool error the
                    // client shows as it is.
                    let modern = message
                        .protocol_version
                        .as_deref()
                        .is_some_and(|v| v >= "2026-07-28");
                    return Some(tool_error(&id, &text, modern));
                }
                Verdict::Invalid(reason) => {
                    tracing::info!(target: audit::TARGET, decision = "deny", subject = ctx.subject(), client_id = ctx.client_id(), method = message.method.as_deref(), reason, "invalid request refused");
                    let id = if mcp.batch { Value::Null } else { id };
                    return Some(rpc_error(
                        StatusCode::BAD_REQUEST,
                        &id,
                        code::INVALID_REQUEST,
                        reason,
                        None,
                    ));
                }
                Verdict::Refuse(refusal, method, target) => {
                    if let Refusal::InsufficientScope(needed) = &refusal {
                        scopes.extend(needed.iter().map(str::to_owned));
                    }
                    // A forbidden element decides the answer; otherwise the scopes add up.
                    let forbidden = matches!(refusal, Refusal::Forbidden(_));
                    if refused.is_none() || forbidden {
                        refused = Some((refusal, method, target, id));
                    }
                }
            }
        }
        let (refusal, method, target, id) = refused?;
        let id = if mcp.batch { Value::Null } else { id };
        let refusal = match refusal {
            Refusal::InsufficientScope(_) => Refusal::InsufficientScope(Scopes::new(&scopes)),
            forbidden => forbidden,
        };
        let refusal = with_required(refusal, extensions);
        Some(self.refuse(refusal, &id, ctx, &method, &target))
    }

    fn judge_one(&self, message: &McpMessage, ctx: &AuthContext) -> Verdict {
        let Some(method) = message.method.as_deref() else {
            return Verdict::Allow;
        };
        if !method.bytes().all(|b| b.is_ascii_graphic()) || method.len() > MAX_NAME {
            return Verdict::Invalid("method names must be short printable ASCII");
        }
        if method.bytes().any(|b| b.is_ascii_uppercase()) {
            let lower = method.to_ascii_lowercase();
            if POLICED_METHODS.contains(&lower.as_str()) || self.policy.has_method_rule(&lower) {
                return Verdict::Invalid("method names are case-sensitive");
            }
        }
        let method_decision = self.policy.decide(Kind::Method, method, ctx);
        let target = match target_of(message, method) {
            Ok(target) => target,
            Err(reason) => return Verdict::Invalid(reason),
        };
        // Method and target are judged together, so one challenge names every scope needed.
        let (decision, target) = match target {
            None => (method_decision, ""),
            Some((kind, target)) => {
                let limit = if kind == Kind::Resource {
                    MAX_URI
                } else {
                    MAX_NAME
                };
                if target.len() > limit {
                    return Verdict::Invalid("the tool, prompt or resource name is too long");
                }
                if kind == Kind::Resource && !canonical_resource_uri(target) {
                    return Verdict::Invalid("resource URIs must be in canonical form");
                }
                let decision = method_decision.and(self.policy.decide(kind, target, ctx));
                (decision, target)
            }
        };
        match Refusal::of(decision) {
            Some(refusal) => Verdict::Refuse(refusal, method.to_owned(), target.to_owned()),
            None if method == "tools/call" && !self.policy.serves(target) => {
                Verdict::Unserved(target.to_owned())
            }
            None => {
                tracing::debug!(target: audit::TARGET, decision = "allow", subject = ctx.subject(), client_id = ctx.client_id(), method, tool = target, "operation allowed");
                Verdict::Allow
            }
        }
    }

    pub(super) fn refuse(
        &self,
        refusal: Refusal,
        id: &Value,
        ctx: &AuthContext,
        method: &str,
        target: &str,
    ) -> Response<PolicyBody> {
        // The metric names what was refused only when the operator's policy names it.
        let (kind, rule_kind) = match method {
            "tools/call" => ("tool", Kind::Tool),
            "prompts/get" => ("prompt", Kind::Prompt),
            "resources/read" | "resources/subscribe" => ("resource", Kind::Resource),
            _ => ("method", Kind::Method),
        };
        let named = if rule_kind == Kind::Method {
            method
        } else {
            target
        };
        let label = self.policy.metric_name(rule_kind, named);
        match refusal {
            Refusal::InsufficientScope(scopes) => {
                crate::metrics::count!(crate::metrics::REQUESTS, "layer" => "policy", "decision" => "403", "reason" => "insufficient_scope");
                crate::metrics::policy_denial(kind, label, "insufficient_scope");
                tracing::info!(target: audit::TARGET, decision = "deny", subject = ctx.subject(), client_id = ctx.client_id(), method, tool = target, reason = "insufficient scope", required = %crate::audit::Escaped(&scopes), "operation refused");
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
                    code::FORBIDDEN,
                    &description,
                    Some(data),
                );
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, challenge);
                response
            }
            Refusal::Forbidden(reason) => {
                crate::metrics::request("policy", "403", reason);
                crate::metrics::policy_denial(kind, label, reason);
                tracing::info!(target: audit::TARGET, decision = "deny", subject = ctx.subject(), client_id = ctx.client_id(), method, tool = target, reason, "operation refused");
                // No challenge: no scope would help, so the client must not step up.
                let message = if target.is_empty() {
                    format!("{method} is not permitted: {reason}")
                } else {
                    format!("{method} {target} is not permitted: {reason}")
                };
                rpc_error(StatusCode::FORBIDDEN, id, code::FORBIDDEN, &message, None)
            }
        }
    }
}
