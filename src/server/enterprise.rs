//! Enterprise-managed authorization (the MCP `io.modelcontextprotocol/enterprise-managed-authorization`
//! extension, SEP-990, draft-ietf-oauth-identity-assertion-authz-grant): an enterprise's
//! identity provider, not the user, decides which MCP servers a signed-in employee's client may
//! use, by issuing an Identity Assertion JWT Authorization Grant (ID-JAG).
//!
//! Both sides are here:
//! - **Redeeming** ([`EnterpriseIdp`], the RFC 7523 `jwt-bearer` grant): a client presents an
//!   ID-JAG from a trusted IdP and gets an access token for the user it names, narrowed to what
//!   the operator's group mapping lets that user hold.
//! - **Issuing** ([`IdJagAudience`], RFC 8693 token exchange): a client of ours trades a user's
//!   id_token (ours) for an ID-JAG addressed to another authorization server we trust.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::auth_server::AuthServer;
use super::clients::Client;
use super::error::OAuthError;
use super::token::{json_no_store, token_type};
use crate::address::AddressPolicy;
use crate::resource::canonical_audience;
use crate::validate::{JwksValidator, JwtKey, JwtValidator, TokenValidator};
use crate::{ConfigError, Scopes, audit};

/// `grant_type` of the RFC 7523 JWT bearer grant.
pub(super) const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// `grant_type` of RFC 8693 token exchange.
pub(super) const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// The token type of an ID-JAG.
pub(super) const ID_JAG_TYPE: &str = "urn:ietf:params:oauth:token-type:id-jag";
const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";
/// The JOSE `typ` of an ID-JAG.
const ID_JAG_JOSE_TYPE: &str = "oauth-id-jag+jwt";
/// The longest an ID-JAG may live, issued or accepted.
const ID_JAG_LIFETIME: Duration = Duration::from_secs(300);
const MAX_ACCEPTED_LIFETIME: Duration = Duration::from_secs(600);

/// An enterprise identity provider whose ID-JAGs this server redeems.
///
/// The ID-JAG must be typed `oauth-id-jag+jwt`, signed by one of the IdP's keys, and carry
/// `iss` = the IdP, `aud` = our issuer, `client_id` = the client redeeming it (one of
/// `allowed_clients`, authenticated), `resource` = one of our resources, `sub`, `jti` (used
/// once), `exp` (at most ten minutes ahead). The user becomes `{id}|{sub}`, in the groups of
/// the ID-JAG's `groups` claim; the token gets the ID-JAG's `scope` narrowed by the group
/// mapping and the client's ceiling.
///
/// ```
/// use tower_mcp_auth::address::AddressPolicy;
/// use tower_mcp_auth::server::{AuthServer, EnterpriseIdp};
///
/// let acme = EnterpriseIdp::new("acme", "https://login.acme.example")
///     .jwks_uri("https://login.acme.example/keys", AddressPolicy::public_only())
///     .allowed_clients(["acme-assistant"]);
/// let auth = AuthServer::builder("https://mcp.example.com")
///     .resource("https://mcp.example.com/mcp")
///     .client("acme-assistant", "a secret of at least 32 characters!", ["mcp:tools"])
///     .trust_enterprise_idp(acme)
///     .build()
///     .unwrap();
/// # let _ = auth;
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct EnterpriseIdp {
    id: String,
    issuer: String,
    keys: Vec<JwtKey>,
    jwks_uri: Option<(String, AddressPolicy)>,
    clients: Vec<String>,
    trust_groups: bool,
}

impl EnterpriseIdp {
    /// Whether the ID-JAG's `groups` claim feeds the group mapping (default off): the
    /// mapping is the operator's, so an IdP's groups count only when the operator vouches for
    /// its naming (another IdP's `admins` is not ours).
    pub fn trust_groups(mut self, trust: bool) -> Self {
        self.trust_groups = trust;
        self
    }

    pub(super) fn id(&self) -> &str {
        &self.id
    }

    /// The IdP `issuer`, known here as `id` (the prefix of its users' subjects).
    pub fn new(id: impl Into<String>, issuer: impl Into<String>) -> Self {
        EnterpriseIdp {
            id: id.into(),
            issuer: issuer.into(),
            keys: Vec::new(),
            jwks_uri: None,
            clients: Vec::new(),
            trust_groups: false,
        }
    }

