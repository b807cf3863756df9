//! Policies compiled once into a matcher whose lookup cost does not grow with the rule count in
//! the common case: exact names in a hash map, globs and regexes each in one `RegexSet`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use regex::{RegexSet, RegexSetBuilder};
use serde_json::Value;

use super::builder::ToolPolicyBuilder;
use super::rules::{ClaimCondition, GroupMapping, Kind, Pattern, PolicyConfig, Rule, ServiceNeed};
use crate::resource::check_scope_token;
use crate::{AuthContext, ConfigError, Scopes};

/// The outcome of a policy decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The caller may.
    Allow,
    /// The caller lacks scopes; `scopes` is everything the operation needs, for one step-up
    /// challenge (`403 insufficient_scope`).
    InsufficientScope {
        /// The scopes to ask for.
        scopes: Scopes,
    },
    /// No scope would help: an explicit deny, an unmet claim condition, or nothing allowing it
    /// (default deny).
    Forbidden {
        /// Why, for the audit log and the error message.
        reason: &'static str,
    },
}

impl Decision {
    /// Whether the caller may.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow)
    }

    /// The stricter of two decisions; two scope refusals add their scopes up.
    pub(crate) fn and(self, other: Decision) -> Decision {
        match (self, other) {
            (f @ Decision::Forbidden { .. }, _) | (_, f @ Decision::Forbidden { .. }) => f,
            (
                Decision::InsufficientScope { scopes: a },
                Decision::InsufficientScope { scopes: b },
            ) => Decision::InsufficientScope {
                scopes: a.iter().chain(b.iter()).collect(),
            },
            (d @ Decision::InsufficientScope { .. }, Decision::Allow)
            | (Decision::Allow, d @ Decision::InsufficientScope { .. }) => d,
            (Decision::Allow, Decision::Allow) => Decision::Allow,
        }
    }
}

/// A compiled tool policy. Cheap to clone.
///
/// Precedence, for each tool (resource, prompt, method):
/// 1. an explicit deny among the matching rules wins over everything;
/// 2. otherwise the most specific matching rule decides: an exact name over a glob over a
///    regex; among globs the one with the most literal characters; then declaration order;
/// 3. a tool, resource or prompt no rule covers needs the default scopes, or, without default
///    scopes, is denied to everyone (default deny); a method no rule covers needs nothing
///    beyond the bearer layer's own checks.
///
/// Scopes are judged with the configured hierarchy (`files` covers `files:read` with separator
/// `:`; explicit implications) and group mappings.
#[derive(Debug, Clone)]
pub struct ToolPolicy(pub(crate) Arc<Compiled>);

#[derive(Debug)]
pub(crate) struct Compiled {
    pub(super) default: Option<Requirement>,
    pub(super) indexes: [Index; 4],
    pub(super) separator: Option<String>,
    /// Required scope → the scopes that imply it.
    pub(super) implied_by: HashMap<String, Vec<String>>,
    pub(super) groups: Option<GroupMapping>,
    /// Whether some tool rule names a third-party service.
    pub(super) has_services: bool,
    /// Whether an ATAG layer was built from this policy (`Atag::layer`): only then
    /// can tools that need a service be served.
    pub(super) services_served: AtomicBool,
    /// Scope → words for people (consent pages).
    pub(super) descriptions: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Default)]
pub(super) struct Index {
    exact: HashMap<String, Vec<usize>>,
    /// Globs of the common form `literal*`, by literal prefix; looked up once per distinct
    /// prefix length, so thousands of them cost a handful of hash lookups.
    prefixes: HashMap<String, Vec<usize>>,
    prefix_lens: Vec<usize>,
    /// Every other glob and every regex, in one set: one automaton pass per lookup.
    patterns: Option<(RegexSet, Vec<usize>)>,
    rules: Vec<CompiledRule>,
}

