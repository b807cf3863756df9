//! [`Backend`]: one MCP server behind the gateway, and what guards it.

use std::time::Duration;

use http::HeaderName;

use crate::ConfigError;
use crate::policy::ToolPolicy;

/// The default header a backend receives a user's third-party token in (`Bearer …`), on the
/// calls whose tool needs that service.
pub const DEFAULT_SERVICE_TOKEN_HEADER: HeaderName = HeaderName::from_static("x-mcp-service-token");

/// Names a backend may not take: the gateway's own routes live there.
const RESERVED_NAMES: [&str; 6] = ["oauth", "atag", "services", "healthz", "readyz", "metrics"];

/// One backend MCP server, served by the gateway at `/{name}/mcp` as a protected resource of
/// its own: its own audience (a token for one backend is refused by every other), its own
/// protected-resource metadata, its own [`ToolPolicy`].
///
/// ```
/// use tower_mcp_auth::ToolPolicy;
/// use tower_mcp_auth::gateway::Backend;
///
/// let policy = ToolPolicy::builder()
///     .tool("notes_read", ["notes:read"])
///     .tool("notes_*", ["notes:write"])
///     .build()
///     .unwrap();
/// let notes = Backend::new("notes", "http://127.0.0.1:9000/mcp")
///     .description("Team notes")
///     .policy(policy)
///     .require_scopes(["notes:read"]);
/// # let _ = notes;
/// ```
#[derive(Clone)]
#[must_use]
pub struct Backend {
    pub(super) name: String,
    pub(super) url: String,
    pub(super) description: Option<String>,
    pub(super) policy: Option<ToolPolicy>,
    pub(super) required_scopes: Vec<String>,
    pub(super) service_token_header: HeaderName,
    pub(super) connect_timeout: Option<Duration>,
    pub(super) response_timeout: Option<Duration>,
    pub(super) max_in_flight: Option<usize>,
    pub(super) max_response_bytes: Option<u64>,
    pub(super) gateway_secret: Option<String>,
    pub(super) challenge_scopes: Option<Vec<String>>,
    pub(super) max_in_flight_per_user: Option<usize>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("policy", &self.policy.is_some())
            .field("required_scopes", &self.required_scopes)
            .field("service_token_header", &self.service_token_header)
            .field(
                "gateway_secret",
                &self.gateway_secret.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

impl Backend {
    /// The backend `name` (lower-case letters, digits, `-`, `_`, `.`; served at `/{name}/mcp`)
    /// whose MCP endpoint is `url`. Without a [`policy`](Self::policy), every tool is open to
    /// any caller with a valid token for this backend.
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> Self {
        Backend {
            name: name.into(),
            url: url.into(),
            description: None,
            policy: None,
            required_scopes: Vec::new(),
            service_token_header: DEFAULT_SERVICE_TOKEN_HEADER,
            connect_timeout: None,
            response_timeout: None,
            max_in_flight: None,
            max_response_bytes: None,
            gateway_secret: None,
            challenge_scopes: None,
            max_in_flight_per_user: None,
        }
    }

    /// A sentence for people (the service list and the protected-resource metadata's
    /// `resource_name` show it).
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = Some(text.into());
        self
    }

    /// The tool policy: scopes per tool, prompt, resource and method, and the third-party
    /// services tools need (`needs_service`), whose tokens the backend then receives.
    pub fn policy(mut self, policy: ToolPolicy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Scopes every request to this backend needs (a token without them gets 403
    /// `insufficient_scope`); the service list shows a caller the backends whose required
    /// scopes it holds.
    pub fn require_scopes<I: IntoIterator<Item = S>, S: Into<String>>(mut self, scopes: I) -> Self {
        self.required_scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// The scopes the 401 challenge names: what a client asks for in its first authorization
    /// (default: the required scopes, or the policy's when none are required). Naming the
    /// scopes most users need spares them a step-up on their first tool call.
    pub fn challenge_scopes<I: IntoIterator<Item = S>, S: Into<String>>(
        mut self,
        scopes: I,
    ) -> Self {
        self.challenge_scopes = Some(scopes.into_iter().map(Into::into).collect());
        self
    }

    /// The header the backend receives a third-party token in (default
    /// [`DEFAULT_SERVICE_TOKEN_HEADER`]). Clients cannot send it: it is removed from every
    /// request, and set only on calls whose tool needs the service.
    pub fn service_token_header(mut self, name: HeaderName) -> Self {
        self.service_token_header = name;
        self
    }

    /// Time to connect to the backend (default [`super::DEFAULT_CONNECT_TIMEOUT`]).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// Time the backend has to start answering (default [`super::DEFAULT_RESPONSE_TIMEOUT`]).
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = Some(timeout);
        self
    }

    /// Requests in flight to the backend at once (default [`super::DEFAULT_MAX_IN_FLIGHT`]).
    pub fn max_in_flight(mut self, limit: usize) -> Self {
        self.max_in_flight = Some(limit);
        self
    }

    /// Requests one user may have in flight to the backend (default
    /// [`super::DEFAULT_MAX_IN_FLIGHT_PER_USER`]); past it, 429.
    pub fn max_in_flight_per_user(mut self, limit: usize) -> Self {
        self.max_in_flight_per_user = Some(limit);
        self
    }

    /// The largest response body passed on (default [`super::DEFAULT_MAX_RESPONSE_BYTES`]).
    pub fn max_response_bytes(mut self, limit: u64) -> Self {
        self.max_response_bytes = Some(limit);
        self
    }

    /// A secret the backend checks on every request (see
    /// [`GatewayIdentityLayer::shared_secret`](super::GatewayIdentityLayer::shared_secret)), so
    /// requests that did not come through the gateway are refused there.
    pub fn gateway_secret(mut self, secret: impl Into<String>) -> Self {
        self.gateway_secret = Some(secret.into());
        self
    }

    /// The backend's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(super) fn check_name(&self) -> Result<(), ConfigError> {
        let name = self.name.as_str();
        let well_formed = !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
            && name
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric());
        if !well_formed {
            return Err(ConfigError::InvalidServer(format!(
                "backend name `{name}`: use 1-63 lower-case letters, digits, `-`, `_` or `.`, starting with a letter or digit"
            )));
        }
        if RESERVED_NAMES.contains(&name) {
            return Err(ConfigError::InvalidServer(format!(
                "backend name `{name}` is reserved for the gateway's own routes"
            )));
        }
        Ok(())
    }

    pub(super) fn effective_policy(&self) -> Result<ToolPolicy, ConfigError> {
        match &self.policy {
            Some(policy) => Ok(policy.clone()),
            None => ToolPolicy::builder()
                .default_scopes(Vec::<String>::new())
                .build(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_names_are_path_segments_that_cannot_shadow_gateway_routes() {
        for good in ["notes", "a", "git-hub_2.v1", &"x".repeat(63)] {
            assert!(
                Backend::new(good, "http://b/mcp").check_name().is_ok(),
                "{good}"
            );
        }
        for bad in [
            "",
            "Notes",
            "-x",
            ".well-known",
            "a/b",
            "a b",
            "oauth",
            "atag",
            "services",
            "healthz",
            "readyz",
            "é",
            &"x".repeat(64),
        ] {
            assert!(
                Backend::new(bad, "http://b/mcp").check_name().is_err(),
                "{bad}"
            );
        }
    }
}
