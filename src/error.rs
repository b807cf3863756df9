//! Errors raised while building the library's parts from configuration. Errors raised while
//! serving a request are the refusals of each layer (see [`TokenError`](crate::validate::TokenError)).

/// A configuration the library refuses to build: found at start-up, never per request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A URL is not absolute, has a fragment, uses another scheme than http(s), or uses plain
    /// http for a host that is not loopback.
    #[error("{what} `{url}` is not usable: {reason}")]
    InvalidUrl {
        /// Which setting the URL was given for.
        what: &'static str,
        /// The URL as given.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// The MCP specification requires at least one authorization server in the metadata.
    #[error("protected resource metadata needs at least one authorization server")]
    NoAuthorizationServer,
    /// A key could not be parsed or does not fit the algorithm it was given for.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// A validator has no key to verify with.
    #[error("the validator has no verification key")]
    NoKeys,
    /// Clock-skew leeway beyond the bound that keeps expiry meaningful.
    #[error("leeway of {0:?} exceeds the maximum of 5 minutes")]
    LeewayTooLarge(std::time::Duration),
    /// An HTTP client could not be built.
    #[error("HTTP client: {0}")]
    HttpClient(String),
    /// RFC 7662 endpoints require the resource server to authenticate.
    #[error("introspection needs client credentials or a bearer token")]
    MissingClientAuthentication,
    /// A policy that cannot be compiled (bad pattern, malformed rule).
    #[error("invalid policy: {0}")]
    InvalidPolicy(String),
    /// An authorization server that cannot work as configured (no resource, a dev user whose
    /// name clashes, a validator for a resource it does not serve).
    #[error("invalid authorization server configuration: {0}")]
    InvalidServer(String),
    /// An identity provider whose id is malformed or taken.
    #[error("invalid identity provider: {0}")]
    InvalidProvider(String),
    /// A third-party service (ATAG) that is missing, duplicated, or not the one a policy names.
    #[error("invalid external service: {0}")]
    InvalidService(String),
    /// A URL names an address the [`AddressPolicy`](crate::address::AddressPolicy) refuses.
    #[error(
        "the {what} names {address}, which the outbound address policy refuses (allow it with AddressPolicy, e.g. allow_loopback or allow_private)"
    )]
    AddressRefused {
        /// Which URL.
        what: String,
        /// The refused address.
        address: String,
    },
    /// A network address or CIDR that does not parse.
    #[error("invalid address: {0}")]
    InvalidAddress(String),
    /// A page template that does not compile.
    #[error("invalid page template: {0}")]
    InvalidTemplate(String),
    /// A scope string that is not an RFC 6749 scope token.
    #[error("`{0}` is not a valid scope token")]
    InvalidScope(String),
    /// The identity provider publishes another value than the one configured (a start-up
    /// check, e.g. [`JwksValidatorBuilder::build_checked`](crate::validate::JwksValidatorBuilder::build_checked)).
    #[error(
        "{what}: `{configured}` is configured, but the identity provider says `{found}` ({hint})"
    )]
    ProviderMismatch {
        /// Which value.
        what: &'static str,
        /// The value configured.
        configured: String,
        /// The value the provider publishes.
        found: String,
        /// What tells them apart.
        hint: String,
    },
    /// The identity provider could not be asked, or answered something unusable, at start-up.
    #[error("identity provider `{url}`: {reason}")]
    ProviderUnavailable {
        /// What was asked.
        url: String,
        /// What went wrong.
        reason: String,
    },
}