#[derive(Debug)]
struct CompiledRule {
    /// (tier: exact 3, glob 2, regex 1; literal characters; declaration order reversed).
    specificity: (u8, usize, std::cmp::Reverse<usize>),
    requirement: Requirement,
    deny: bool,
    service: Option<ServiceNeed>,
}

#[derive(Debug, Clone, Default)]
pub(super) struct Requirement {
    pub(super) all_of: Vec<String>,
    pub(super) any_of: Vec<String>,
    pub(super) conditions: Vec<ClaimCondition>,
}

pub(super) fn kind_index(kind: Kind) -> usize {
    match kind {
        Kind::Tool => 0,
        Kind::Resource => 1,
        Kind::Prompt => 2,
        Kind::Method => 3,
    }
}

pub(super) fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::InvalidPolicy(msg.into())
}

/// `*` → `.*`, `?` → `.`, everything else literal; anchored at both ends.
fn glob_to_regex(glob: &str) -> String {
    let mut re = String::with_capacity(glob.len() + 8);
    // `s`: `*` and `?` match a newline too; a name with `\n` must not slip past a glob.
    re.push_str("(?s)^");
    let mut literal = [0u8; 4];
    for c in glob.chars() {
        match c {
            '*' => re.push_str(".*"),
            '?' => re.push('.'),
            c => re.push_str(&regex::escape(c.encode_utf8(&mut literal))),
        }
    }
    re.push('$');
    re
}

fn build_set(patterns: &[String]) -> Result<RegexSet, ConfigError> {
    RegexSetBuilder::new(patterns)
        // Thousands of rules exceed the defaults; the limits still bound memory.
        .size_limit(512 << 20)
        .dfa_size_limit(64 << 20)
        .build()
        .map_err(|e| invalid(format!("invalid pattern: {e}")))
}

impl Index {
    pub(super) fn build(rules: Vec<(usize, Rule)>) -> Result<Index, ConfigError> {
        let mut index = Index::default();
        let (mut patterns, mut pattern_ids) = (Vec::new(), Vec::new());
        for (order, rule) in rules {
            let id = index.rules.len();
            let specificity = match &rule.pattern {
                Pattern::Exact(name) => {
                    index
                        .exact
                        .entry(name.clone())
                        .or_insert_with(Vec::new)
                        .push(id);
                    (3, name.len(), std::cmp::Reverse(order))
                }
                Pattern::Glob(glob) => {
                    match glob.strip_suffix('*').filter(|p| !p.contains(['*', '?'])) {
                        Some(prefix) => {
                            index
                                .prefixes
                                .entry(prefix.to_owned())
                                .or_default()
                                .push(id);
                            if !index.prefix_lens.contains(&prefix.len()) {
                                index.prefix_lens.push(prefix.len());
                            }
                        }
                        None => {
                            patterns.push(glob_to_regex(glob));
                            pattern_ids.push(id);
                        }
                    }
                    let literals = glob.chars().filter(|c| !matches!(c, '*' | '?')).count();
                    (2, literals, std::cmp::Reverse(order))
                }
                Pattern::Regex(re) => {
                    patterns.push(re.clone());
                    pattern_ids.push(id);
                    (1, 0, std::cmp::Reverse(order))
                }
            };
            for scope in rule.all_of.iter().chain(&rule.any_of) {
                check_scope_token(scope)?;
            }
            index.rules.push(CompiledRule {
                specificity,
                requirement: Requirement {
                    all_of: rule.all_of,
                    any_of: rule.any_of,
                    conditions: rule.conditions,
                },
                deny: rule.deny,
                service: rule.service,
            });
        }
        if !patterns.is_empty() {
            index.patterns = Some((build_set(&patterns)?, pattern_ids));
        }
        index.prefix_lens.sort_unstable();
        Ok(index)
    }

