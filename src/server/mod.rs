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

mod auth_server;
mod cimd;
#[cfg(feature = "atag")]
mod connect;
mod flow;
mod keys;
mod login;
mod source;
mod upstream;
mod urls;

pub use self::auth_server::{AuthServer, AuthServerBuilder, RevocationAwareValidator};
pub(crate) use self::auth_server::{now as unix_now, random_token};
pub(crate) use self::flow::digest;
pub use self::keys::{DEFAULT_RETENTION, EncryptionKeys, RingValidator, SealError, SigningKeys};
pub use self::source::{ClientAddress, ClientRegistration, PeerAddress, TrustedProxies};
pub use self::upstream::{
    GitHubProvider, IdentityProvider, OidcProvider, OidcProviderBuilder, UpstreamError,
    UpstreamStart, UpstreamUser,
};
pub(crate) use self::upstream::{check_provider_id, http_client, send, token_error};
pub use self::urls::PublicUrls;
