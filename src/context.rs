//! The authenticated principal a validated token describes, and the ways handlers reach it.
//!
//! [`BearerLayer`](crate::bearer::BearerLayer) puts an [`AuthContext`] into the request
//! extensions. Plain axum handlers take it as an extractor; rmcp `#[tool]` functions take the
//! [`Auth`] extractor (feature `rmcp`), which digs it out of the HTTP request parts rmcp
//! places in the tool's request context.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{Map, Value};

/// A set of OAuth scopes, kept sorted and free of duplicates.
///
/// Scope sets on access tokens are small, so a sorted slice with binary search beats a hash set
/// both in memory and in lookup time.
///
/// ```
/// use tower_mcp_auth::Scopes;
///
/// let scopes = Scopes::from_space_separated("notes:write notes:read notes:read");
/// assert_eq!(scopes.len(), 2);
/// assert!(scopes.contains("notes:read"));
/// assert!(scopes.contains_all(["notes:read", "notes:write"]));
/// assert_eq!(scopes.to_string(), "notes:read notes:write");
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Scopes(Box<[Box<str>]>);

impl Scopes {
    /// Builds a set from any list of scope strings; empty strings are dropped.
    pub fn new<I, S>(scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut v: Vec<Box<str>> = scopes
            .into_iter()
            .filter(|s| !s.as_ref().is_empty())
            .map(|s| Box::from(s.as_ref()))
            .collect();
        v.sort_unstable();
        v.dedup();
        Scopes(v.into_boxed_slice())
    }

    /// Parses the RFC 6749 `scope` form: scope tokens separated by spaces.
    pub fn from_space_separated(scope: &str) -> Self {
        Self::new(scope.split(' '))
    }

    /// Whether the set holds `scope` (exact, case-sensitive comparison as RFC 6749 asks).
    pub fn contains(&self, scope: &str) -> bool {
        self.0.binary_search_by(|s| (**s).cmp(scope)).is_ok()
    }

    /// Whether the set holds every one of `scopes`.
    pub fn contains_all<I, S>(&self, scopes: I) -> bool
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        scopes.into_iter().all(|s| self.contains(s.as_ref()))
    }

    /// The scopes of `required` that this set lacks, in `required`'s order.
    pub fn missing<'a>(&'a self, required: &'a Scopes) -> impl Iterator<Item = &'a str> + 'a {
        required.iter().filter(move |s| !self.contains(s))
    }

    /// What a request for `requested` (space-separated) may get out of this set: the request
    /// itself if it asks for nothing beyond the set, this whole set if it names no scope, and
    /// `None` if it asks for more (OAuth's `invalid_scope`; refresh may only narrow).
    ///
    /// ```
    /// use tower_mcp_auth::Scopes;
    ///
    /// let granted = Scopes::new(["a", "b"]);
    /// assert_eq!(granted.narrow(Some("a")), Some(Scopes::new(["a"])));
    /// assert_eq!(granted.narrow(None), Some(granted.clone()));
    /// assert_eq!(granted.narrow(Some("a c")), None);
    /// ```
    pub fn narrow(&self, requested: Option<&str>) -> Option<Scopes> {
        match requested {
            None => Some(self.clone()),
            Some(requested) => {
                let requested = Scopes::from_space_separated(requested);
                self.contains_all(requested.iter()).then_some(requested)
            }
        }
    }

    /// Iterates the scopes in sorted order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|s| &**s)
    }

    /// Number of scopes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Scopes {
    /// Writes the RFC 6749 space-separated form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(s)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl<S: AsRef<str>> FromIterator<S> for Scopes {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        Scopes::new(iter)
    }
}

/// The scopes the [`BearerLayer`](crate::BearerLayer) requires of every request
/// ([`require_scopes`](crate::BearerLayer::require_scopes)), placed in the request extensions
/// beside the [`AuthContext`] when there are any. Inner layers add them to their own step-up
/// challenges, so one challenge names every scope an operation needs: a client that asks for
/// exactly the challenged scopes gets a token that works (MCP 2026-07-28, SEP-2350).
///
/// ```
/// use tower_mcp_auth::{RequiredScopes, Scopes};
///
/// let required = RequiredScopes::new(Scopes::new(["mcp:tools"]));
/// assert!(required.scopes().contains("mcp:tools"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct RequiredScopes(Arc<Scopes>);

impl RequiredScopes {
    /// Wraps `scopes` (cheap to clone afterwards: one reference count).
    pub fn new(scopes: Scopes) -> Self {
        RequiredScopes(Arc::new(scopes))
    }

    /// The required scopes.
    pub fn scopes(&self) -> &Scopes {
        &self.0
    }
}

/// Who a validated access token speaks for, and what it allows.
///
/// Cheap to clone (one reference count): the token cache hands the same context to every
/// request that presents the same token.
#[derive(Clone)]
pub struct AuthContext(Arc<Inner>);

