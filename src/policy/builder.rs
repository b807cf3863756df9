//! [`ToolPolicyBuilder`]: a policy declared in code (or loaded from configuration), checked and
//! compiled once by `build`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::compiled::{Compiled, Index, Requirement, ToolPolicy, invalid, kind_index};
use super::rules::{GroupMapping, Kind, Rule};
use crate::ConfigError;
use crate::resource::check_scope_token;

/// Builder of [`ToolPolicy`].
///
/// ```
/// use tower_mcp_auth::policy::{ClaimCondition, Rule, ToolPolicy};
///
/// let policy = ToolPolicy::builder()
///     .default_scopes(["mcp:tools"])
///     .tool("notes_*", ["notes:read"])
///     .tool_regex("^delete_.*$", ["notes:admin"])
///     .deny_tool("shutdown")
///     .rule(Rule::tool("audit_log").all_of(["notes:admin"]).when(ClaimCondition::ends_with("email", "@corp.example")))
///     .method("tools/list", ["mcp:tools"])
///     .scope_separator(":")
///     .build()
///     .unwrap();
/// # let _ = policy;
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct ToolPolicyBuilder {
    pub(super) default_scopes: Option<Vec<String>>,
    pub(super) rules: Vec<Rule>,
    pub(super) separator: Option<String>,
    pub(super) implies: Vec<(String, Vec<String>)>,
    pub(super) groups: Option<GroupMapping>,
    pub(super) descriptions: std::collections::BTreeMap<String, String>,
}

fn strings<I: IntoIterator<Item = S>, S: Into<String>>(items: I) -> Vec<String> {
    items.into_iter().map(Into::into).collect()
}

impl ToolPolicyBuilder {
    /// Scopes needed by tools, resources and prompts no rule covers. Without this, they are
    /// denied to everyone.
    pub fn default_scopes<I: IntoIterator<Item = S>, S: Into<String>>(mut self, scopes: I) -> Self {
        self.default_scopes = Some(strings(scopes));
        self
    }

    /// Tools named `name` (a glob if it has `*` or `?`) need all of `scopes`.
    pub fn tool<I: IntoIterator<Item = S>, S: Into<String>>(
        self,
        name: impl Into<String>,
        scopes: I,
    ) -> Self {
        self.rule(Rule::tool(name).all_of(scopes))
    }

    /// Tools matching the regular expression need all of `scopes`.
    pub fn tool_regex<I: IntoIterator<Item = S>, S: Into<String>>(
        self,
        regex: impl Into<String>,
        scopes: I,
    ) -> Self {
        self.rule(Rule::tool_regex(regex).all_of(scopes))
    }

    /// Nobody may call tools named `name` (a glob if it has `*` or `?`).
    pub fn deny_tool(self, name: impl Into<String>) -> Self {
        self.rule(Rule::tool(name).deny())
    }

    /// Resources with URI `uri` (a glob if it has `*` or `?`) need all of `scopes`.
    pub fn resource<I: IntoIterator<Item = S>, S: Into<String>>(
        self,
        uri: impl Into<String>,
        scopes: I,
    ) -> Self {
        self.rule(Rule::resource(uri).all_of(scopes))
    }

    /// Prompts named `name` need all of `scopes`.
    pub fn prompt<I: IntoIterator<Item = S>, S: Into<String>>(
        self,
        name: impl Into<String>,
        scopes: I,
    ) -> Self {
        self.rule(Rule::prompt(name).all_of(scopes))
    }

    /// The MCP method (or `GET` / `DELETE`) needs all of `scopes`.
    pub fn method<I: IntoIterator<Item = S>, S: Into<String>>(
        self,
        method: impl Into<String>,
        scopes: I,
    ) -> Self {
        self.rule(Rule::method(method).all_of(scopes))
    }

