//! [`AuthServerBuilder`]: everything an authorization server is configured with, checked once
//! when it is built.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::SigningKeys;
use super::source::{ClientRegistration, RegistrationPolicy};
use super::upstream::IdentityProvider;
use crate::address::{ClientAddress, PeerAddress};
use crate::policy::GroupMapping;
use crate::store::Store;

/// Dynamic registrations allowed per client address and hour, by default.
pub(super) const DEFAULT_REGISTRATIONS_PER_HOUR: u64 = 20;

/// Builder of [`AuthServer`].
#[must_use]
pub struct AuthServerBuilder {
    pub(super) base: String,
    pub(super) resources: Vec<String>,
    pub(super) scopes_supported: Vec<String>,
    pub(super) keys: Option<SigningKeys>,
    pub(super) store: Option<Arc<dyn Store>>,
    pub(super) clients: Vec<(String, String, Vec<String>)>,
    pub(super) public_clients: Vec<(String, Vec<String>, Vec<String>)>,
    pub(super) machine_clients: Vec<super::MachineClient>,
    pub(super) users: Vec<(String, String, Vec<String>)>,
    pub(super) providers: Vec<Arc<dyn IdentityProvider>>,
    pub(super) groups: Option<GroupMapping>,
    pub(super) user_scopes: Vec<String>,
    pub(super) prefill: bool,
    pub(super) scope_descriptions: HashMap<String, String>,
    pub(super) access_token_ttl: Duration,
    pub(super) dpop: crate::dpop::Dpop,
    pub(super) enterprise: Vec<super::EnterpriseIdp>,
    pub(super) id_jag_audiences: Vec<super::IdJagAudience>,
    pub(super) refresh_token_ttl: Duration,
    pub(super) refresh_grace: Duration,
    pub(super) cimd_development: bool,
    pub(super) client_address: Arc<dyn ClientAddress>,
    pub(super) registration_limit: Option<(u64, Duration)>,
    pub(super) registration_limit_loopback: bool,
    pub(super) allowed_hosts: Vec<String>,
    pub(super) registration_policy: Option<RegistrationPolicy>,
    pub(super) server_name: Option<String>,
    pub(super) page_templates: Vec<(String, String)>,
}

