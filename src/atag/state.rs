//! What the ATAG layer and routes share: the services, the vault, connect links, request
//! states, and single-flight refreshes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::services::ExternalService;
use super::vault::{TokenSet, TokenVault};
use crate::server::{EncryptionKeys, PublicUrls, UpstreamError, digest, random_token as random};
use crate::store::{Store, StoreError};

use crate::audit;
/// How long a connect link (and the elicitation it belongs to) is valid.
pub(crate) const LINK_TTL: Duration = Duration::from_secs(600);
/// How long a `requestState` is accepted.
const REQUEST_STATE_TTL: Duration = Duration::from_secs(600);
/// How long a refresh may hold the store lock (the token endpoint's timeout is 10 s).
const REFRESH_LOCK_TTL: Duration = Duration::from_secs(15);
/// How long a call waits for another instance's refresh.
const REFRESH_LOCK_WAIT: Duration = Duration::from_secs(12);
/// Tokens this close to expiry are refreshed before use.
const EXPIRY_SKEW: Duration = Duration::from_secs(30);
const REQUEST_STATE_AAD: &[u8] = b"atag-request-state";
/// Marks the `requestState`s of this layer; others belong to the tools and pass untouched.
pub(crate) const REQUEST_STATE_PREFIX: &str = "atag1.";

/// A connect link: the user and client who called the tool, and what to ask the service for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Link {
    pub(crate) user: String,
    pub(crate) client_id: Option<String>,
    pub(crate) service: String,
    pub(crate) scopes: Vec<String>,
    pub(crate) elicitation: String,
    /// The MCP session (2025-11-25) that was told to elicit: it hears of the completion.
    #[serde(default)]
    pub(crate) session: Option<String>,
}

/// What a 2026-07-28 `requestState` carries (sealed: the client cannot read or change it).
#[derive(Debug, Serialize, Deserialize)]
struct RequestState {
    sub: String,
    cid: Option<String>,
    svc: String,
    tool: String,
    exp: u64,
    nonce: String,
}

/// Why a `requestState` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StateRefusal {
    Invalid,
    OtherPrincipal,
    OtherRequest,
    Expired,
    Replayed,
    Unavailable,
}

impl StateRefusal {
    pub(crate) fn message(self) -> &'static str {
        match self {
            StateRefusal::Invalid => "requestState is not valid",
            StateRefusal::OtherPrincipal => "requestState belongs to another user or client",
            StateRefusal::OtherRequest => "requestState belongs to another request",
            StateRefusal::Expired => "requestState has expired",
            StateRefusal::Replayed => "requestState was already used",
            StateRefusal::Unavailable => "requestState cannot be checked now; retry",
        }
    }
}

pub(crate) struct AtagState {
    pub(crate) services: HashMap<String, ExternalService>,
    pub(crate) vault: TokenVault,
    pub(crate) http: reqwest::Client,
    pub(crate) urls: PublicUrls,
    pub(crate) store: Arc<dyn Store>,
    keys: EncryptionKeys,
    /// Sessions (`Mcp-Session-Id`) whose client declared URL elicitation at `initialize`.
    pub(crate) url_sessions: moka::sync::Cache<String, ()>,
    /// Open standalone SSE streams (`GET`) of those sessions, for
    /// `notifications/elicitation/complete`.
    pub(crate) streams: moka::sync::Cache<String, tokio::sync::mpsc::UnboundedSender<bytes::Bytes>>,
    /// One refresh at a time per user and service.
    refresh_locks: moka::sync::Cache<String, Arc<tokio::sync::Mutex<()>>>,
    /// How long a token set without expiry or with a refresh token is kept.
    pub(crate) vault_ttl: Duration,
}

