//! The registration policy hook. The client-address extractors that per-source limits key on
//! live in [`crate::address`] (re-exported here).

use std::net::IpAddr;
use std::sync::Arc;

/// A client asking to be registered, shown to the registration policy
/// ([`crate::server::AuthServerBuilder::registration_policy`]) after the request passed every
/// built-in check and before anything is stored.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientRegistration<'a> {
    /// `client_name`, if given.
    pub client_name: Option<&'a str>,
    /// The redirect URIs.
    pub redirect_uris: &'a [String],
    /// The grant types.
    pub grant_types: &'a [String],
    /// The scopes the client registered with (space-separated). For a self-registered client
    /// this is a record, not a ceiling: it may later ask for any scope the server supports
    /// (step-up), and what a user grants it is decided by the user's own scopes and consent.
    /// Refusing a registration for its `scope` therefore limits nothing.
    pub scope: &'a str,
    /// Whether the client has a secret.
    pub confidential: bool,
    /// The address the registration came from (dynamic registration only).
    pub source: Option<IpAddr>,
    /// For a client ID metadata document, its URL (which is the client id).
    pub metadata_document: Option<&'a str>,
}

/// The registration policy hook: `Err(reason)` refuses the client with
/// `invalid_client_metadata` and the reason.
pub(super) type RegistrationPolicy =
    Arc<dyn Fn(&ClientRegistration<'_>) -> Result<(), String> + Send + Sync>;
