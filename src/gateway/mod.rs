//! Gateway mode: one authenticated front door for several backend MCP servers.
//!
//! Many teams do not own the MCP servers they expose. A [`Gateway`] puts them behind this
//! crate's own layers: clients sign in with the gateway's authorization server, each backend
//! is a protected resource of its own at `/{name}/mcp` (own audience, own metadata, own
//! [`ToolPolicy`](crate::ToolPolicy)), and [`McpProxy`] forwards what passes to the backend,
//! streaming answers back.
//!
//! What a backend receives, and what it never does:
//!
//! - **never the client's token** (no token passthrough): `Authorization`, `Cookie` and any
//!   ingress token header are removed;
//! - **who the caller is**, in [`UserHeaders`] (subject, email, name, provider, client,
//!   scopes; names configurable, values escaped), which clients cannot forge: whatever they
//!   send under those names is removed first;
//! - **a third-party token** (GitHub, Google, … from the ATAG vault) in the backend's
//!   [service token header](Backend::service_token_header), only on the calls whose tool needs
//!   that service, and only for the backend whose policy says so.
//!
//! A backend should be reachable only from the gateway (a private network, a loopback port,
//! mutual TLS): the user-context headers are trustworthy only if nothing else can send them.
//!
//! The layers keep their guarantees here: the policy layer filters lists and refuses calls
//! before anything reaches a backend, the bearer layer binds stateful sessions
//! (`Mcp-Session-Id`) to the user who opened them, and list answers streamed back over SSE
//! are filtered event by event.

mod backend;
mod flight;
mod from_config;
mod hop;
mod identity;
mod proxy;
mod session;
mod setup;
mod user_headers;

pub use self::backend::{Backend, DEFAULT_SERVICE_TOKEN_HEADER};
pub use self::identity::{GATEWAY_SECRET_HEADER, GatewayIdentityLayer, GatewayIdentityService};
pub use self::proxy::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_IN_FLIGHT_PER_USER,
    DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_POOL_MAX_IDLE, DEFAULT_RESPONSE_TIMEOUT, McpProxy,
    McpProxyBuilder,
};
pub use self::setup::{Gateway, GatewayBuilder};
pub use self::user_headers::{MAX_USER_HEADER_VALUE, UserField, UserHeaders};