    /// The rule deciding for `name`: `Err(())` if an explicit deny matches.
    fn lookup(&self, name: &str) -> Result<Option<&CompiledRule>, ()> {
        let mut best: Option<&CompiledRule> = None;
        let mut consider = |id: usize| -> Result<(), ()> {
            let Some(rule) = self.rules.get(id) else {
                return Ok(());
            };
            if rule.deny {
                return Err(());
            }
            if best.is_none_or(|b| rule.specificity > b.specificity) {
                best = Some(rule);
            }
            Ok(())
        };
        if let Some(ids) = self.exact.get(name) {
            for &id in ids {
                consider(id)?;
            }
        }
        for &len in &self.prefix_lens {
            // `get` on a char boundary only: a byte length inside a multi-byte character
            // cannot be a prefix of this name.
            let Some(prefix) = name.get(..len) else {
                if len > name.len() {
                    break;
                }
                continue;
            };
            if let Some(ids) = self.prefixes.get(prefix) {
                for &id in ids {
                    consider(id)?;
                }
            }
        }
        if let Some((set, ids)) = &self.patterns {
            for m in set.matches(name).iter() {
                if let Some(&id) = ids.get(m) {
                    consider(id)?;
                }
            }
        }
        Ok(best)
    }
}

impl ToolPolicy {
    /// Starts a policy in code.
    pub fn builder() -> ToolPolicyBuilder {
        ToolPolicyBuilder::default()
    }

    /// Compiles a policy read from a configuration file.
    pub fn from_config(config: PolicyConfig) -> Result<ToolPolicy, ConfigError> {
        let mut builder = ToolPolicy::builder();
        builder.default_scopes = config.default_scopes;
        for rule in config.rules {
            builder.rules.push(rule.into_rule().map_err(invalid)?);
        }
        builder.separator = config.scope_separator;
        builder.implies = config.scope_implies.into_iter().collect();
        builder.groups = config.groups;
        builder.descriptions = config.scope_descriptions;
        builder.build()
    }

