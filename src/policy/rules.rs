//! The declarative policy model: rules in code or in TOML/YAML/JSON.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::AuthContext;

/// What a rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A tool, by name (`tools/call`, and the `tools/list` filter).
    Tool,
    /// A resource, by URI (`resources/read`, and the `resources/list` filter).
    Resource,
    /// A prompt, by name (`prompts/get`, and the `prompts/list` filter).
    Prompt,
    /// An MCP method (`tools/list`, `initialize`, `resources/subscribe`, ...), or the HTTP
    /// methods `GET` (the standalone SSE stream) and `DELETE` (ending a session).
    Method,
}

/// How a rule names what it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// Exactly this name.
    Exact(String),
    /// A glob: `*` any run of characters, `?` one character.
    Glob(String),
    /// A regular expression (Rust `regex` syntax), anchored or not as written.
    Regex(String),
}

impl Pattern {
    /// `Glob` if the text has `*` or `?`, else `Exact`.
    pub fn name_or_glob(text: impl Into<String>) -> Self {
        let text = text.into();
        if text.contains(['*', '?']) {
            Pattern::Glob(text)
        } else {
            Pattern::Exact(text)
        }
    }
}

/// A condition on a token claim (or an introspection field).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ClaimCondition {
    /// The claim equals the value (strings, numbers, booleans).
    Equals {
        /// Claim name.
        claim: String,
        /// Expected value.
        value: Value,
    },
    /// The claim is an array holding the value, or a space-separated string holding it as a
    /// word (e.g. `groups` contains `mcp-admin`).
    Contains {
        /// Claim name.
        claim: String,
        /// The member looked for.
        value: String,
    },
    /// The claim is a string ending with the suffix (e.g. `email` ends with `@corp.example`).
    EndsWith {
        /// Claim name.
        claim: String,
        /// The suffix.
        suffix: String,
    },
}

impl ClaimCondition {
    /// `claim == value`.
    pub fn equals(claim: impl Into<String>, value: impl Into<Value>) -> Self {
        ClaimCondition::Equals {
            claim: claim.into(),
            value: value.into(),
        }
    }

    /// The claim (array, or space-separated string) holds `value`.
    pub fn contains(claim: impl Into<String>, value: impl Into<String>) -> Self {
        ClaimCondition::Contains {
            claim: claim.into(),
            value: value.into(),
        }
    }

    /// The claim is a string ending with `suffix`.
    pub fn ends_with(claim: impl Into<String>, suffix: impl Into<String>) -> Self {
        ClaimCondition::EndsWith {
            claim: claim.into(),
            suffix: suffix.into(),
        }
    }

    /// Whether the caller satisfies the condition; a missing claim never does.
    pub fn holds(&self, ctx: &AuthContext) -> bool {
        match self {
            ClaimCondition::Equals { claim, value } => ctx.claim(claim) == Some(value),
            ClaimCondition::Contains { claim, value } => match ctx.claim(claim) {
                Some(Value::Array(items)) => items.iter().any(|i| i.as_str() == Some(value)),
                Some(Value::String(s)) => s.split(' ').any(|w| w == value),
                _ => false,
            },
            ClaimCondition::EndsWith { claim, suffix } => ctx
                .claim(claim)
                .and_then(Value::as_str)
                .is_some_and(|s| s.ends_with(suffix.as_str())),
        }
    }
}

/// One rule: what it covers, and what a caller needs (or that nobody may).
///
/// ```
/// use tower_mcp_auth::policy::{ClaimCondition, Rule};
///
/// let rule = Rule::tool("delete_*")
///     .all_of(["notes:admin"])
///     .when(ClaimCondition::contains("groups", "mcp-admin"));
/// # let _ = rule;
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub(crate) kind: Kind,
    pub(crate) pattern: Pattern,
    pub(crate) all_of: Vec<String>,
    pub(crate) any_of: Vec<String>,
    pub(crate) conditions: Vec<ClaimCondition>,
    pub(crate) deny: bool,
    pub(crate) service: Option<ServiceNeed>,
}

/// A third-party service a tool acts at on the user's behalf (the ATAG pattern): the user's
/// token for `service`, with at least `scopes`, is injected into each call.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceNeed {
    /// The service's id in the registry (`github`, `google`, …).
    pub service: String,
    /// The service's scopes the tool needs.
    #[serde(default)]
    pub scopes: Vec<String>,
}

impl Rule {
    /// A rule for `kind` things matching `pattern`, requiring nothing yet.
    pub fn new(kind: Kind, pattern: Pattern) -> Self {
        Rule {
            kind,
            pattern,
            all_of: Vec::new(),
            any_of: Vec::new(),
            conditions: Vec::new(),
            deny: false,
            service: None,
        }
    }

    /// Tools named `name` (a glob if it has `*` or `?`).
    pub fn tool(name: impl Into<String>) -> Self {
        Self::new(Kind::Tool, Pattern::name_or_glob(name))
    }

    /// Tools whose name matches the regular expression.
    pub fn tool_regex(regex: impl Into<String>) -> Self {
        Self::new(Kind::Tool, Pattern::Regex(regex.into()))
    }

    /// Resources whose URI is `uri` (a glob if it has `*` or `?`).
    pub fn resource(uri: impl Into<String>) -> Self {
        Self::new(Kind::Resource, Pattern::name_or_glob(uri))
    }

    /// Prompts named `name` (a glob if it has `*` or `?`).
    pub fn prompt(name: impl Into<String>) -> Self {
        Self::new(Kind::Prompt, Pattern::name_or_glob(name))
    }

    /// The MCP method `method` (exact), or `GET` / `DELETE` for the HTTP-level operations.
    pub fn method(method: impl Into<String>) -> Self {
        Self::new(Kind::Method, Pattern::Exact(method.into()))
    }

