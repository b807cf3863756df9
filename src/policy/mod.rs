//! Tool-level authorization: which scopes (or claims) each tool, resource, prompt and MCP
//! method needs, declared in code or configuration, enforced on every path.
//!
//! [`ToolPolicyLayer`] sits inside the bearer layer. For each POST it buffers the body (413
//! beyond the limit), parses the JSON-RPC envelope once (method, id, `params.name`/`uri`; tool
//! arguments are skipped, not built) and puts the parsed [`McpRequest`](crate::jsonrpc::McpRequest)
//! into the request extensions. Then:
//!
//! - `tools/call`, `resources/read`, `prompts/get` the caller may not use are answered `403`
//!   before the server sees them (so before any event-stream byte): with
//!   `WWW-Authenticate: Bearer resource_metadata="…", scope="<all scopes the operation needs>",
//!   error="insufficient_scope"` when scopes would help (the spec's step-up), without a
//!   challenge when nothing would (explicit deny, unmet claim condition, default deny); the body
//!   is a JSON-RPC error with the request's id (code `-32003`).
//! - Other methods naming a resource or prompt are judged the same way: `resources/subscribe`,
//!   `resources/unsubscribe`, `resources/directory/read`, `skills/get` (by URI) and
//!   `completion/complete` (by its `ref`). Resource URIs must be canonical (no dot segments,
//!   no encoded `.` `/` `\`, lower-case scheme) and names short, or the request is `400`.
//! - List results (`tools`, `prompts`, `resources`, `resourceTemplates` arrays) are rewritten
//!   to what the caller may use in *every* JSON or SSE response the layer forwards, GET streams
//!   included: the filter goes by the result's shape, not by request id, so a list replayed on
//!   a resumed stream or rerouted to another request with the same id is filtered too.
//!   Filtered results get `cacheScope: "private"` for 2026-07-28 clients; cursors are
//!   untouched. A response the filter cannot read (compressed, over 32 MiB) is refused (502),
//!   never passed on: put compression outside this layer.
//! - `Mcp-Method` / `Mcp-Name` headers never decide; one that disagrees with the body is `400`
//!   with JSON-RPC error `-32020`.
//! - A batch (a JSON array, legal only in 2025-03-26) is judged element by element and refused
//!   as a whole if any element is refused (the body then has `"id": null`); an allowed batch
//!   goes on to the server (rmcp 3.11 refuses batches itself), and list results inside batch
//!   responses are filtered too. Every message naming a method is judged, `"id": null`
//!   included.
//! - Bodies that are not JSON, not JSON-RPC 2.0, carry duplicate keys, or have another content
//!   type are refused; method names differing from a policed one only in case, and names with
//!   non-ASCII characters, are refused; tool names in upper case must pass the rules of their
//!   lower-case spelling as well.
//! - Client responses pass untouched; notifications are judged by method rules only; `GET`
//!   (the SSE stream) and `DELETE` (ending a session) are judged by method rules named `GET`
//!   and `DELETE`; other HTTP methods get `405`.
//! - When a method rule and a tool rule both apply, one challenge names the scopes of both.
//!
//! Every decision is a `tracing` event with target `tower_mcp_auth::audit` (subject, client,
//! method, tool, decision, reason): refusals at `info`, allowed calls at `debug`.
//!
//! ```
//! use tower_mcp_auth::ProtectedResource;
//! use tower_mcp_auth::policy::ToolPolicy;
//!
//! let resource = ProtectedResource::builder("https://mcp.example.com/mcp")
//!     .authorization_server("https://auth.example.com")
//!     .build()
//!     .unwrap();
//! let policy = ToolPolicy::builder()
//!     .default_scopes(["mcp:tools"])
//!     .tool("read_*", ["notes:read"])
//!     .tool_regex("^delete_.*$", ["notes:admin"])
//!     .scope_separator(":")
//!     .build()
//!     .unwrap();
//! let layer = policy.layer(&resource); // inside BearerLayer, around the MCP service
//! # let _ = layer;
//! ```

mod builder;
mod compiled;
mod filter;
mod judge;
mod layer;
#[cfg(feature = "rate-limit")]
mod limits;
#[cfg(feature = "config")]
mod reload;
mod rules;

pub use self::builder::ToolPolicyBuilder;
pub use self::compiled::{Decision, ToolPolicy};
pub use self::layer::{
    DEFAULT_MAX_BODY, FORBIDDEN_CODE, HEADER_MISMATCH_CODE, PolicyBody, ToolPolicyLayer,
    ToolPolicyService,
};
#[cfg(feature = "rate-limit")]
#[cfg_attr(docsrs, doc(cfg(feature = "rate-limit")))]
pub use self::limits::{DEFAULT_TRACKED, RateLimits};
#[cfg(feature = "config")]
#[cfg_attr(docsrs, doc(cfg(feature = "config")))]
pub use self::reload::PolicyHandle;
pub use self::rules::{
    ClaimCondition, GroupMapping, Kind, Pattern, PolicyConfig, Rule, RuleConfig, ServiceNeed,
};
