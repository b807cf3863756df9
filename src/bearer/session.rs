//! Binding stateful MCP sessions (`Mcp-Session-Id`, protocol revisions before 2026-07-28) to the
//! principal that opened them.
//!
//! rmcp hands each HTTP request's own credentials to the tools and never checks that a session
//! is used by the principal that created it. Without this binding, anyone holding a valid token
//! and a leaked or guessed session id could drive another user's session (the specification's
//! session hijacking threat).

use std::sync::Arc;
use std::time::Duration;

use crate::AuthContext;

/// The principal a session belongs to: issuer and subject, as the specification suggests
/// (`<user_id>:<session_id>`, with the user id taken from the token).
#[derive(Debug, Clone, PartialEq, Eq)]
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
#[derive(Clone)]
pub(crate) struct SessionBindings {
    sessions: moka::sync::Cache<Box<str>, Arc<Principal>>,
}

/// The longest session id accepted; rmcp's are UUIDs. Longer ones are refused unread.
const MAX_SESSION_ID_LEN: usize = 256;

impl SessionBindings {
    pub(crate) fn new(capacity: u64, idle: Duration) -> Self {
        SessionBindings {
            sessions: moka::sync::Cache::builder()
                .max_capacity(capacity)
                // A session just opened must be kept: TinyLFU may refuse newcomers when full.
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .time_to_idle(idle)
                .build(),
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
        if session_id.len() <= MAX_SESSION_ID_LEN {
            self.sessions
                .insert(Box::from(session_id), Arc::new(principal));
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
