#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs, unreachable_pub)]
#![warn(missing_debug_implementations, rust_2018_idioms, clippy::unwrap_used)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod address;
#[cfg(feature = "atag")]
#[cfg_attr(docsrs, doc(cfg(feature = "atag")))]
pub mod atag;
pub mod audit;
pub mod bearer;
pub mod challenge;
#[cfg(feature = "config")]
#[cfg_attr(docsrs, doc(cfg(feature = "config")))]
pub mod config;
mod context;
pub mod dpop;
mod error;
#[cfg(feature = "gateway")]
#[cfg_attr(docsrs, doc(cfg(feature = "gateway")))]
pub mod gateway;
pub mod jsonrpc;
pub mod metrics;
#[cfg(feature = "server")]
mod oauth_client;
pub mod origin;
#[cfg(any(feature = "jwks", feature = "introspection"))]
mod outbound;
pub mod policy;
#[cfg(test)]
mod proptests;
pub mod resource;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod server;
pub mod store;
pub mod validate;
pub mod wire;

/// A boxed, sendable future: what the crate's object-safe traits return ([`validate::TokenValidator`],
/// [`store::Store`], [`server::IdentityProvider`]), so implementations can be combined and used
/// as trait objects. On the request path only a token-cache miss or a store call pays for it.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

pub use bearer::{BearerLayer, BearerService};
#[cfg(feature = "rmcp")]
pub use context::Auth;
pub use context::{AuthContext, MissingAuthContext, RequiredScopes, Scopes};
pub use error::ConfigError;
pub use policy::{ToolPolicy, ToolPolicyLayer};
pub use resource::ProtectedResource;
