//! What the bearer layer decides once it knows (or fails to know) who is calling.

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;

use super::cache::TokenCache;
use super::credentials::CredentialError;
use super::session::{Principal, SessionBindings, SessionCheck};
use crate::audit;
use crate::challenge::{BearerErrorCode, Challenge, json_error};
use crate::validate::TokenError;
use crate::wire::MCP_SESSION_ID;
use crate::{AuthContext, ProtectedResource, RequiredScopes, Scopes};

#[derive(Debug, Clone)]
pub(crate) struct Admission {
    pub(crate) resource: ProtectedResource,
    pub(crate) required_scopes: RequiredScopes,
    pub(crate) challenge_scopes: Scopes,
    pub(crate) cache: Option<TokenCache>,
    pub(crate) sessions: Option<SessionBindings>,
    /// The header the token is read from (`Authorization` unless an ingress header is set).
    pub(crate) token_header: http::HeaderName,
    /// How DPoP proofs are checked (`Authorization: DPoP`).
    pub(crate) dpop: crate::dpop::Dpop,
    /// Failed-validation budgets per client address, when limited.
    #[cfg(feature = "rate-limit")]
    pub(crate) failures: Option<super::failures::FailureBudgets>,
}

/// What to do with the session once the inner service has answered.
#[derive(Debug)]
pub(crate) enum SessionAction {
    None,
    /// The request opened no session; if the response opens one, it belongs to this principal.
    BindOnResponse(AuthContext),
    /// A `DELETE` of this session: forget the binding once the server confirms.
    UnbindOnSuccess(Box<str>),
}

impl Admission {
    pub(crate) fn refuse_credentials(&self, error: CredentialError) -> Response<Full<Bytes>> {
        let challenge = Challenge::new(self.resource.metadata_url());
        match error {
            CredentialError::Missing => {
                crate::metrics::count!(crate::metrics::REQUESTS, "layer" => "bearer", "decision" => "401", "reason" => "no_token");
                tracing::debug!(target: audit::TARGET, decision = "deny", reason = "no bearer token", "request refused");
                challenge.scope(&self.challenge_scopes).into_response()
            }
            CredentialError::Invalid(description) => {
                crate::metrics::count!(crate::metrics::REQUESTS, "layer" => "bearer", "decision" => "400", "reason" => "invalid_request");
                tracing::info!(target: audit::TARGET, decision = "deny", reason = description, "request refused");
                challenge
                    .error(BearerErrorCode::InvalidRequest, description)
                    .into_response()
            }
        }
    }

    /// Checks the `DPoP` proof of a request presenting `token` with the DPoP scheme: the
    /// thumbprint of the proof's key, or the 401 DPoP challenge.
    pub(crate) fn prove<B>(
        &self,
        request: &Request<B>,
        token: &[u8],
    ) -> Result<Box<str>, crate::dpop::DpopError> {
        let mut proofs = request.headers().get_all(&crate::wire::DPOP).iter();
        let proof = match (proofs.next(), proofs.next()) {
            (Some(proof), None) => proof.to_str().ok(),
            _ => None,
        };
        let token = std::str::from_utf8(token).ok();
        let (Some(proof), Some(token)) = (proof, token) else {
            return Err(crate::dpop::DpopError::InvalidProof(
                "exactly one DPoP proof header is required with a DPoP token",
            ));
        };
        // The URL the client called: this resource's public origin and the request's path
        // (before a router nested this service and cut its prefix), or the resource URI.
        let path = request
            .extensions()
            .get::<axum::extract::OriginalUri>()
            .map_or(request.uri().path(), |original| original.0.path());
        let url = format!("{}{}", self.resource.origin(), path);
        self.dpop
            .verify_for_any(
                proof,
                request.method().as_str(),
                &[&url, self.resource.resource()],
                Some(token),
            )
            .map(|proven| proven.jkt.into_boxed_str())
    }