    /// Requires every one of these scopes.
    #[must_use]
    pub fn all_of<I: IntoIterator<Item = S>, S: Into<String>>(mut self, scopes: I) -> Self {
        self.all_of.extend(scopes.into_iter().map(Into::into));
        self
    }

    /// Requires at least one of these scopes.
    #[must_use]
    pub fn any_of<I: IntoIterator<Item = S>, S: Into<String>>(mut self, scopes: I) -> Self {
        self.any_of.extend(scopes.into_iter().map(Into::into));
        self
    }

    /// Requires a claim condition as well.
    #[must_use]
    pub fn when(mut self, condition: ClaimCondition) -> Self {
        self.conditions.push(condition);
        self
    }

    /// Makes this an explicit deny: nobody may, whatever their scopes. Deny wins over allow.
    #[must_use]
    pub fn deny(mut self) -> Self {
        self.deny = true;
        self
    }

    /// The tools this rule covers act at a third-party `service` with the user's own token
    /// (needing at least `scopes` there); see [`crate::atag`].
    #[must_use]
    pub fn needs_service<I: IntoIterator<Item = S>, S: Into<String>>(
        mut self,
        service: impl Into<String>,
        scopes: I,
    ) -> Self {
        self.service = Some(ServiceNeed {
            service: service.into(),
            scopes: scopes.into_iter().map(Into::into).collect(),
        });
        self
    }
}

/// A rule as written in a configuration file. Exactly one of `name`, `glob`, `regex`.
///
/// ```toml
/// [[rules]]
/// kind = "tool"            # tool (default), resource, prompt, method
/// glob = "delete_*"
/// all_of = ["notes:admin"]
/// claims = [{ op = "contains", claim = "groups", value = "mcp-admin" }]
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// What the rule is about (default `tool`).
    #[serde(default = "default_kind")]
    pub kind: Kind,
    /// An exact name (or URI).
    #[serde(default)]
    pub name: Option<String>,
    /// A glob.
    #[serde(default)]
    pub glob: Option<String>,
    /// A regular expression.
    #[serde(default)]
    pub regex: Option<String>,
    /// Scopes all required.
    #[serde(default)]
    pub all_of: Vec<String>,
    /// Scopes of which one is required.
    #[serde(default)]
    pub any_of: Vec<String>,
    /// Claim conditions, all required.
    #[serde(default)]
    pub claims: Vec<ClaimCondition>,
    /// An explicit deny.
    #[serde(default)]
    pub deny: bool,
    /// The third-party service the tools need (ATAG).
    #[serde(default)]
    pub needs_service: Option<ServiceNeed>,
}

fn default_kind() -> Kind {
    Kind::Tool
}

/// A whole policy as written in a configuration file (TOML, YAML, JSON: any serde format).
///
/// ```
/// let config: tower_mcp_auth::policy::PolicyConfig = serde_json::from_str(r#"{
///     "default_scopes": ["mcp:tools"],
///     "scope_separator": ":",
///     "rules": [
///         { "glob": "read_*", "all_of": ["notes:read"] },
///         { "regex": "^delete_.*$", "all_of": ["notes:admin"] },
///         { "name": "shutdown", "deny": true }
///     ],
///     "groups": { "claim": "groups", "scopes": { "mcp-admins": ["notes:admin"] },
///                 "tool_group_template": "mcp-server-notes-tool-{tool}" }
/// }"#).unwrap();
/// let policy = tower_mcp_auth::policy::ToolPolicy::from_config(config).unwrap();
/// # let _ = policy;
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Scopes a tool, resource or prompt that no rule covers requires. Absent: such things are
    /// denied to everyone (default deny).
    #[serde(default)]
    pub default_scopes: Option<Vec<String>>,
    /// The rules.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Scope hierarchy by prefix: with `":"`, `files` covers `files:read` and `files:read:own`.
    #[serde(default)]
    pub scope_separator: Option<String>,
    /// Explicit implications: a granted key scope counts as each listed scope.
    #[serde(default)]
    pub scope_implies: BTreeMap<String, Vec<String>>,
    /// Identity-provider groups that grant scopes or tools.
    #[serde(default)]
    pub groups: Option<GroupMapping>,
    /// Scope → what it lets a client do, in words (consent pages show it).
    #[serde(default)]
    pub scope_descriptions: BTreeMap<String, String>,
}

/// Maps identity-provider groups (a claim such as `groups`) into the policy: groups granting
/// scopes, and enterprise-style per-tool groups (`mcp-server-{name}-tool-{tool}`) granting one
/// tool each.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupMapping {
    /// The claim holding the groups (default `groups`).
    #[serde(default = "default_groups_claim")]
    pub claim: String,
    /// Group → scopes it grants.
    #[serde(default)]
    pub scopes: BTreeMap<String, Vec<String>>,
    /// A group name template with one `{tool}` placeholder; membership of the group made from a
    /// tool's name allows that tool (explicit denies still win).
    #[serde(default)]
    pub tool_group_template: Option<String>,
}

fn default_groups_claim() -> String {
    "groups".into()
}

impl RuleConfig {
    pub(crate) fn into_rule(self) -> Result<Rule, String> {
        let pattern = match (self.name, self.glob, self.regex) {
            (Some(n), None, None) => Pattern::Exact(n),
            (None, Some(g), None) => Pattern::Glob(g),
            (None, None, Some(r)) => Pattern::Regex(r),
            _ => return Err("a rule needs exactly one of `name`, `glob`, `regex`".into()),
        };
        Ok(Rule {
            kind: self.kind,
            pattern,
            all_of: self.all_of,
            any_of: self.any_of,
            conditions: self.claims,
            deny: self.deny,
            service: self.needs_service,
        })
    }
}