struct Inner {
    subject: Box<str>,
    client_id: Option<Box<str>>,
    issuer: Option<Box<str>>,
    scopes: Scopes,
    audience: Vec<String>,
    expires_at: Option<SystemTime>,
    /// `cnf.jkt`: the thumbprint of the key the token is bound to (DPoP, RFC 9449 §6).
    bound_key: Option<Box<str>>,
    claims: Claims,
}

/// Every claim, kept as compact JSON text and parsed the first time someone asks.
///
/// The token cache holds one context per user for as long as the token lives: a parsed claim
/// map (a B-tree of `String` keys and `Value`s, a dozen allocations) costs several times the
/// JSON it came from, and most requests never read a claim the typed accessors do not cover.
struct Claims {
    json: Box<str>,
    parsed: std::sync::OnceLock<Map<String, Value>>,
}

impl Claims {
    fn new(claims: &Map<String, Value>) -> Self {
        Claims {
            // A map of JSON values always serializes.
            json: serde_json::to_string(claims)
                .unwrap_or_default()
                .into_boxed_str(),
            parsed: std::sync::OnceLock::new(),
        }
    }

    fn map(&self) -> &Map<String, Value> {
        // Parsing back what serde_json wrote cannot fail; an empty map would be the answer.
        self.parsed
            .get_or_init(|| serde_json::from_str(&self.json).unwrap_or_default())
    }
}

impl AuthContext {
    /// Builds a context from a token's claims (a JWT payload or an RFC 7662 introspection
    /// response), reading the registered claims the way the major identity providers write them:
    ///
    /// - subject: `sub`;
    /// - client: `client_id` (RFC 9068), else `azp` (OIDC), else `cid` (Okta) or `appid` (Entra);
    /// - scopes: `scope` (space-separated string, RFC 9068/7662), else `scp` (string or array);
    /// - audience: `aud` (string or array); expiry: `exp` (seconds since the epoch).
    ///
    /// Returns `None` when there is no non-empty `sub`: every token we accept names a principal.
    pub fn from_claims(claims: Map<String, Value>) -> Option<Self> {
        let subject = Box::from(
            claims
                .get("sub")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())?,
        );
        let string = |k: &str| claims.get(k).and_then(Value::as_str).map(Box::from);
        let client_id = string("client_id")
            .or_else(|| string("azp"))
            .or_else(|| string("cid"))
            .or_else(|| string("appid"));
        let issuer = string("iss");
        let scopes = match claims.get("scope").or_else(|| claims.get("scp")) {
            Some(Value::String(s)) => Scopes::from_space_separated(s),
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => Scopes::default(),
        };
        let audience = match claims.get("aud") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        };
        // NumericDate may be fractional (RFC 7519 §2); an absurd value must not panic.
        let expires_at = claims
            .get("exp")
            .and_then(Value::as_f64)
            .and_then(|secs| std::time::Duration::try_from_secs_f64(secs).ok())
            .and_then(|d| SystemTime::UNIX_EPOCH.checked_add(d));
        let bound_key = claims
            .get("cnf")
            .and_then(|cnf| cnf.get("jkt"))
            .and_then(Value::as_str)
            .map(Box::from);
        Some(AuthContext(Arc::new(Inner {
            subject,
            client_id,
            issuer,
            scopes,
            audience,
            expires_at,
            bound_key,
            claims: Claims::new(&claims),
        })))
    }

    /// The principal (`sub`): a user, or the client itself for machine-to-machine tokens.
    pub fn subject(&self) -> &str {
        &self.0.subject
    }

    /// The OAuth client the token was issued to, where the token says.
    pub fn client_id(&self) -> Option<&str> {
        self.0.client_id.as_deref()
    }

    /// The issuer (`iss`) that vouched for the token.
    pub fn issuer(&self) -> Option<&str> {
        self.0.issuer.as_deref()
    }

    /// The scopes the token grants.
    pub fn scopes(&self) -> &Scopes {
        &self.0.scopes
    }

    /// Shorthand for `self.scopes().contains(scope)`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.0.scopes.contains(scope)
    }

    /// The audiences (`aud`) the token was issued for; one of them is this resource.
    pub fn audience(&self) -> &[String] {
        &self.0.audience
    }

    /// When the token expires.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.0.expires_at
    }

    /// Whether the token has expired at `now`.
    pub fn is_expired_at(&self, now: SystemTime) -> bool {
        self.0.expires_at.is_some_and(|exp| exp <= now)
    }

    /// The thumbprint of the key the token is bound to (`cnf.jkt`, DPoP): such a token is
    /// accepted only with a proof by that key.
    pub fn dpop_key_thumbprint(&self) -> Option<&str> {
        self.0.bound_key.as_deref()
    }

    /// Every claim of the token (or field of the introspection response), for checks this type
    /// has no accessor for (`groups`, `email`, tenant ids, ...). Kept as JSON text until first
    /// asked for, then parsed once per context (a cached token's context is shared by all its
    /// requests).
    pub fn claims(&self) -> &Map<String, Value> {
        self.0.claims.map()
    }

    /// One claim by name.
    pub fn claim(&self, name: &str) -> Option<&Value> {
        self.0.claims.map().get(name)
    }
}

