//! Binding stateful MCP sessions (`Mcp-Session-Id`, protocol revisions before 2026-07-28) to the
//! principal that opened them.
//!
//! rmcp hands each HTTP request's own credentials to the tools and never checks that a session
//! is used by the principal that created it. Without this binding, anyone holding a valid token
//! and a leaked or guessed session id could drive another user's session (the specification's
//! session hijacking threat).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::AuthContext;

/// The principal a session belongs to: issuer and subject, as the specification suggests
/// (`<user_id>:<session_id>`, with the user id taken from the token).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Principal {
    issuer: Option<Box<str>>,
    subject: Box<str>,
}

impl Principal {
    pub(crate) fn of(ctx: &AuthContext) -> Self {
        Principal {
            issuer: ctx.issuer().map(Box::from),
            subject: Box::from(ctx.subject()),
        }
    }

    fn is(&self, ctx: &AuthContext) -> bool {
        *self.subject == *ctx.subject() && self.issuer.as_deref() == ctx.issuer()
    }
}

/// What a request may do with the session it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionCheck {
    /// The session belongs to the caller.
    Owner,
    /// The session is unknown here or belongs to someone else; both are answered alike, so a
    /// caller cannot learn that another user's session exists.
    Refused,
}

/// Session id to principal, in memory, entries dropped after an idle period.
///
/// Each principal holds at most [`MAX_SESSIONS_PER_PRINCIPAL`] bindings: opening more drops
/// that principal's own oldest, so one user opening sessions in a loop cannot push other
/// users' bindings out of the cache (their sessions would then be refused).
#[derive(Clone)]
pub(crate) struct SessionBindings {
    sessions: moka::sync::Cache<Box<str>, Arc<Principal>>,
    by_principal: ByPrincipal,
}

/// The longest session id accepted; rmcp's are UUIDs. Longer ones are refused unread.
const MAX_SESSION_ID_LEN: usize = 256;

/// Bindings one principal may hold at once.
pub(crate) const MAX_SESSIONS_PER_PRINCIPAL: usize = 64;

type ByPrincipal = Arc<Mutex<HashMap<Arc<Principal>, VecDeque<Box<str>>>>>;

fn lock(
    map: &ByPrincipal,
) -> std::sync::MutexGuard<'_, HashMap<Arc<Principal>, VecDeque<Box<str>>>> {
    // A poisoned lock only means a panic elsewhere mid-update; the map is still usable.
    map.lock().unwrap_or_else(|e| e.into_inner())
}

impl SessionBindings {
    pub(crate) fn new(capacity: u64, idle: Duration) -> Self {
        let by_principal: ByPrincipal = Arc::default();
        let forget = by_principal.clone();
        SessionBindings {
            sessions: moka::sync::Cache::builder()
                .max_capacity(capacity)
                // A session just opened must be kept: TinyLFU may refuse newcomers when full.
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .time_to_idle(idle)
                // Whatever removes a binding (idle, capacity, unbind), its principal's list
                // forgets it too.
                .eviction_listener(move |id: Arc<Box<str>>, principal: Arc<Principal>, _| {
                    let mut map = lock(&forget);
                    if let Some(ids) = map.get_mut(&principal) {
                        ids.retain(|held| **held != **id);
                        if ids.is_empty() {
                            map.remove(&principal);
                        }
                    }
                })
                .build(),
            by_principal,
        }
    }

    pub(crate) fn check(&self, session_id: &str, ctx: &AuthContext) -> SessionCheck {
        if session_id.len() > MAX_SESSION_ID_LEN {
            return SessionCheck::Refused;
        }
        match self.sessions.get(session_id) {
            Some(owner) if owner.is(ctx) => SessionCheck::Owner,
            _ => SessionCheck::Refused,
        }
    }

    pub(crate) fn bind(&self, session_id: &str, principal: Principal) {
        if session_id.len() > MAX_SESSION_ID_LEN {
            return;
        }
        let principal = Arc::new(principal);
        let dropped = {
            let mut map = lock(&self.by_principal);
            let ids = map.entry(principal.clone()).or_default();
            ids.push_back(Box::from(session_id));
            (ids.len() > MAX_SESSIONS_PER_PRINCIPAL)
                .then(|| ids.pop_front())
                .flatten()
        };
        self.sessions.insert(Box::from(session_id), principal);
        // Outside the lock: the eviction listener takes it.
        if let Some(oldest) = dropped {
            self.sessions.invalidate(&oldest);
        }
    }

    pub(crate) fn unbind(&self, session_id: &str) {
        self.sessions.invalidate(session_id);
    }
}

impl std::fmt::Debug for SessionBindings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionBindings")
            .field("sessions", &self.sessions.entry_count())
            .finish()
    }
}

#[cfg(test)]
mod eviction_tests {
    use super::*;

    fn ctx(subject: &str) -> AuthContext {
        AuthContext::from_claims(
            serde_json::json!({"sub": subject, "iss": "https://as.example"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        )
        .unwrap()
    }

    #[test]
    fn one_user_opening_sessions_in_a_loop_cannot_evict_another_users_binding() {
        let bindings = SessionBindings::new(1_000, Duration::from_secs(3600));
        let (victim, flooder) = (ctx("victim"), ctx("flooder"));
        bindings.bind("victim-session", Principal::of(&victim));
        for i in 0..5_000 {
            bindings.bind(&format!("flood-{i}"), Principal::of(&flooder));
        }
        bindings.sessions.run_pending_tasks();
        assert_eq!(
            bindings.check("victim-session", &victim),
            SessionCheck::Owner,
            "the victim's session survives the flood"
        );
        // The flooder keeps only its newest sessions.
        assert_eq!(bindings.check("flood-4999", &flooder), SessionCheck::Owner);
        assert_eq!(bindings.check("flood-0", &flooder), SessionCheck::Refused);
        let held = lock(&bindings.by_principal)
            .get(&Principal::of(&flooder))
            .map_or(0, VecDeque::len);
        assert_eq!(held, MAX_SESSIONS_PER_PRINCIPAL);
    }
}