    /// The label a metric may carry for the `kind` thing called `name`: the name when the
    /// policy has an exact rule for it (the operator wrote it, so the set is bounded), else
    /// `other` (a name the caller chose).
    pub(crate) fn metric_name<'a>(&self, kind: Kind, name: &'a str) -> &'a str {
        if self.0.indexes[kind_index(kind)].has_exact(name) {
            name
        } else {
            "other"
        }
    }

    /// The scopes described in words ([`ToolPolicyBuilder::describe_scope`]), by scope.
    pub fn scope_descriptions(&self) -> &std::collections::BTreeMap<String, String> {
        &self.0.descriptions
    }

    /// Decides whether `ctx` may use the `kind` thing called `name`.
    ///
    /// Names are case-sensitive, as MCP says; a name with upper-case letters must also pass the
    /// rules for its lower-case spelling, so `Delete_Note` never slips past a rule written for
    /// `delete_note` to a server that folds case. Names with control characters or non-ASCII
    /// letters (homoglyphs, other Unicode forms of a protected name) are forbidden.
    pub fn decide(&self, kind: Kind, name: &str, ctx: &AuthContext) -> Decision {
        if kind != Kind::Resource && !name.bytes().all(|b| b.is_ascii_graphic()) {
            return Decision::Forbidden {
                reason: "names must be printable ASCII",
            };
        }
        let decision = self.decide_exact(kind, name, ctx);
        if kind != Kind::Resource && name.bytes().any(|b| b.is_ascii_uppercase()) {
            decision.and(self.decide_exact(kind, &name.to_ascii_lowercase(), ctx))
        } else {
            decision
        }
    }

    fn decide_exact(&self, kind: Kind, name: &str, ctx: &AuthContext) -> Decision {
        let compiled = &self.0;
        let index = &compiled.indexes[kind_index(kind)];
        let rule = match index.lookup(name) {
            Err(()) => {
                return Decision::Forbidden {
                    reason: "denied by policy",
                };
            }
            Ok(rule) => rule,
        };
        if kind == Kind::Tool && compiled.group_grants_tool(ctx, name) {
            return Decision::Allow;
        }
        let requirement = match (rule, kind) {
            (Some(rule), _) => &rule.requirement,
            (None, Kind::Method) => return Decision::Allow,
            (None, _) => match &compiled.default {
                Some(default) => default,
                None => {
                    return Decision::Forbidden {
                        reason: "no rule allows this (default deny)",
                    };
                }
            },
        };
        if !requirement.conditions.iter().all(|c| c.holds(ctx)) {
            return Decision::Forbidden {
                reason: "a claim condition is not met",
            };
        }
        let all = requirement.all_of.iter().all(|s| compiled.holds(ctx, s));
        let any = requirement.any_of.is_empty()
            || requirement.any_of.iter().any(|s| compiled.holds(ctx, s));
        if all && any {
            Decision::Allow
        } else {
            // Everything the operation needs, in one challenge: all of `all_of`, and the first
            // (preferred) of `any_of` unless one of them is held already.
            let scopes = requirement
                .all_of
                .iter()
                .chain(requirement.any_of.first().filter(|_| !any))
                .collect();
            Decision::InsufficientScope { scopes }
        }
    }

    /// The third-party service the tool `name` needs, from the most specific rule matching it
    /// (see [`Rule::needs_service`]).
    ///
    /// Like [`ToolPolicy::decide`], a name with upper-case letters also matches the rules of
    /// its lower-case spelling (the exact spelling's rule first).
    pub fn service_need(&self, name: &str) -> Option<&ServiceNeed> {
        let index = &self.0.indexes[kind_index(Kind::Tool)];
        let need = |name: &str| {
            index
                .lookup(name)
                .ok()
                .flatten()
                .and_then(|rule| rule.service.as_ref())
        };
        need(name).or_else(|| {
            name.bytes()
                .any(|b| b.is_ascii_uppercase())
                .then(|| need(&name.to_ascii_lowercase()))
                .flatten()
        })
    }

    /// The third-party services the rules name.
    pub fn service_ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self.0.indexes[kind_index(Kind::Tool)]
            .rules
            .iter()
            .filter_map(|r| r.service.as_ref().map(|s| s.service.as_str()))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Every scope the policy can ask for: the default scopes and the `all_of` and `any_of`
    /// scopes of every rule. It is what the resource's metadata lists as `scopes_supported`
    /// (see [`ProtectedResourceBuilder::policy`](crate::resource::ProtectedResourceBuilder::policy)),
    /// so a client choosing its scopes from the metadata can reach every tool.
    ///
    /// ```
    /// use tower_mcp_auth::ToolPolicy;
    ///
    /// let policy = ToolPolicy::builder()
    ///     .default_scopes(["mcp:tools"])
    ///     .tool("purge_*", ["notes:admin"])
    ///     .deny_tool("shutdown")
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(policy.scopes().to_string(), "mcp:tools notes:admin");
    /// ```
    pub fn scopes(&self) -> Scopes {
        let compiled = &self.0;
        let requirements = compiled.default.iter().chain(
            compiled
                .indexes
                .iter()
                .flat_map(|index| &index.rules)
                .filter(|rule| !rule.deny)
                .map(|rule| &rule.requirement),
        );
        requirements
            .flat_map(|r| r.all_of.iter().chain(&r.any_of))
            .collect()
    }

    /// Whether the tool `name` can be served here: a tool that needs a third-party service
    /// ([`ToolPolicyBuilder::needs_service`]) only once an ATAG layer has been built from this
    /// policy value (or a clone of it). Without one, the policy layer hides such tools from
    /// `tools/list` and answers their calls with a tool error saying so: connecting an account
    /// would be impossible, and the tool would fail without the user's token.
    ///
    /// ```
    /// use tower_mcp_auth::ToolPolicy;
    ///
    /// let policy = ToolPolicy::builder()
    ///     .default_scopes(["mcp:tools"])
    ///     .tool("github_*", ["mcp:tools"])
    ///     .needs_service("github", ["repo"])
    ///     .build()
    ///     .unwrap();
    /// assert!(policy.serves("whoami"));
    /// assert!(!policy.serves("github_list_repos")); // no ATAG layer built from `policy`
    /// ```
    pub fn serves(&self, name: &str) -> bool {
        !self.0.has_services
            || self.0.services_served.load(Ordering::Relaxed)
            || self.service_need(name).is_none()
    }

    /// Whether an ATAG layer was built from this policy.
    #[cfg_attr(not(feature = "config"), allow(dead_code))]
    pub(crate) fn services_are_served(&self) -> bool {
        self.0.services_served.load(Ordering::Relaxed)
    }

    /// Called by the ATAG layer built from this policy: tools that need services are served.
    #[cfg_attr(not(feature = "atag"), allow(dead_code))]
    pub(crate) fn serve_services(&self) {
        self.0.services_served.store(true, Ordering::Relaxed);
    }

    /// Shorthand for `decide(..).is_allowed()`.
    pub fn permits(&self, kind: Kind, name: &str, ctx: &AuthContext) -> bool {
        self.decide(kind, name, ctx).is_allowed()
    }

    /// Whether a method has rules of its own (so case variants of it are refused).
    pub(crate) fn has_method_rule(&self, method: &str) -> bool {
        !matches!(
            self.0.indexes[kind_index(Kind::Method)].lookup(method),
            Ok(None)
        )
    }
}

