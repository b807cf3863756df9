//! Audit events: every decision the layers and the authorization server take about a caller is
//! a `tracing` event with the target [`TARGET`], so a subscriber can route them apart from
//! diagnostics (`RUST_LOG=tower_mcp_auth::audit=info`, or a `tracing_subscriber` filter).
//!
//! Levels: `debug` for allowed operations (one per request: enable it only to trace), `info`
//! for refusals and for grants, consents, registrations and revocations, `warn` for signs of
//! attack or failing dependencies (a refresh token reused, a session of another principal, an
//! identity provider that cannot be reached), `error` for configuration gaps found at request
//! time (a layer placed in the wrong order, a tool whose service has no ATAG layer).
//!
//! The fields, where they apply (no event carries a token, a secret or a password):
//!
//! | field | what |
//! |---|---|
//! | `decision` | `"allow"`, `"deny"` or `"narrow"` |
//! | `subject`, `user` | the token's or the signed-in user's subject |
//! | `client_id` | the OAuth client |
//! | `method`, `tool` | the MCP method and its tool, prompt or resource |
//! | `reason`, `error` | why a request was refused (the OAuth `error` code for authorization refusals) |
//! | `required`, `missing` | scopes an operation needs, or lacks |
//! | `requested`, `granted`, `removed` | scopes asked for, given, and narrowed away |
//! | `service` | the third-party service of an ATAG event |
//! | `source` | the client address a registration was counted for |
//!
//! ```
//! // Audit events on stdout, diagnostics only from warnings up.
//! let _filter = tracing_subscriber::EnvFilter::new("warn,tower_mcp_auth::audit=info");
//! assert_eq!(tower_mcp_auth::audit::TARGET, "tower_mcp_auth::audit");
//! ```

/// The `tracing` target of every audit event.
pub const TARGET: &str = "tower_mcp_auth::audit";