    /// A public key of the IdP.
    pub fn key(mut self, key: JwtKey) -> Self {
        self.keys.push(key);
        self
    }

    /// The IdP's keys are published at `url`, reachable under `policy`.
    pub fn jwks_uri(mut self, url: impl Into<String>, policy: AddressPolicy) -> Self {
        self.jwks_uri = Some((url.into(), policy));
        self
    }

    /// The clients (configured here, confidential) that may redeem this IdP's ID-JAGs.
    pub fn allowed_clients<I: IntoIterator<Item = S>, S: Into<String>>(
        mut self,
        clients: I,
    ) -> Self {
        self.clients.extend(clients.into_iter().map(Into::into));
        self
    }

    pub(super) fn compile(&self, our_issuer: &str) -> Result<TrustedIdp, ConfigError> {
        super::upstream::check_provider_id(&self.id)?;
        if self.issuer == our_issuer {
            return Err(ConfigError::InvalidServer(
                "an enterprise IdP cannot be this server itself".into(),
            ));
        }
        let verifier: Arc<dyn TokenValidator> = match (&self.jwks_uri, self.keys.is_empty()) {
            (Some((url, policy)), true) => Arc::new(
                JwksValidator::builder(url, &self.issuer, our_issuer)
                    .expected_type(ID_JAG_JOSE_TYPE)
                    .address_policy(policy.clone())
                    .build()?,
            ),
            (None, false) => {
                let mut builder =
                    JwtValidator::builder(&self.issuer, our_issuer).expected_type(ID_JAG_JOSE_TYPE);
                for key in &self.keys {
                    builder = builder.key(key.clone());
                }
                Arc::new(builder.build()?)
            }
            _ => {
                return Err(ConfigError::InvalidServer(format!(
                    "enterprise IdP `{}` needs keys or a JWKS URL (one of the two)",
                    self.id
                )));
            }
        };
        Ok(TrustedIdp {
            id: self.id.clone(),
            issuer: self.issuer.clone(),
            verifier,
            clients: self.clients.clone(),
            trust_groups: self.trust_groups,
        })
    }
}

/// A compiled [`EnterpriseIdp`].
#[derive(Clone)]
pub(super) struct TrustedIdp {
    id: String,
    issuer: String,
    verifier: Arc<dyn TokenValidator>,
    clients: Vec<String>,
    trust_groups: bool,
}

impl std::fmt::Debug for TrustedIdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustedIdp")
            .field("id", &self.id)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// Another authorization server this one issues ID-JAGs for (acting as the enterprise IdP):
/// its issuer (the ID-JAG's `aud`), and for each of our clients, its client id there (the
/// ID-JAG's `client_id`).
#[derive(Debug, Clone)]
#[must_use]
pub struct IdJagAudience {
    pub(super) issuer: String,
    pub(super) clients: HashMap<String, String>,
}

impl IdJagAudience {
    /// The authorization server `issuer` (exactly as its metadata names itself).
    pub fn new(issuer: impl Into<String>) -> Self {
        IdJagAudience {
            issuer: issuer.into(),
            clients: HashMap::new(),
        }
    }