impl Index {
    fn has_exact(&self, name: &str) -> bool {
        self.exact.contains_key(name)
    }
}

impl Compiled {
    /// Whether the caller holds `scope`: directly, through a broader scope of the hierarchy,
    /// through an implication, or through a group mapping.
    fn holds(&self, ctx: &AuthContext, scope: &str) -> bool {
        if self.held(ctx, scope) {
            return true;
        }
        if let Some(sep) = self.separator.as_deref().filter(|s| !s.is_empty()) {
            let mut end = scope.len();
            while let Some(pos) = scope[..end].rfind(sep) {
                if self.held(ctx, &scope[..pos]) {
                    return true;
                }
                end = pos;
            }
        }
        self.implied_by
            .get(scope)
            .is_some_and(|granters| granters.iter().any(|g| self.held(ctx, g)))
    }

    fn held(&self, ctx: &AuthContext, scope: &str) -> bool {
        ctx.has_scope(scope)
            || self.groups.as_ref().is_some_and(|mapping| {
                groups_of(ctx, &mapping.claim).any(|g| {
                    mapping
                        .scopes
                        .get(g)
                        .is_some_and(|granted| granted.iter().any(|s| s == scope))
                })
            })
    }

    fn group_grants_tool(&self, ctx: &AuthContext, tool: &str) -> bool {
        let Some(mapping) = &self.groups else {
            return false;
        };
        let Some((prefix, suffix)) = mapping
            .tool_group_template
            .as_deref()
            .and_then(|t| t.split_once("{tool}"))
        else {
            return false;
        };
        groups_of(ctx, &mapping.claim).any(|g| {
            g.len() == prefix.len() + tool.len() + suffix.len()
                && g.starts_with(prefix)
                && g.ends_with(suffix)
                && &g[prefix.len()..g.len() - suffix.len()] == tool
        })
    }
}

fn groups_of<'a>(ctx: &'a AuthContext, claim: &str) -> impl Iterator<Item = &'a str> {
    let items: &'a [Value] = match ctx.claim(claim) {
        Some(Value::Array(items)) => items,
        _ => &[],
    };
    items.iter().filter_map(Value::as_str)
}

#[cfg(test)]
#[path = "compiled_tests.rs"]
mod tests;