impl std::fmt::Debug for AuthServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthServerBuilder")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl AuthServerBuilder {
    /// The defaults of [`AuthServer::builder`].
    pub(super) fn new(base: String) -> Self {
        AuthServerBuilder {
            base,
            resources: Vec::new(),
            scopes_supported: Vec::new(),
            keys: None,
            store: None,
            clients: Vec::new(),
            public_clients: Vec::new(),
            machine_clients: Vec::new(),
            users: Vec::new(),
            providers: Vec::new(),
            groups: None,
            user_scopes: Vec::new(),
            prefill: false,
            scope_descriptions: HashMap::new(),
            access_token_ttl: Duration::from_secs(900),
            dpop: crate::dpop::Dpop::new(),
            enterprise: Vec::new(),
            id_jag_audiences: Vec::new(),
            refresh_token_ttl: Duration::from_secs(30 * 24 * 3600),
            refresh_grace: Duration::ZERO,
            client_address: Arc::new(PeerAddress),
            registration_limit: Some((DEFAULT_REGISTRATIONS_PER_HOUR, Duration::from_secs(3600))),
            registration_limit_loopback: false,
            allowed_hosts: Vec::new(),
            registration_policy: None,
            cimd_development: false,
            server_name: None,
            page_templates: Vec::new(),
        }
    }

    /// Takes the scope descriptions `policy` carries
    /// ([`ToolPolicyBuilder::describe_scope`](crate::policy::ToolPolicyBuilder::describe_scope))
    /// for the consent page; a description given with [`scope_description`](Self::scope_description)
    /// wins.
    pub fn describe_scopes_of(mut self, policy: &crate::ToolPolicy) -> Self {
        for (scope, text) in policy.scope_descriptions() {
            self.scope_descriptions
                .entry(scope.clone())
                .or_insert_with(|| text.clone());
        }
        self
    }

    /// The name in every page's header (default: the issuer's host), so a person knows whose
    /// sign-in and consent pages they are on.
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Replaces the page `name` (`base.html`, `login.html`, `consent.html`, `error.html`,
    /// `connected.html`) with the minijinja template `source`, to brand or translate the
    /// pages. Every variable stays HTML-escaped. A template that does not compile, or fails to
    /// render with an empty context, fails [`build`](Self::build). Forms must post back the
    /// `request` and `csrf` fields: without them the handlers refuse the post, whatever the
    /// page shows.
    ///
    /// Every page's context holds `server_name` and `title`; then:
    ///
    /// | page | variables |
    /// |---|---|
    /// | `base.html` | block `body` (the others extend it) |
    /// | `login.html` | `client`, `resource`, `providers` (each `name`, `action`), `dev`, `username`, `password`, `error`, `action`, `request`, `csrf` |
    /// | `consent.html` | `client`, `user`, `resource`, `redirect_host`, `redirect_uri`, `scopes` (each `name`, `description`, `new`), `added`, `action`, `request`, `csrf` |
    /// | `error.html` | `message`, `hint` |
    /// | `connected.html` | `service`, `user`, `scopes` (granted at the service), `client_id` |
    ///
    /// `client` is `{ name, id, kind, verified, domain, client_uri, logo_uri }`; `kind` is
    /// `operator` (configured in code: `verified` is true), `metadata_document` (fetched from
    /// `domain`, the host of its `client_id` URL; `client_uri` and `logo_uri` only when on that
    /// host) or `self_registered` (dynamic registration: the name is the client's own claim).
    /// The default templates import the macro `who(client)` from `client.html`.
    ///
    /// ```
    /// use tower_mcp_auth::server::AuthServer;
    ///
    /// let auth = AuthServer::builder("https://mcp.example.com")
    ///     .resource("https://mcp.example.com/mcp")
    ///     .dev_user("demo", "demo")
    ///     .server_name("Example Notes")
    ///     .page_template("error.html", r#"{% extends "base.html" %}{% block body %}<h1>Oups</h1><p>{{ message }}</p>{% endblock %}"#)
    ///     .build()
    ///     .unwrap();
    /// # let _ = auth;
    /// ```
    pub fn page_template(mut self, name: impl Into<String>, source: impl Into<String>) -> Self {
        self.page_templates.push((name.into(), source.into()));
        self
    }

    /// The public base URL the server was built for.
    #[cfg_attr(not(feature = "gateway"), allow(dead_code))]
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// A resource (canonical URI of an MCP endpoint) this server issues tokens for.
    pub fn resource(mut self, uri: impl Into<String>) -> Self {
        self.resources.push(uri.into());
        self
    }

    /// The scopes clients may request. Self-registered clients (dynamic registration, client
    /// ID metadata documents) may ask for any of them, whatever `scope` they registered: that
    /// is recorded, not enforced, since a client can always register itself again with a
    /// wider one, and as a ceiling it would only stop step-up. What a user receives is decided
    /// by the user's own grants ([`AuthServerBuilder::groups`]) and consent.
    pub fn scopes_supported<I: IntoIterator<Item = S>, S: Into<String>>(
        mut self,
        scopes: I,
    ) -> Self {
        self.scopes_supported
            .extend(scopes.into_iter().map(Into::into));
        self
    }

    /// Signing keys (default: one generated at start-up).
    pub fn signing_keys(mut self, keys: SigningKeys) -> Self {
        self.keys = Some(keys);
        self
    }

    /// Where state lives (default: a [`MemoryStore`]).
    pub fn store(mut self, store: impl Store) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// A pre-registered confidential client allowed `scopes` (an enforced ceiling: a request
    /// for more is `invalid_scope`). Secrets must have at least 32 characters.
    pub fn client<I: IntoIterator<Item = S>, S: Into<String>>(
        mut self,
        id: impl Into<String>,
        secret: impl Into<String>,
        scopes: I,
    ) -> Self {
        self.clients.push((
            id.into(),
            secret.into(),
            scopes.into_iter().map(Into::into).collect(),
        ));
        self
    }

    /// How DPoP proofs on token requests are checked (RFC 9449; default
    /// [`Dpop::new`](crate::dpop::Dpop::new), no nonces). A token request with a `DPoP` proof
    /// gets tokens bound to the proof's key (`cnf.jkt`, `token_type` `DPoP`), refresh tokens
    /// included; one without gets bearer tokens.
    pub fn dpop(mut self, dpop: crate::dpop::Dpop) -> Self {
        self.dpop = dpop;
        self
    }

    /// Redeems the ID-JAGs of this enterprise identity provider (RFC 7523 `jwt-bearer` grant,
    /// the MCP enterprise-managed authorization extension): see
    /// [`EnterpriseIdp`](super::EnterpriseIdp).
    pub fn trust_enterprise_idp(mut self, idp: super::EnterpriseIdp) -> Self {
        self.enterprise.push(idp);
        self
    }

    /// Acts as an enterprise identity provider for `audience`: our clients trade a user's
    /// id_token for an ID-JAG addressed to it (RFC 8693 token exchange); see
    /// [`IdJagAudience`](super::IdJagAudience).
    pub fn issue_id_jags_for(mut self, audience: super::IdJagAudience) -> Self {
        self.id_jag_audiences.push(audience);
        self
    }

    /// A machine client that authenticates with a signed JWT (`private_key_jwt`, RFC 7523)
    /// for the `client_credentials` grant: see [`MachineClient`](super::MachineClient).
    pub fn machine_client(mut self, client: super::MachineClient) -> Self {
        self.machine_clients.push(client);
        self
    }

    /// A pre-registered public client (PKCE, no secret) with its redirect URIs, allowed
    /// `scopes` (an enforced ceiling, unlike a self-registered client's `scope`).
    pub fn public_client<R, I>(mut self, id: impl Into<String>, redirect_uris: R, scopes: I) -> Self
    where
        R: IntoIterator,
        R::Item: Into<String>,
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.public_clients.push((
            id.into(),
            redirect_uris.into_iter().map(Into::into).collect(),
            scopes.into_iter().map(Into::into).collect(),
        ));
        self
    }

    /// A user of the embedded dev login (the default login: no outside service needed). Dev
    /// users or an identity provider enable the authorization code flow.
    pub fn dev_user(mut self, name: impl Into<String>, password: impl Into<String>) -> Self {
        self.users.push((name.into(), password.into(), Vec::new()));
        self
    }

    /// A dev login user who belongs to `groups` (see [`AuthServerBuilder::groups`]).
    pub fn dev_user_in_groups<I: IntoIterator<Item = S>, S: Into<String>>(
        mut self,
        name: impl Into<String>,
        password: impl Into<String>,
        groups: I,
    ) -> Self {
        self.users.push((
            name.into(),
            password.into(),
            groups.into_iter().map(Into::into).collect(),
        ));
        self
    }

    /// An upstream identity provider users sign in with ([`super::OidcProvider`],
    /// [`super::GitHubProvider`], or your own). With one provider and no dev users, the
    /// authorization endpoint sends the browser straight to it; otherwise the sign-in page
    /// offers each. Subjects of its users are `{provider id}|{subject}`.
    pub fn identity_provider(mut self, provider: impl IdentityProvider) -> Self {
        self.providers.push(Arc::new(provider));
        self
    }

    /// Maps users' groups (from the identity provider, or of dev users) to the scopes they may
    /// be granted, with the policy model's [`GroupMapping`] (its `scopes` table). With a
    /// mapping, a user gets at most the [`AuthServerBuilder::user_scopes`] plus what their
    /// groups grant, whatever the client asks; without one, users may get any scope the client
    /// may.
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use tower_mcp_auth::policy::GroupMapping;
    /// use tower_mcp_auth::server::AuthServer;
    ///
    /// let mapping = GroupMapping {
    ///     scopes: BTreeMap::from([("admins".to_owned(), vec!["notes:admin".to_owned()])]),
    ///     ..GroupMapping::default()
    /// };
    /// let auth = AuthServer::builder("http://127.0.0.1:8080")
    ///     .resource("http://127.0.0.1:8080/mcp")
    ///     .scopes_supported(["mcp:tools", "notes:admin"])
    ///     .dev_user_in_groups("alice", "pw", ["admins"])
    ///     .dev_user("bob", "pw")
    ///     .groups(mapping)
    ///     .user_scopes(["mcp:tools"])
    ///     .build()
    ///     .unwrap();
    /// # let _ = auth;
    /// ```
    pub fn groups(mut self, mapping: GroupMapping) -> Self {
        self.groups = Some(mapping);
        self
    }

    /// The scopes every user may be granted when a group mapping is set (default none).
    pub fn user_scopes<I: IntoIterator<Item = S>, S: Into<String>>(mut self, scopes: I) -> Self {
        self.user_scopes.extend(scopes.into_iter().map(Into::into));
        self
    }

    /// Also serves requests whose `Host` is one of `hosts` (host names, without port). By
    /// default the routes answer only to the issuer's host name (and, for a loopback issuer, to
    /// `localhost`, `127.0.0.1` and `[::1]`): a page on a name an attacker re-points at this
    /// server (DNS rebinding) gets 421, not the sign-in page. Add the internal names a reverse
    /// proxy uses if it does not pass the public `Host` through.
    pub fn allowed_hosts<I: IntoIterator<Item = S>, S: Into<String>>(mut self, hosts: I) -> Self {
        self.allowed_hosts
            .extend(hosts.into_iter().map(|h| h.into().to_ascii_lowercase()));
        self
    }

    /// What `scope` lets a client do, in words for the consent page ("Read your notes"). Scopes
    /// without one are shown by name; `openid`, `profile`, `email` and `offline_access` have
    /// descriptions already.
    pub fn scope_description(mut self, scope: impl Into<String>, text: impl Into<String>) -> Self {
        self.scope_descriptions.insert(scope.into(), text.into());
        self
    }

    /// Prefills the dev login form with the first user (for demos: one click signs in).
    pub fn prefill_login(mut self, prefill: bool) -> Self {
        self.prefill = prefill;
        self
    }

    /// Refresh-token rotation is strict by default: a rotated token presented again revokes
    /// its whole family at once (RFC 9700 §4.14.2), which is how a stolen token is detected.
    /// A grace window (opt-in, e.g. 30 s, for clients that retry after a lost response)
    /// answers such a retry, while the successor is still unused, with the *same* successor
    /// (and a fresh access token): no second chain ever exists, and the rotated token
    /// presented after the window or after its successor was used still revokes the family.
    pub fn refresh_grace(mut self, grace: Duration) -> Self {
        self.refresh_grace = grace;
        self
    }

    /// Development mode for client ID metadata documents: plain http and loopback or private
    /// hosts are fetched too. Never in production: it opens the server to SSRF.
    pub fn allow_development_client_metadata(mut self) -> Self {
        self.cimd_development = true;
        self
    }

    /// How the address of a client is found, for per-source limits (default [`PeerAddress`]:
    /// the TCP peer, which needs `into_make_service_with_connect_info::<SocketAddr>()`). Behind
    /// a reverse proxy use [`super::TrustedProxies`]. Requests whose address cannot be told
    /// share one bucket.
    pub fn client_address(mut self, extractor: impl ClientAddress) -> Self {
        self.client_address = Arc::new(extractor);
        self
    }

    /// At most `max` dynamic registrations per client address in each window of `per`
    /// (default 20 per hour); beyond it, 429 with `Retry-After`. `None` lifts the limit.
    ///
    /// On a server whose issuer is a loopback URL (a developer's machine), clients on that
    /// machine (a loopback address, with no `Forwarded`, `X-Forwarded-For` or `X-Real-IP`
    /// header) are not counted by default: a person who restarts a desktop client a few dozen
    /// times must not be locked out for an hour. A server with a public issuer counts every
    /// client, loopback peers included: there a loopback peer is a proxy or a tunnel relaying
    /// someone else, which may add no forwarding header. Behind a proxy, configure
    /// [`super::TrustedProxies`] so each client gets its own bucket. See
    /// [`AuthServerBuilder::registration_limit_loopback`].
    pub fn registration_limit(mut self, limit: Option<(u64, Duration)>) -> Self {
        self.registration_limit = limit;
        self
    }

    /// Whether the registration limit also counts loopback clients of a loopback issuer
    /// (default `false`: they are exempt, see [`AuthServerBuilder::registration_limit`]; the
    /// clients of a public issuer are always counted).
    pub fn registration_limit_loopback(mut self, count_loopback: bool) -> Self {
        self.registration_limit_loopback = count_loopback;
        self
    }

    /// A policy every new client must pass (dynamic registrations and client ID metadata
    /// documents alike), after the built-in checks: `Err(reason)` refuses it with
    /// `invalid_client_metadata`.
    ///
    /// ```
    /// use tower_mcp_auth::server::AuthServer;
    ///
    /// // Only client metadata documents from our own domain; registrations need a name.
    /// let auth = AuthServer::builder("https://mcp.example.com")
    ///     .resource("https://mcp.example.com/mcp")
    ///     .dev_user("demo", "demo")
    ///     .registration_policy(|client| match client.metadata_document {
    ///         Some(url) if !url.starts_with("https://apps.example.com/") => {
    ///             Err("unknown client publisher".into())
    ///         }
    ///         None if client.client_name.is_none() => Err("client_name is required".into()),
    ///         _ => Ok(()),
    ///     })
    ///     .build()
    ///     .unwrap();
    /// # let _ = auth;
    /// ```
    pub fn registration_policy<F>(mut self, policy: F) -> Self
    where
        F: Fn(&ClientRegistration<'_>) -> Result<(), String> + Send + Sync + 'static,
    {
        self.registration_policy = Some(Arc::new(policy));
        self
    }

    /// Lifetime of refresh tokens (default 30 days).
    pub fn refresh_token_ttl(mut self, ttl: Duration) -> Self {
        self.refresh_token_ttl = ttl;
        self
    }

    /// Lifetime of access tokens (default 15 minutes).
    pub fn access_token_ttl(mut self, ttl: Duration) -> Self {
        self.access_token_ttl = ttl;
        self
    }
}