impl fmt::Debug for AuthContext {
    // Claims stay out of Debug output: they may hold personal data that must not reach logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthContext")
            .field("subject", &self.0.subject)
            .field("client_id", &self.0.client_id)
            .field("issuer", &self.0.issuer)
            .field("scopes", &self.0.scopes)
            .field("audience", &self.0.audience)
            .field("expires_at", &self.0.expires_at)
            .finish_non_exhaustive()
    }
}

/// Rejection of the axum [`AuthContext`] extractor: the handler is not behind a
/// [`BearerLayer`](crate::bearer::BearerLayer), a wiring mistake that must not look like an
/// anonymous request.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("no AuthContext in the request extensions: is the handler behind BearerLayer?")]
pub struct MissingAuthContext;

impl axum::response::IntoResponse for MissingAuthContext {
    fn into_response(self) -> axum::response::Response {
        // 500, not 401: the server is misconfigured; the client can do nothing about it.
        (http::StatusCode::INTERNAL_SERVER_ERROR, self.to_string()).into_response()
    }
}

/// Extracts the [`AuthContext`] in a plain axum handler behind the bearer layer.
///
/// ```
/// use tower_mcp_auth::AuthContext;
///
/// async fn whoami(auth: AuthContext) -> String {
///     format!("{} with {}", auth.subject(), auth.scopes())
/// }
/// # let _ = axum::Router::<()>::new().route("/whoami", axum::routing::get(whoami));
/// ```
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for AuthContext {
    type Rejection = MissingAuthContext;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<AuthContext>()
            .cloned()
            .ok_or(MissingAuthContext)
    }
}

impl<S: Send + Sync> axum::extract::OptionalFromRequestParts<S> for AuthContext {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<AuthContext>().cloned())
    }
}

#[cfg(feature = "rmcp")]
pub use self::rmcp_support::Auth;

#[cfg(feature = "rmcp")]
mod rmcp_support {
    use rmcp::handler::server::common::{AsRequestContext, FromContextPart};
    use rmcp::model::ErrorData;

    use super::AuthContext;

    /// The [`AuthContext`] of the HTTP request behind an rmcp tool call, as a tool argument.
    ///
    /// rmcp's Streamable HTTP service moves the request's `http::request::Parts` into the
    /// tool's `RequestContext` extensions; the bearer layer's `AuthContext` rides inside them.
    /// A tool without it fails with `invalid_request` instead of running unauthenticated.
    ///
    /// ```
    /// use rmcp::{tool, tool_router};
    /// use tower_mcp_auth::Auth;
    ///
    /// #[derive(Clone)]
    /// struct Notes { tool_router: rmcp::handler::server::router::tool::ToolRouter<Self> }
    ///
    /// #[tool_router(server_handler)]
    /// impl Notes {
    ///     #[tool(description = "Who am I?")]
    ///     async fn whoami(&self, Auth(auth): Auth) -> String {
    ///         auth.subject().to_owned()
    ///     }
    /// }
    /// ```
    #[derive(Debug, Clone)]
    pub struct Auth(pub AuthContext);

    impl<C: AsRequestContext> FromContextPart<C> for Auth {
        fn from_context_part(context: &mut C) -> Result<Self, ErrorData> {
            context
                .as_request_context()
                .extensions
                .get::<http::request::Parts>()
                .and_then(|parts| parts.extensions.get::<AuthContext>())
                .cloned()
                .map(Auth)
                .ok_or_else(|| {
                    ErrorData::invalid_request(
                        "this tool requires an authenticated request (no AuthContext)",
                        None,
                    )
                })
        }
    }

    impl std::ops::Deref for Auth {
        type Target = AuthContext;
        fn deref(&self) -> &AuthContext {
            &self.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn reads_scp_array_and_azp() {
        let ctx = AuthContext::from_claims(claims(json!({
            "sub": "u1", "azp": "cli", "scp": ["b", "a"], "aud": ["x", "y"], "exp": 10
        })))
        .unwrap();
        assert_eq!(ctx.client_id(), Some("cli"));
        assert_eq!(ctx.scopes().iter().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(ctx.audience(), ["x", "y"]);
        assert!(ctx.is_expired_at(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(10)));
    }

    #[test]
    fn refuses_claims_without_subject() {
        assert!(AuthContext::from_claims(claims(json!({"sub": ""}))).is_none());
        assert!(AuthContext::from_claims(claims(json!({"iss": "x"}))).is_none());
    }

    #[test]
    fn missing_lists_required_scopes_not_held() {
        let held = Scopes::new(["a", "c"]);
        let required = Scopes::new(["a", "b", "c", "d"]);
        assert_eq!(held.missing(&required).collect::<Vec<_>>(), ["b", "d"]);
    }
}
