//! The user-context headers a backend receives in place of the client's token.

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::AuthContext;

/// The longest value put in a user-context header (after escaping); a longer name, email or
/// provider is left out rather than cut, so a backend never sees half a value. The subject is
/// never left out: a request whose subject cannot be sent is refused instead.
pub const MAX_USER_HEADER_VALUE: usize = 1024;

/// What a user-context header carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UserField {
    /// The token's subject (`sub`). Default header `X-MCP-User-Subject`.
    Subject,
    /// The `email` claim, when the token has one. Default `X-MCP-User-Email`.
    Email,
    /// The `name` claim (or `preferred_username`), when the token has one. Default
    /// `X-MCP-User-Name`.
    Name,
    /// Where the user signed in: the `idp` claim; for our own tokens the provider id that
    /// prefixes the subject (`github|123` → `github`), `local` for an embedded dev user; else
    /// the token's issuer. Default `X-MCP-User-Provider`.
    Provider,
    /// The OAuth client the user authorized (`client_id`). Default `X-MCP-Client-Id`.
    ClientId,
    /// The token's scopes, space-separated. Default `X-MCP-User-Scopes`.
    Scopes,
}

impl UserField {
    /// Every field, in header order.
    pub const ALL: [UserField; 6] = [
        UserField::Subject,
        UserField::Email,
        UserField::Name,
        UserField::Provider,
        UserField::ClientId,
        UserField::Scopes,
    ];

    /// The field's place in [`UserField::ALL`] (an exhaustive match: a new field cannot be
    /// forgotten here).
    const fn index(self) -> usize {
        match self {
            UserField::Subject => 0,
            UserField::Email => 1,
            UserField::Name => 2,
            UserField::Provider => 3,
            UserField::ClientId => 4,
            UserField::Scopes => 5,
        }
    }

    fn default_header(self) -> HeaderName {
        HeaderName::from_static(match self {
            UserField::Subject => "x-mcp-user-subject",
            UserField::Email => "x-mcp-user-email",
            UserField::Name => "x-mcp-user-name",
            UserField::Provider => "x-mcp-user-provider",
            UserField::ClientId => "x-mcp-client-id",
            UserField::Scopes => "x-mcp-user-scopes",
        })
    }

    /// The field's name in configuration files (`subject`, `email`, `name`, `provider`,
    /// `client_id`, `scopes`).
    pub fn key(self) -> &'static str {
        match self {
            UserField::Subject => "subject",
            UserField::Email => "email",
            UserField::Name => "name",
            UserField::Provider => "provider",
            UserField::ClientId => "client_id",
            UserField::Scopes => "scopes",
        }
    }

    /// The field a configuration key names.
    pub fn from_key(key: &str) -> Option<Self> {
        UserField::ALL.into_iter().find(|f| f.key() == key)
    }
}

/// Which request headers tell a backend who the caller is, and under which names.
///
/// Every name is reserved, and so is every field's default name even when the field is renamed
/// or left out: whatever a client sent under them is removed before the gateway sets its own
/// values, so a backend can trust these headers as long as only the gateway reaches it (and a
/// backend still reading the defaults cannot be fed forged ones).
/// Values are escaped to visible ASCII: `%` and every byte outside `0x20..=0x7E` become `%XX`
/// (so a UTF-8 name arrives percent-encoded, and no value can carry a line break).
///
/// ```
/// use http::HeaderName;
/// use tower_mcp_auth::gateway::{UserField, UserHeaders};
///
/// let headers = UserHeaders::default()
///     .rename(UserField::Subject, HeaderName::from_static("x-user-id"))
///     .omit(UserField::Scopes);
/// assert_eq!(headers.name(UserField::Subject).unwrap().as_str(), "x-user-id");
/// assert!(headers.name(UserField::Scopes).is_none());
/// ```
#[derive(Debug, Clone)]
pub struct UserHeaders {
    names: [Option<HeaderName>; UserField::ALL.len()],
}

impl Default for UserHeaders {
    /// Every field, under its default name.
    fn default() -> Self {
        UserHeaders {
            names: UserField::ALL.map(|f| Some(f.default_header())),
        }
    }
}