    /// The tools of the rule added last act at a third-party `service` with the user's own
    /// token (see [`Rule::needs_service`] and [`crate::atag`]).
    ///
    /// ```
    /// use tower_mcp_auth::policy::ToolPolicy;
    ///
    /// let policy = ToolPolicy::builder()
    ///     .default_scopes(["mcp:tools"])
    ///     .tool("github_*", ["mcp:tools"])
    ///     .needs_service("github", ["repo"])
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(policy.service_need("github_list_repos").unwrap().service, "github");
    /// assert!(policy.service_need("whoami").is_none());
    /// ```
    pub fn needs_service<I: IntoIterator<Item = S>, S: Into<String>>(
        mut self,
        service: impl Into<String>,
        scopes: I,
    ) -> Self {
        if let Some(last) = self.rules.pop() {
            self.rules.push(last.needs_service(service, scopes));
        }
        self
    }

    /// Adds any rule.
    pub fn rule(mut self, rule: Rule) -> Self {
        self.rules.push(rule);
        self
    }

    /// Scope hierarchy by prefix: with `":"`, a granted `files` covers `files:read`.
    pub fn scope_separator(mut self, separator: impl Into<String>) -> Self {
        self.separator = Some(separator.into());
        self
    }

    /// A granted `scope` also counts as each of `implied`.
    pub fn scope_implies<I: IntoIterator<Item = S>, S: Into<String>>(
        mut self,
        scope: impl Into<String>,
        implied: I,
    ) -> Self {
        self.implies.push((scope.into(), strings(implied)));
        self
    }

    /// What `scope` lets a client do, in words for people: consent pages show it
    /// ([`AuthServerBuilder::describe_scopes_of`](crate::server::AuthServerBuilder::describe_scopes_of)),
    /// so the description lives beside the rules that use the scope.
    pub fn describe_scope(mut self, scope: impl Into<String>, text: impl Into<String>) -> Self {
        self.descriptions.insert(scope.into(), text.into());
        self
    }

    /// Maps identity-provider groups to scopes and tools.
    pub fn groups(mut self, mapping: GroupMapping) -> Self {
        self.groups = Some(mapping);
        self
    }

    /// Compiles the policy; fails on invalid patterns or scope strings.
    pub fn build(self) -> Result<ToolPolicy, ConfigError> {
        if self
            .rules
            .iter()
            .any(|r| r.service.is_some() && (r.kind != Kind::Tool || r.deny))
        {
            return Err(invalid("only tool rules that allow can need a service"));
        }
        let mut by_kind: [Vec<(usize, Rule)>; 4] = Default::default();
        for (order, rule) in self.rules.into_iter().enumerate() {
            by_kind[kind_index(rule.kind)].push((order, rule));
        }
        let [tools, resources, prompts, methods] = by_kind;
        let default = match self.default_scopes {
            Some(scopes) => {
                for s in &scopes {
                    check_scope_token(s)?;
                }
                Some(Requirement {
                    all_of: scopes,
                    ..Requirement::default()
                })
            }
            None => None,
        };
        let mut implied_by: HashMap<String, Vec<String>> = HashMap::new();
        for (granter, implied) in self.implies {
            for scope in implied {
                implied_by.entry(scope).or_default().push(granter.clone());
            }
        }
        if let Some(template) = self
            .groups
            .as_ref()
            .and_then(|g| g.tool_group_template.as_deref())
            && template.matches("{tool}").count() != 1
        {
            return Err(invalid("tool_group_template needs exactly one `{tool}`"));
        }
        let has_services = tools.iter().any(|(_, rule)| rule.service.is_some());
        Ok(ToolPolicy(Arc::new(Compiled {
            default,
            indexes: [
                Index::build(tools)?,
                Index::build(resources)?,
                Index::build(prompts)?,
                Index::build(methods)?,
            ],
            separator: self.separator,
            implied_by,
            groups: self.groups,
            has_services,
            services_served: AtomicBool::new(false),
            descriptions: self.descriptions,
        })))
    }
}
