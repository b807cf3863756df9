//! The OAuth 2.1 authorization server (feature `server`).
//!
//! [`AuthServer`] is an axum router to mount beside the MCP route: RFC 8414 / OpenID discovery,
//! JWKS, RFC 7591 registration and client ID metadata documents, the authorization code flow
//! with PKCE (users sign in at an upstream [`IdentityProvider`] such as [`OidcProvider`] or
//! [`GitHubProvider`], or at the embedded dev login), consent, the token endpoint
//! (`authorization_code`, `refresh_token` with rotation, `client_credentials`), RFC 7009
//! revocation and RFC 7662 introspection. Under it: the [`SigningKeys`] and [`EncryptionKeys`]
//! rings (separate purposes, each key with an id), the canonical [`PublicUrls`] builder, and the
//! [`ClientAddress`] extractors that per-source limits key on. State goes through
//! [`crate::store::Store`].

mod assemble;
mod assertion;
mod auth_server;
mod authorize;
mod cimd;
mod clients;
mod code_grant;
mod config;
mod consent;
mod cookies;
mod enterprise;
mod error;
mod health;
mod introspect;
mod keys;
mod keyspace;
mod login;
mod metadata;
mod pages;
mod primitives;
mod redirect;
mod refresh;
mod registration;
mod revocation;
mod revocation_list;
mod sealing;
mod source;
mod storage;
mod token;
mod upstream;
mod urls;
mod userinfo;

pub use self::assertion::MachineClient;
pub use self::auth_server::AuthServer;
pub use self::config::AuthServerBuilder;
pub use self::enterprise::{EnterpriseIdp, IdJagAudience};
pub use self::health::{READINESS_TIMEOUT, Readiness};
pub use self::keys::{DEFAULT_RETENTION, RingValidator, SigningKeys};
pub use self::revocation::RevocationAwareValidator;
pub use self::sealing::{EncryptionKeys, SealError};
pub use self::source::ClientRegistration;
#[cfg_attr(not(feature = "atag"), allow(unused_imports))]
pub(crate) use self::upstream::check_provider_id;
pub use self::upstream::{
    GitHubProvider, IdentityProvider, OidcProvider, OidcProviderBuilder, UpstreamError,
    UpstreamStart, UpstreamUser,
};
pub use self::urls::PublicUrls;
pub use crate::address::{ClientAddress, PeerAddress, TrustedProxies};
// What modules built on the server (ATAG) use: its pages, sign-in session, store records and
// HTTP primitives.
#[cfg_attr(not(feature = "atag"), allow(unused_imports))]
pub(crate) use self::{
    error::{OAuthError, no_store},
    keyspace::{Key, lock as lock_key},
    login::logged_in_user,
    pages::{connected_page, error_page, upstream_error_page},
    primitives::{digest, now as unix_now, parse_form, random_token},
    storage::{load, save, spend},
    userinfo::{CallerRequest, bearer_caller},
};
