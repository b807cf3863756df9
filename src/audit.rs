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

/// A logged value with its control characters escaped (`\n`, `\r`, `\t`, others as
/// `\u{…}`), so a value a caller chose (a client id, a user name, a provider id, an upstream
/// error) cannot forge log lines or send terminal escapes. Every Display field (`%`) of an
/// event goes through it (`field = %Escaped(&value)`); string fields (`field = value`) and
/// Debug fields (`?`) are quoted and escaped by the subscriber already.
///
/// ```
/// use tower_mcp_auth::audit::Escaped;
/// assert_eq!(Escaped("app\nforged=1\u{1b}[2J").to_string(), "app\\nforged=1\\u{1b}[2J");
/// ```
#[derive(Clone, Copy)]
pub struct Escaped<'a, T: std::fmt::Display + ?Sized>(pub &'a T);

impl<T: std::fmt::Display + ?Sized> std::fmt::Display for Escaped<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write;
        /// Escapes as it writes: no allocation.
        struct Escaping<'a, 'b>(&'a mut std::fmt::Formatter<'b>);
        impl Write for Escaping<'_, '_> {
            fn write_str(&mut self, s: &str) -> std::fmt::Result {
                for part in s.split_inclusive(char::is_control) {
                    let mut chars = part.chars();
                    match chars.next_back() {
                        Some(c) if c.is_control() => {
                            self.0.write_str(chars.as_str())?;
                            match c {
                                '\n' => self.0.write_str("\\n")?,
                                '\r' => self.0.write_str("\\r")?,
                                '\t' => self.0.write_str("\\t")?,
                                c => write!(self.0, "\\u{{{:x}}}", u32::from(c))?,
                            }
                        }
                        _ => self.0.write_str(part)?,
                    }
                }
                Ok(())
            }
        }
        write!(Escaping(f), "{}", self.0)
    }
}

impl<T: std::fmt::Display + ?Sized> std::fmt::Debug for Escaped<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}