impl UserHeaders {
    /// No user-context header at all (the names are still not reserved: add fields with
    /// [`rename`](Self::rename)).
    pub fn none() -> Self {
        UserHeaders {
            names: Default::default(),
        }
    }

    /// Sends `field` under `name`.
    #[must_use]
    pub fn rename(mut self, field: UserField, name: HeaderName) -> Self {
        self.names[field.index()] = Some(name);
        self
    }

    /// Does not send `field`.
    #[must_use]
    pub fn omit(mut self, field: UserField) -> Self {
        self.names[field.index()] = None;
        self
    }

    /// The header `field` is sent under, if it is sent.
    pub fn name(&self, field: UserField) -> Option<&HeaderName> {
        self.names[field.index()].as_ref()
    }

    /// The reserved names: the configured ones and every default one.
    pub(crate) fn reserved(&self) -> impl Iterator<Item = HeaderName> + '_ {
        self.names
            .iter()
            .flatten()
            .cloned()
            .chain(UserField::ALL.map(UserField::default_header))
    }

    /// Removes every reserved header, then sets those `ctx` has values for. `own_issuer` is
    /// the gateway's authorization server, whose subjects carry the provider. Fails (the
    /// request must be refused) only when the subject cannot be sent.
    pub(crate) fn apply(
        &self,
        ctx: Option<&AuthContext>,
        own_issuer: Option<&str>,
        headers: &mut HeaderMap,
    ) -> Result<(), &'static str> {
        for name in self.reserved() {
            headers.remove(name);
        }
        let Some(ctx) = ctx else { return Ok(()) };
        for field in UserField::ALL {
            let Some(name) = self.name(field) else {
                continue;
            };
            let value = match field {
                UserField::Subject => Some(ctx.subject().to_owned()),
                UserField::Email => string_claim(ctx, "email"),
                UserField::Name => {
                    string_claim(ctx, "name").or_else(|| string_claim(ctx, "preferred_username"))
                }
                UserField::Provider => provider(ctx, own_issuer),
                UserField::ClientId => ctx.client_id().map(str::to_owned),
                UserField::Scopes => Some(ctx.scopes().to_string()),
            };
            let Some(value) = value else { continue };
            match escape(&value) {
                Some(escaped) => {
                    headers.insert(name.clone(), escaped);
                }
                None if field == UserField::Subject => {
                    return Err("the subject is too long to forward");
                }
                None => {}
            }
        }
        Ok(())
    }
}

fn string_claim(ctx: &AuthContext, name: &str) -> Option<String> {
    ctx.claim(name)
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
}

fn provider(ctx: &AuthContext, own_issuer: Option<&str>) -> Option<String> {
    if let Some(idp) = string_claim(ctx, "idp") {
        return Some(idp);
    }
    match (ctx.issuer(), own_issuer) {
        (Some(issuer), Some(own)) if issuer == own => Some(
            ctx.subject()
                .split_once('|')
                .map_or("local", |(provider, _)| provider)
                .to_owned(),
        ),
        (issuer, _) => issuer.map(str::to_owned),
    }
}

