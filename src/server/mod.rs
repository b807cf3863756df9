//! Building blocks of the OAuth 2.1 authorization server (feature `server`).
//!
//! [`AuthServer`] serves, so far, machine-to-machine clients: RFC 8414 / OpenID discovery
//! metadata, JWKS, RFC 7591 registration of confidential clients, the token endpoint with the
//! `client_credentials` grant (audience bound to the RFC 8707 `resource`), RFC 7009 revocation
//! and RFC 7662 introspection. Under it: the [`SigningKeys`] and [`EncryptionKeys`] rings
//! (separate purposes, each key with an id) and the canonical [`PublicUrls`] builder. State goes
//! through [`crate::store::Store`]. The authorization code flow with user login is next.

mod auth_server;
mod cimd;
mod flow;
mod keys;
mod login;
mod source;
mod upstream;
mod urls;

pub use self::auth_server::{AuthServer, AuthServerBuilder, RevocationAwareValidator};
pub use self::keys::{DEFAULT_RETENTION, EncryptionKeys, RingValidator, SealError, SigningKeys};
pub use self::source::{ClientAddress, ClientRegistration, PeerAddress, TrustedProxies};
pub use self::upstream::{
    GitHubProvider, IdentityProvider, OidcProvider, OidcProviderBuilder, UpstreamError,
    UpstreamStart, UpstreamUser,
};
pub use self::urls::PublicUrls;