    /// Our client `ours` may ask for ID-JAGs for it; there it is `theirs`.
    pub fn client(mut self, ours: impl Into<String>, theirs: impl Into<String>) -> Self {
        self.clients.insert(ours.into(), theirs.into());
        self
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// `grant_type=…:jwt-bearer` with an ID-JAG: an access token for the user it names.
pub(super) async fn redeem_id_jag(
    server: &AuthServer,
    client: &Client,
    form: &HashMap<String, String>,
    jkt: Option<&str>,
) -> Result<axum::response::Response, OAuthError> {
    let invalid = |why: &'static str| OAuthError::InvalidGrant(why.into());
    let assertion = form
        .get("assertion")
        .ok_or(OAuthError::InvalidRequest("assertion is required".into()))?;
    let issuer = super::assertion::unverified_claim(assertion, "iss")
        .ok_or(invalid("the assertion is not a JWT with an issuer"))?;
    let Some(idp) = server
        .grants()
        .enterprise
        .iter()
        .find(|idp| idp.issuer == issuer)
    else {
        tracing::info!(target: audit::TARGET, client_id = %audit::Escaped(&client.client_id), issuer = %audit::Escaped(&issuer), "ID-JAG from an untrusted issuer");
        return Err(invalid("the ID-JAG's issuer is not trusted here"));
    };
    if !idp.clients.contains(&client.client_id) {
        return Err(OAuthError::UnauthorizedClient(
            "this client may not redeem this identity provider's grants".into(),
        ));
    }
    let ctx = idp
        .verifier
        .validate(assertion)
        .await
        .map_err(|e| match e {
            crate::validate::TokenError::Unavailable(detail) => {
                OAuthError::TemporarilyUnavailable(detail.into())
            }
            other => OAuthError::InvalidGrant(format!("the ID-JAG is refused: {other}").into()),
        })?;
    if ctx.claim("client_id").and_then(Value::as_str) != Some(client.client_id.as_str()) {
        return Err(invalid("the ID-JAG was issued for another client"));
    }
    let resource = match ctx.claim("resource") {
        Some(Value::String(r)) => canonical_audience(r).into_owned(),
        Some(Value::Array(list)) if list.len() == 1 => list[0]
            .as_str()
            .map(|r| canonical_audience(r).into_owned())
            .ok_or(invalid("the ID-JAG's resource is not a string"))?,
        _ => return Err(invalid("the ID-JAG names no single resource")),
    };
    if !server.grants().resources.contains(&resource) {
        return Err(OAuthError::InvalidTarget(
            "the ID-JAG is for a resource this server does not issue tokens for".into(),
        ));
    }
    if form
        .get("resource")
        .is_some_and(|r| canonical_audience(r) != resource.as_str())
    {
        return Err(OAuthError::InvalidTarget(
            "resource differs from the ID-JAG's".into(),
        ));
    }
    let exp = ctx
        .claim("exp")
        .and_then(Value::as_u64)
        .ok_or(invalid("the ID-JAG has no exp"))?;
    let now = now();
    if exp > now + MAX_ACCEPTED_LIFETIME.as_secs() {
        return Err(invalid("the ID-JAG lives longer than ten minutes"));
    }
    let jti = ctx
        .claim("jti")
        .and_then(Value::as_str)
        .filter(|j| !j.is_empty() && j.len() <= 256)
        .ok_or(invalid("the ID-JAG has no jti"))?;
    // Scope: what the IdP granted, narrowed by the request, the client's ceiling and what the
    // user's groups allow here.
    let granted = ctx.scopes().to_string();
    let Some(requested) =
        Scopes::from_space_separated(&granted).narrow(form.get("scope").map(String::as_str))
    else {
        return Err(OAuthError::InvalidScope(
            "the request asks for more than the ID-JAG grants".into(),
        ));
    };
    let groups: Vec<String> = match ctx.claim("groups") {
        Some(Value::Array(items)) if idp.trust_groups => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    let ceiling = client.scope_ceiling(server);
    let scope: Scopes =
        Scopes::from_space_separated(&server.scope_for_groups(&groups, &requested.to_string()))
            .iter()
            .filter(|s| ceiling.iter().any(|c| c == *s))
            .collect();
    // Marked used last, once nothing else can refuse the grant: a refused request (too wide a
    // scope) leaves the ID-JAG usable.
    let seen = super::keyspace::assertion_jti(&format!("id-jag:{}", idp.issuer), jti);
    let fresh = server
        .store()
        .put_if_absent(
            &seen,
            bytes::Bytes::from_static(b"1"),
            Duration::from_secs(exp.saturating_sub(now) + 60),
        )
        .await?;
    if !fresh {
        tracing::warn!(target: audit::TARGET, client_id = %audit::Escaped(&client.client_id), issuer = %audit::Escaped(&idp.issuer), "ID-JAG replayed");
        return Err(invalid("the ID-JAG was used before (replay)"));
    }
    let subject = format!("{}|{}", idp.id, ctx.subject());
    let access_token =
        server.mint_access_token(&subject, &client.client_id, &resource, &scope, None, jkt)?;
    tracing::info!(target: audit::TARGET, client_id = %audit::Escaped(&client.client_id), user = %audit::Escaped(&subject), scope = %audit::Escaped(&scope), "access token issued (ID-JAG)");
    // No refresh token: the client asks its IdP for a fresh ID-JAG instead.
    Ok(json_no_store(json!({
        "access_token": access_token, "token_type": token_type(jkt),
        "expires_in": server.grants().access_token_ttl.as_secs(), "scope": scope.to_string(),
    })))
}

/// `grant_type=…:token-exchange` for an ID-JAG: this server as the enterprise IdP, trading a
/// user's id_token (ours, issued to this client) for an ID-JAG for another server.
pub(super) async fn issue_id_jag(
    server: &AuthServer,
    client: &Client,
    form: &HashMap<String, String>,
) -> Result<axum::response::Response, OAuthError> {
    let field = |name: &'static str| {
        form.get(name).ok_or(OAuthError::InvalidRequest(
            format!("{name} is required").into(),
        ))
    };
    if field("requested_token_type")? != ID_JAG_TYPE {
        return Err(OAuthError::InvalidRequest(
            "only ID-JAGs are issued by token exchange here".into(),
        ));
    }
    if field("subject_token_type")? != ID_TOKEN_TYPE {
        return Err(OAuthError::InvalidRequest(
            "the subject token must be an id_token".into(),
        ));
    }
    if form.contains_key("actor_token") {
        return Err(OAuthError::InvalidRequest(
            "actor tokens are not supported".into(),
        ));
    }
    let audience = field("audience")?;
    let resource = field("resource")?;
    let Some(target) = server
        .grants()
        .id_jag_audiences
        .iter()
        .find(|a| a.issuer == *audience)
    else {
        return Err(OAuthError::InvalidTarget(
            "no ID-JAGs are issued for that audience".into(),
        ));
    };
    let Some(their_client) = target.clients.get(&client.client_id) else {
        return Err(OAuthError::UnauthorizedClient(
            "this client may not ask for ID-JAGs for that audience".into(),
        ));
    };
    // The id_token: ours, for this client, not expired.
    let ctx = server
        .signing_keys()
        .id_token_validator(server.issuer(), &client.client_id)
        .map_err(|e| OAuthError::ServerError(e.to_string().into()))?
        .validate(field("subject_token")?)
        .await
        .map_err(|e| OAuthError::InvalidGrant(format!("the id_token is refused: {e}").into()))?;
    if super::revocation::is_revoked(server.store().as_ref(), server.revocations(), &ctx).await? {
        return Err(OAuthError::InvalidGrant(
            "the sign-in behind the id_token was revoked".into(),
        ));
    }
    let jti = super::primitives::random_token().ok_or_else(OAuthError::no_randomness)?;
    let issued_at = now();
    let mut claims = json!({
        "iss": server.issuer(), "sub": ctx.subject(), "aud": audience, "client_id": their_client,
        "jti": jti, "iat": issued_at, "exp": issued_at + ID_JAG_LIFETIME.as_secs(),
        "resource": resource,
    });
    let scope = form.get("scope").map(|s| Scopes::from_space_separated(s));
    if let Some(scope) = &scope {
        claims["scope"] = json!(scope.to_string());
    }
    if let Some(groups) = ctx.claim("groups") {
        claims["groups"] = groups.clone();
    }
    let id_jag = server
        .signing_keys()
        .sign(&claims, ID_JAG_JOSE_TYPE)
        .map_err(|e| OAuthError::ServerError(e.to_string().into()))?;
    tracing::info!(target: audit::TARGET, client_id = %audit::Escaped(&client.client_id), user = %audit::Escaped(ctx.subject()), audience = %audit::Escaped(audience), "ID-JAG issued");
    let mut body = json!({
        "issued_token_type": ID_JAG_TYPE, "access_token": id_jag, "token_type": "N_A",
        "expires_in": ID_JAG_LIFETIME.as_secs(),
    });
    if let Some(scope) = scope {
        body["scope"] = json!(scope.to_string());
    }
    Ok(json_no_store(body))
}