impl std::fmt::Debug for AtagState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AtagState")
            .field("services", &self.services.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl AtagState {
    pub(crate) fn new(
        services: HashMap<String, ExternalService>,
        store: Arc<dyn Store>,
        keys: EncryptionKeys,
        urls: PublicUrls,
        http: reqwest::Client,
    ) -> Self {
        AtagState {
            services,
            vault: TokenVault::shared(store.clone(), keys.clone()),
            http,
            urls,
            store,
            keys,
            url_sessions: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .time_to_idle(Duration::from_secs(24 * 3600))
                .build(),
            streams: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .time_to_idle(Duration::from_secs(24 * 3600))
                .build(),
            refresh_locks: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .time_to_idle(Duration::from_secs(300))
                .build(),
            vault_ttl: Duration::from_secs(90 * 24 * 3600),
        }
    }

    pub(crate) fn callback_uri(&self, service: &str) -> String {
        self.urls.endpoint(&format!("/atag/callback/{service}"))
    }

    /// How long to keep a token set: while it or its refresh token may be used.
    pub(crate) fn ttl_of(&self, tokens: &TokenSet) -> Duration {
        match (tokens.refresh_token.is_some(), tokens.expires_at) {
            (false, Some(at)) => {
                Duration::from_secs(at.saturating_sub(crate::server::unix_now()).max(1))
            }
            _ => self.vault_ttl,
        }
    }

    /// The user's usable token at `service` with `scopes`: refreshed if it expired (one
    /// refresh at a time per user and service: concurrent callers wait and reuse its
    /// result). `Ok(None)`: the user must connect (again).
    pub(crate) async fn token_for(
        &self,
        user: &str,
        service: &ExternalService,
        scopes: &[String],
    ) -> Result<Option<TokenSet>, UpstreamError> {
        let current = self.load(user, &service.id).await?;
        let Some(current) = current.filter(|t| t.grants(scopes)) else {
            return Ok(None);
        };
        if !current.expires_within(EXPIRY_SKEW) {
            return Ok(Some(current));
        }
        if current.refresh_token.is_none() {
            return Ok(None);
        }
        // One refresh at a time: callers in this process queue on a mutex (no polling),
        // and the store lock extends that to the other instances.
        let key = TokenVault::key(user, &service.id);
        let local = self.refresh_locks.get_with(key.clone(), Default::default);
        let _held = local.lock().await;
        let lock = crate::server::lock_key(&key);
        let acquired = crate::store::lock(
            self.store.as_ref(),
            &lock,
            REFRESH_LOCK_TTL,
            REFRESH_LOCK_WAIT,
        )
        .await
        .map_err(|e| UpstreamError::Unavailable(e.to_string()))?;
        if !acquired {
            return Err(UpstreamError::Unavailable(
                "another instance is refreshing this token".into(),
            ));
        }
        let result = self.refresh_locked(user, service).await;
        let _ = self.store.delete(&lock).await;
        result
    }

    async fn refresh_locked(
        &self,
        user: &str,
        service: &ExternalService,
    ) -> Result<Option<TokenSet>, UpstreamError> {
        // Whoever held the lock before may have refreshed already.
        let Some(current) = self.load(user, &service.id).await? else {
            return Ok(None);
        };
        if !current.expires_within(EXPIRY_SKEW) {
            return Ok(Some(current));
        }
        match super::client::refresh(
            &self.http,
            service,
            &self.callback_uri(&service.id),
            &current,
        )
        .await
        {
            Ok(fresh) => {
                self.vault
                    .put(user, &service.id, &fresh, self.ttl_of(&fresh))
                    .await
                    .map_err(|e| UpstreamError::Unavailable(e.to_string()))?;
                crate::metrics::atag_event(&service.id, "refreshed");
                tracing::info!(target: audit::TARGET, user, service = %crate::audit::Escaped(&service.id), "third-party token refreshed");
                Ok(Some(fresh))
            }
            Err(UpstreamError::Refused(reason)) => {
                // The grant is gone at the service: forget it, the user connects again.
                crate::metrics::atag_event(&service.id, "refresh_refused");
                tracing::info!(target: audit::TARGET, user, service = %crate::audit::Escaped(&service.id), reason = %crate::audit::Escaped(&reason), "third-party refresh refused; token dropped");
                let _ = self.vault.delete(user, &service.id).await;
                Ok(None)
            }
            Err(e) => {
                crate::metrics::atag_event(&service.id, "refresh_failed");
                Err(e)
            }
        }
    }

    async fn load(&self, user: &str, service: &str) -> Result<Option<TokenSet>, UpstreamError> {
        match self.vault.get(user, service).await {
            Ok(found) => Ok(found),
            Err(super::VaultError::Store(e)) => Err(UpstreamError::Unavailable(e.to_string())),
            Err(e) => {
                // A forged or foreign entry counts as none: the user connects again.
                tracing::warn!(target: audit::TARGET, user, service, error = %crate::audit::Escaped(&e), "vault entry refused");
                Ok(None)
            }
        }
    }

    /// Tells the session that elicited `link` that it completed (2025-11-25
    /// `notifications/elicitation/complete`), if that session has a stream open here.
    pub(crate) fn elicitation_complete(&self, link: &Link) {
        let Some(session) = &link.session else {
            return;
        };
        let Some(stream) = self.streams.get(session) else {
            return;
        };
        let notification = serde_json::json!({
            "jsonrpc": "2.0", "method": "notifications/elicitation/complete",
            "params": {"elicitationId": link.elicitation},
        });
        let event = format!("event: message\ndata: {notification}\n\n");
        if stream.send(Bytes::from(event)).is_err() {
            self.streams.invalidate(session);
        }
    }

    /// A single-use connect link for `user`; returns its URL and the elicitation id.
    pub(crate) async fn connect_link(
        &self,
        user: &str,
        client_id: Option<&str>,
        session: Option<&str>,
        service: &ExternalService,
        scopes: &[String],
    ) -> Result<(String, String), StoreError> {
        let (Some(link), Some(elicitation)) = (random(), random()) else {
            return Err(StoreError("no randomness available".into()));
        };
        let mut asked = service.scopes.clone();
        for s in scopes {
            if !asked.contains(s) {
                asked.push(s.clone());
            }
        }
        let record = Link {
            user: user.to_owned(),
            client_id: client_id.map(str::to_owned),
            service: service.id.clone(),
            scopes: asked,
            elicitation: elicitation.clone(),
            session: session.map(str::to_owned),
        };
        let bytes = serde_json::to_vec(&record).map_err(|e| StoreError(e.to_string()))?;
        self.store
            .put(link_key(&link).as_str(), Bytes::from(bytes), LINK_TTL)
            .await?;
        let mut url =
            url::Url::parse(&self.urls.endpoint(&format!("/atag/connect/{}", service.id)))
                .map_err(|e| StoreError(e.to_string()))?;
        url.query_pairs_mut().append_pair("link", &link);
        Ok((url.into(), elicitation))
    }

    /// A sealed `requestState` for a retry of `tool` by this principal.
    pub(crate) fn request_state(
        &self,
        user: &str,
        client_id: Option<&str>,
        service: &str,
        tool: &str,
    ) -> Option<String> {
        let state = RequestState {
            sub: user.to_owned(),
            cid: client_id.map(str::to_owned),
            svc: service.to_owned(),
            tool: tool.to_owned(),
            exp: crate::server::unix_now() + REQUEST_STATE_TTL.as_secs(),
            nonce: random()?,
        };
        let plain = serde_json::to_vec(&state).ok()?;
        let sealed = self.keys.seal(&plain, REQUEST_STATE_AAD).ok()?;
        Some(format!("{REQUEST_STATE_PREFIX}{sealed}"))
    }

    /// Checks a `requestState` of ours (see [`REQUEST_STATE_PREFIX`]) echoed by a client:
    /// untampered, this principal, this tool and service, not expired, and not used before
    /// (spent here).
    pub(crate) async fn check_request_state(
        &self,
        sealed: &str,
        user: &str,
        client_id: Option<&str>,
        service: &str,
        tool: &str,
    ) -> Result<(), StateRefusal> {
        let sealed = sealed
            .strip_prefix(REQUEST_STATE_PREFIX)
            .ok_or(StateRefusal::Invalid)?;
        let plain = self
            .keys
            .open(sealed, REQUEST_STATE_AAD)
            .map_err(|_| StateRefusal::Invalid)?;
        let state: RequestState =
            serde_json::from_slice(&plain).map_err(|_| StateRefusal::Invalid)?;
        if state.sub != user || state.cid.as_deref() != client_id {
            return Err(StateRefusal::OtherPrincipal);
        }
        if state.tool != tool || state.svc != service {
            return Err(StateRefusal::OtherRequest);
        }
        let now = crate::server::unix_now();
        if state.exp <= now {
            return Err(StateRefusal::Expired);
        }
        let ttl = Duration::from_secs(state.exp - now);
        match self
            .store
            .put_if_absent(
                &format!("atag:rs:{}", state.nonce), // spent request states
                Bytes::from_static(b"1"),
                ttl,
            )
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(StateRefusal::Replayed),
            // Single use cannot be guaranteed: refuse, as retryable.
            Err(_) => Err(StateRefusal::Unavailable),
        }
    }
}

/// The store key of the connect link `link` (by digest: the link itself is a secret).
pub(crate) fn link_key(link: &str) -> crate::server::Key<Link> {
    crate::server::Key::new("atag:link:", &digest(link))
}