/// `value` as a header value: `%` and bytes outside `0x20..=0x7E` percent-encoded, leading and
/// trailing spaces encoded too (a header value cannot keep them); `None` when the result is
/// longer than [`MAX_USER_HEADER_VALUE`].
pub(crate) fn escape(value: &str) -> Option<HeaderValue> {
    let bytes = value.as_bytes();
    let mut out = String::with_capacity(bytes.len());
    for (i, &b) in bytes.iter().enumerate() {
        let edge_space = b == b' ' && (i == 0 || i == bytes.len() - 1);
        if (0x20..=0x7E).contains(&b) && b != b'%' && !edge_space {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
        if out.len() > MAX_USER_HEADER_VALUE {
            return None;
        }
    }
    HeaderValue::from_str(&out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx(claims: serde_json::Value) -> AuthContext {
        AuthContext::from_claims(claims.as_object().unwrap().clone()).unwrap()
    }

    #[test]
    fn every_field_has_its_place() {
        for (i, field) in UserField::ALL.into_iter().enumerate() {
            assert_eq!(field.index(), i);
            assert_eq!(UserField::from_key(field.key()), Some(field));
        }
    }

    #[test]
    fn default_names_stay_reserved_when_renamed_or_left_out() {
        let mut headers = HeaderMap::new();
        headers.insert("x-mcp-user-subject", HeaderValue::from_static("admin"));
        headers.insert("x-mcp-user-scopes", HeaderValue::from_static("admin"));
        let caller = ctx(json!({"sub": "alice", "scope": "read"}));
        UserHeaders::default()
            .rename(UserField::Subject, HeaderName::from_static("x-user-id"))
            .omit(UserField::Scopes)
            .apply(Some(&caller), None, &mut headers)
            .unwrap();
        assert_eq!(headers["x-user-id"], "alice");
        assert!(!headers.contains_key("x-mcp-user-subject"));
        assert!(!headers.contains_key("x-mcp-user-scopes"));
    }

    #[test]
    fn values_are_escaped_to_visible_ascii() {
        assert_eq!(escape("alice").unwrap(), "alice");
        assert_eq!(escape("José").unwrap(), "Jos%C3%A9");
        assert_eq!(escape("a\r\nX-Admin: 1").unwrap(), "a%0D%0AX-Admin: 1");
        assert_eq!(escape("100%").unwrap(), "100%25");
        assert_eq!(escape(" padded ").unwrap(), "%20padded%20");
        assert_eq!(escape("").unwrap(), "");
        assert!(escape(&"a".repeat(MAX_USER_HEADER_VALUE)).is_some());
        assert!(escape(&"a".repeat(MAX_USER_HEADER_VALUE + 1)).is_none());
        assert!(escape(&"é".repeat(MAX_USER_HEADER_VALUE / 6 + 1)).is_none());
    }

    #[test]
    fn forged_headers_are_replaced_and_absent_claims_leave_none() {
        let mut headers = HeaderMap::new();
        headers.insert("x-mcp-user-subject", HeaderValue::from_static("admin"));
        headers.insert("x-mcp-user-email", HeaderValue::from_static("boss@corp"));
        let caller = ctx(
            json!({"sub": "github|42", "iss": "https://gw", "scope": "a b",
            "client_id": "c1", "name": "Zoë"}),
        );
        UserHeaders::default()
            .apply(Some(&caller), Some("https://gw"), &mut headers)
            .unwrap();
        assert_eq!(headers["x-mcp-user-subject"], "github|42");
        assert!(!headers.contains_key("x-mcp-user-email"));
        assert_eq!(headers["x-mcp-user-name"], "Zo%C3%AB");
        assert_eq!(headers["x-mcp-user-provider"], "github");
        assert_eq!(headers["x-mcp-client-id"], "c1");
        assert_eq!(headers["x-mcp-user-scopes"], "a b");
    }

    #[test]
    fn the_provider_is_the_idp_claim_the_local_dev_login_or_the_issuer() {
        let own = Some("https://gw");
        let provider_of = |claims| provider(&ctx(claims), own);
        assert_eq!(
            provider_of(json!({"sub": "x", "idp": "okta"})).as_deref(),
            Some("okta")
        );
        assert_eq!(
            provider_of(json!({"sub": "demo", "iss": "https://gw"})).as_deref(),
            Some("local")
        );
        assert_eq!(
            provider_of(json!({"sub": "a|b", "iss": "https://idp"})).as_deref(),
            Some("https://idp")
        );
    }

    #[test]
    fn without_a_context_reserved_headers_are_only_removed() {
        let mut headers = HeaderMap::new();
        headers.insert("x-user-id", HeaderValue::from_static("forged"));
        let names =
            UserHeaders::none().rename(UserField::Subject, HeaderName::from_static("x-user-id"));
        names.apply(None, None, &mut headers).unwrap();
        assert!(headers.is_empty());
    }

    #[test]
    fn a_subject_too_long_to_send_refuses_the_request() {
        let caller = ctx(json!({"sub": "s".repeat(MAX_USER_HEADER_VALUE + 1)}));
        let mut headers = HeaderMap::new();
        assert!(
            UserHeaders::default()
                .apply(Some(&caller), None, &mut headers)
                .is_err()
        );
    }
}