    pub(crate) fn refuse_proof(
        &self,
        error: &crate::dpop::DpopError,
    ) -> Box<Response<Full<Bytes>>> {
        let (code, nonce) = match error {
            crate::dpop::DpopError::UseNonce => ("use_dpop_nonce", self.dpop.current_nonce()),
            crate::dpop::DpopError::Busy => {
                let mut response = json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    &error.to_string(),
                );
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                return Box::new(response);
            }
            _ => ("invalid_dpop_proof", None),
        };
        crate::metrics::request("bearer", "401", code);
        tracing::info!(target: audit::TARGET, decision = "deny", reason = %error, "DPoP proof refused");
        Box::new(crate::challenge::dpop_challenge(
            self.resource.metadata_url(),
            code,
            &error.to_string(),
            &self.dpop.algorithm_names(),
            nonce.as_deref(),
        ))
    }

    /// A token bound to a key (`cnf.jkt`) is accepted only with a proof by that key, and a
    /// DPoP-presented token only if it is bound to the proof's key.
    pub(crate) fn check_binding(
        &self,
        ctx: &AuthContext,
        proven: Option<&str>,
    ) -> Result<(), Box<Response<Full<Bytes>>>> {
        let refusal = match (ctx.dpop_key_thumbprint(), proven) {
            (None, None) => return Ok(()),
            (Some(bound), Some(key))
                if bool::from(subtle::ConstantTimeEq::ct_eq(
                    bound.as_bytes(),
                    key.as_bytes(),
                )) =>
            {
                return Ok(());
            }
            (Some(_), None) => {
                "the token is DPoP-bound: present it with the DPoP scheme and a proof"
            }
            (Some(_), Some(_)) => {
                "the DPoP proof is signed by another key than the token is bound to"
            }
            (None, Some(_)) => "the token is not DPoP-bound: present it with the Bearer scheme",
        };
        crate::metrics::request("bearer", "401", "dpop_binding");
        tracing::info!(target: audit::TARGET, decision = "deny", subject = ctx.subject(), reason = refusal, "token binding refused");
        Err(Box::new(match proven {
            Some(_) => crate::challenge::dpop_challenge(
                self.resource.metadata_url(),
                "invalid_token",
                refusal,
                &self.dpop.algorithm_names(),
                None,
            ),
            None => Challenge::new(self.resource.metadata_url())
                .error(BearerErrorCode::InvalidToken, refusal)
                .into_response(),
        }))
    }

    /// The address has used up its failed-validation budget: refused before any validation.
    #[cfg(feature = "rate-limit")]
    pub(crate) fn refuse_failures(&self, wait: std::time::Duration) -> Response<Full<Bytes>> {
        crate::metrics::count!(crate::metrics::REQUESTS, "layer" => "bearer", "decision" => "429", "reason" => "auth_failures");
        tracing::warn!(target: audit::TARGET, decision = "deny", reason = "too many failed authentications from this address", "request refused");
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut response = json_error(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_requests",
            &format!("too many failed authentications from this address; retry in {seconds} s"),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        response
    }

    pub(crate) fn refuse_token(&self, error: &TokenError) -> Response<Full<Bytes>> {
        if let TokenError::Unavailable(detail) = error {
            crate::metrics::count!(crate::metrics::REQUESTS, "layer" => "bearer", "decision" => "503", "reason" => "validator_unavailable");
            tracing::warn!(target: audit::TARGET, decision = "deny", reason = %crate::audit::Escaped(&detail), "token validation unavailable");
            let mut response = json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                &error.to_string(),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            return response;
        }
        crate::metrics::count!(crate::metrics::REQUESTS, "layer" => "bearer", "decision" => "401", "reason" => "invalid_token");
        tracing::info!(target: audit::TARGET, decision = "deny", reason = %crate::audit::Escaped(&error), "token refused");
        let description = error.to_string();
        Challenge::new(self.resource.metadata_url())
            .scope(&self.challenge_scopes)
            .error(BearerErrorCode::InvalidToken, &description)
            .into_response()
    }

    /// Checks the layer-wide scopes and the session binding for an authenticated request.
    pub(crate) fn admit<B>(
        &self,
        ctx: &AuthContext,
        request: &Request<B>,
    ) -> Result<SessionAction, Box<Response<Full<Bytes>>>> {
        let required = self.required_scopes.scopes();
        if !ctx.scopes().contains_all(required.iter()) {
            let missing: Vec<&str> = ctx.scopes().missing(required).collect();
            tracing::info!(
                target: audit::TARGET,
                decision = "deny",
                subject = ctx.subject(),
                client_id = ctx.client_id(),
                missing = ?missing,
                "insufficient scope"
            );
            crate::metrics::count!(crate::metrics::REQUESTS, "layer" => "bearer", "decision" => "403", "reason" => "insufficient_scope");
            let description = format!("this resource requires the scopes: {required}");
            // What the operation needs, as the policy layer's challenges say it too (MCP
            // 2026-07-28: the current operation's scopes, in one challenge; the client adds them
            // to what it has). The policy layer names these beside each tool's own, so even a
            // client that replaces its scope converges: never two challenges in a loop.
            return Err(Box::new(
                Challenge::new(self.resource.metadata_url())
                    .scope(required)
                    .error(BearerErrorCode::InsufficientScope, &description)
                    .into_response(),
            ));
        }
        let Some(sessions) = &self.sessions else {
            return Ok(SessionAction::None);
        };
        let mut ids = request.headers().get_all(&MCP_SESSION_ID).iter();
        let (first, second) = (ids.next(), ids.next());
        let Some(session_id) = first else {
            // A reference count, not a copy: most responses open no session.
            return Ok(SessionAction::BindOnResponse(ctx.clone()));
        };
        // Two ids, or one that is not visible ASCII: a proxy or server might read it another
        // way than we do, so it is refused rather than interpreted.
        let session_id = match (second, session_id.to_str()) {
            (None, Ok(id)) if !id.is_empty() => id,
            _ => {
                tracing::info!(target: audit::TARGET, decision = "deny", subject = ctx.subject(), reason = "malformed Mcp-Session-Id", "request refused");
                return Err(Box::new(json_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "exactly one valid Mcp-Session-Id header is allowed",
                )));
            }
        };
        match sessions.check(session_id, ctx) {
            SessionCheck::Owner if request.method() == Method::DELETE => {
                Ok(SessionAction::UnbindOnSuccess(Box::from(session_id)))
            }
            SessionCheck::Owner => Ok(SessionAction::None),
            SessionCheck::Refused => {
                crate::metrics::count!(crate::metrics::REQUESTS, "layer" => "bearer", "decision" => "404", "reason" => "session_not_bound");
                tracing::warn!(
                    target: audit::TARGET,
                    decision = "deny",
                    subject = ctx.subject(),
                    client_id = ctx.client_id(),
                    reason = "session not bound to this principal",
                    "session refused"
                );
                Err(Box::new(json_error(
                    StatusCode::NOT_FOUND,
                    "session_not_found",
                    "no such session for this principal; initialize a new session",
                )))
            }
        }
    }

    pub(crate) fn after_response<B>(&self, action: SessionAction, response: &Response<B>) {
        let Some(sessions) = &self.sessions else {
            return;
        };
        match action {
            SessionAction::None => {}
            SessionAction::BindOnResponse(ctx) => {
                if let Some(id) = response
                    .headers()
                    .get(&MCP_SESSION_ID)
                    .and_then(|v| v.to_str().ok())
                {
                    sessions.bind(id, Principal::of(&ctx));
                }
            }
            SessionAction::UnbindOnSuccess(id) => {
                if response.status().is_success() {
                    sessions.unbind(&id);
                }
            }
        }
    }
}
