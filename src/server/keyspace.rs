//! The store's keyspace: every kind of record the authorization server keeps, each with its one
//! key function, so a prefix is written once and a key says what it holds ([`Key`] carries the
//! record's type). Counters and locks, which hold no record, have key functions too. ATAG builds
//! its own keys with [`Key::new`] under the `atag:` prefix.
//!
//! Security markers are under `pin:` ([`crate::store::PINNED_PREFIX`]): the memory store never
//! evicts them early.
//!
//! | prefix | record | lives |
//! |---|---|---|
//! | `client:` | a self-registered client | a day unused, then as long as its grants |
//! | `authreq:` | an authorization request waiting for sign-in and consent | 10 minutes |
//! | `code:` | what an authorization code grants (by digest) | 60 s, single use |
//! | `pin:usedcode:` | the family of a redeemed code (replay detection) | the refresh lifetime |
//! | `pin:rt:` | a refresh token (by digest) and its rotation state (reuse detection) | the refresh lifetime |
//! | `pin:revoked:`, `pin:revoked-family:` | a revoked access token, a revoked grant family | until the tokens expire |
//! | `consent:` | the scopes a user allowed a client | the refresh lifetime |
//! | `session:` | a sign-in session (by digest of its cookie) | the session lifetime |
//! | `upstream:` | an upstream sign-in in progress (by digest of its `state`) | 10 minutes |
//! | `cimd:` | a fetched client metadata document | its cache lifetime, a day at most |
//! | `regcount:`, `attempts:`, `authfail:`, `loginfail-user:`, `loginfail-addr:`, `lock:` | counters and locks | their window |
//! | `keys:signing` | the shared signing key, sealed ([`SigningKeys::shared`](super::SigningKeys::shared)) | ten years |
//! | `log:revocations` | the revocation log every replica reads | the access token lifetime |

use std::marker::PhantomData;

use super::authorize::Pending;
use super::clients::Client;
use super::code_grant::Grant;
use super::login::{Session, UpstreamPending};
use super::refresh::Refresh;

/// The store key of one record whose value is a `T`.
pub(crate) struct Key<T> {
    key: String,
    record: PhantomData<fn() -> T>,
}

impl<T> Key<T> {
    /// The key `{prefix}{id}`.
    pub(crate) fn new(prefix: &str, id: &str) -> Self {
        Key::from_stored(format!("{prefix}{id}"))
    }

    /// A key kept inside another record (a refresh token's parent or child).
    pub(super) fn from_stored(key: String) -> Self {
        Key {
            key,
            record: PhantomData,
        }
    }

    /// The key as the store sees it.
    pub(crate) fn as_str(&self) -> &str {
        &self.key
    }

    /// The key, to keep inside another record.
    pub(super) fn into_string(self) -> String {
        self.key
    }
}

pub(super) fn client(id: &str) -> Key<Client> {
    Key::new("client:", id)
}

pub(super) fn pending(id: &str) -> Key<Pending> {
    Key::new("authreq:", id)
}

pub(super) fn code(digest: &str) -> Key<Grant> {
    Key::new("code:", digest)
}

/// The family of a redeemed code: a replay revokes it.
pub(super) fn used_code(digest: &str) -> Key<String> {
    Key::new("pin:usedcode:", digest)
}

pub(super) fn refresh_token(digest: &str) -> Key<Refresh> {
    Key::new("pin:rt:", digest)
}

/// Present when the grant family was revoked (read by the bearer layer's validator too).
pub(super) fn revoked_family(family: &str) -> Key<bool> {
    Key::new("pin:revoked-family:", family)
}

/// Present (`true`) when the access token `jti` was revoked.
pub(super) fn revoked_token(jti: &str) -> Key<bool> {
    Key::new("pin:revoked:", jti)
}

/// The scopes `user` allowed `client` for one resource and redirect URI (`scope_of`: the
/// digest of the two).
pub(super) fn consent(user: &str, client: &str, scope_of: &str) -> Key<String> {
    Key::new("consent:", &format!("{user}:{client}:{scope_of}"))
}

pub(super) fn session(digest: &str) -> Key<Session> {
    Key::new("session:", digest)
}

pub(super) fn upstream_signin(digest: &str) -> Key<UpstreamPending> {
    Key::new("upstream:", digest)
}

/// A fetched client metadata document, as the client it describes.
pub(super) fn metadata_document(client_id: &str) -> Key<Client> {
    Key::new("cimd:", client_id)
}

/// The registrations counted for one client address in one window.
pub(super) fn registration_count(bucket: &str, window: u64) -> String {
    format!("regcount:{bucket}:{window}")
}

/// A client assertion's `jti`, remembered until the assertion expires (replay).
pub(super) fn assertion_jti(client_id: &str, jti: &str) -> String {
    format!(
        "assertion-jti:{}",
        super::primitives::digest(&format!("{client_id}\n{jti}"))
    )
}

/// The failed client authentications of one client id, in the current window.
pub(super) fn client_auth_failures(client_id: &str) -> String {
    format!("authfail:{}", super::primitives::digest(client_id))
}

/// Failed dev sign-ins for one user name (by digest: the name is the attacker's text).
pub(super) fn login_failures_of_user(username: &str) -> String {
    format!("loginfail-user:{}", super::primitives::digest(username))
}

/// Failed dev sign-ins from one client address.
pub(super) fn login_failures_from(address: std::net::IpAddr) -> String {
    match address.to_canonical() {
        // An IPv6 client holds a whole /64.
        std::net::IpAddr::V6(ip) => {
            let [a, b, c, d, ..] = ip.segments();
            format!("loginfail-addr:{a:x}:{b:x}:{c:x}:{d:x}::/64")
        }
        ip => format!("loginfail-addr:{ip}"),
    }
}

/// The wrong passwords counted for one sign-in request.
pub(super) fn login_attempts(request: &str) -> String {
    format!("attempts:{request}")
}

/// The lock held while `key` is used.
pub(crate) fn lock(key: &str) -> String {
    format!("lock:{key}")
}
