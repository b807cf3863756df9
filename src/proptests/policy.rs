//! The policy matcher: exact names, globs (prefix map and `RegexSet`), regexes, precedence.

use proptest::prelude::*;
use serde_json::json;

use super::config;
use crate::policy::{Decision, Kind, Pattern, Rule, ToolPolicy};
use crate::{AuthContext, Scopes};

/// Reference glob: `*` any run of characters, `?` exactly one, the rest literal.
fn glob_matches(glob: &[char], name: &[char]) -> bool {
    match glob.split_first() {
        None => name.is_empty(),
        Some(('*', rest)) => (0..=name.len()).any(|i| glob_matches(rest, &name[i..])),
        Some(('?', rest)) => !name.is_empty() && glob_matches(rest, &name[1..]),
        Some((c, rest)) => name.first() == Some(c) && glob_matches(rest, &name[1..]),
    }
}

fn pattern_matches(pattern: &Pattern, name: &str) -> bool {
    match pattern {
        Pattern::Exact(e) => e == name,
        Pattern::Glob(g) => glob_matches(
            &g.chars().collect::<Vec<_>>(),
            &name.chars().collect::<Vec<_>>(),
        ),
        Pattern::Regex(r) => regex::Regex::new(r).unwrap().is_match(name),
    }
}

fn nobody() -> AuthContext {
    AuthContext::from_claims(json!({"sub": "u"}).as_object().cloned().unwrap()).unwrap()
}

/// (tier: exact 3, glob 2, regex 1; literal characters; declaration order reversed).
type Specificity = (u8, usize, std::cmp::Reverse<usize>);

/// What the documented precedence decides for `name`, without case folding: a deny among
/// the matching rules, else the most specific (exact over glob over regex, then more
/// literal characters, then declaration order), else the default scope `d`.
fn reference_exact(rules: &[(Pattern, bool)], name: &str) -> Decision {
    let mut best: Option<(Specificity, usize)> = None;
    for (i, (pattern, deny)) in rules.iter().enumerate() {
        if !pattern_matches(pattern, name) {
            continue;
        }
        if *deny {
            return Decision::Forbidden {
                reason: "denied by policy",
            };
        }
        let specificity = match pattern {
            Pattern::Exact(e) => (3, e.len(), std::cmp::Reverse(i)),
            Pattern::Glob(g) => (
                2,
                g.chars().filter(|c| !matches!(c, '*' | '?')).count(),
                std::cmp::Reverse(i),
            ),
            Pattern::Regex(_) => (1, 0, std::cmp::Reverse(i)),
        };
        if best.is_none_or(|(b, _)| specificity > b) {
            best = Some((specificity, i));
        }
    }
    let scope = match best {
        Some((_, i)) => format!("s{i}"),
        None => "d".to_owned(),
    };
    Decision::InsufficientScope {
        scopes: Scopes::new([scope]),
    }
}

fn and(a: Decision, b: Decision) -> Decision {
    match (a, b) {
        (f @ Decision::Forbidden { .. }, _) | (_, f @ Decision::Forbidden { .. }) => f,
        (Decision::InsufficientScope { scopes: a }, Decision::InsufficientScope { scopes: b }) => {
            Decision::InsufficientScope {
                scopes: a.iter().chain(b.iter()).collect(),
            }
        }
        (d, Decision::Allow) | (Decision::Allow, d) => d,
    }
}

/// The documented decision for a caller holding no scope.
fn reference(kind: Kind, rules: &[(Pattern, bool)], name: &str) -> Decision {
    if kind != Kind::Resource && !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Decision::Forbidden {
            reason: "names must be printable ASCII",
        };
    }
    let decision = reference_exact(rules, name);
    if kind != Kind::Resource && name.bytes().any(|b| b.is_ascii_uppercase()) {
        and(decision, reference_exact(rules, &name.to_ascii_lowercase()))
    } else {
        decision
    }
}

fn compile(kind: Kind, rules: &[(Pattern, bool)]) -> ToolPolicy {
    let mut builder = ToolPolicy::builder().default_scopes(["d"]);
    for (i, (pattern, deny)) in rules.iter().enumerate() {
        let rule = Rule::new(kind, pattern.clone());
        builder = builder.rule(if *deny {
            rule.deny()
        } else {
            rule.all_of([format!("s{i}")])
        });
    }
    builder.build().unwrap()
}

fn text(alphabet: &'static [char], len: std::ops::Range<usize>) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(alphabet), len).prop_map(|c| c.into_iter().collect())
}

/// Rules over `alphabet`: exact names and globs (prefix globs `lit*` take another path in
/// the index than the rest), some of them denies.
fn rules(alphabet: &'static [char]) -> impl Strategy<Value = Vec<(Pattern, bool)>> {
    prop::collection::vec(
        (text(alphabet, 0..5), prop::bool::weighted(0.15))
            .prop_map(|(p, deny)| (Pattern::name_or_glob(p), deny)),
        0..6,
    )
}

const ASCII: &[char] = &['a', 'b', 'A', '_', '.', '+', '(', '\\', '[', '$', '*', '?'];
const NAME_ASCII: &[char] = &[
    'a', 'b', 'A', 'B', '_', '.', '+', '(', '\\', '[', '$', '*', '?', ' ', '\0',
];
const UNICODE: &[char] = &[
    'a', 'é', '€', '😀', '/', ':', '.', '*', '?', '\u{2028}', '\r',
];
const UNICODE_NL: &[char] = &['a', 'é', '€', '😀', '/', ':', '.', '*', '?', '\n'];

proptest! {
    #![proptest_config(config(256))]

    /// Tool names: the compiled matcher (hash map, prefix map, RegexSet) decides exactly
    /// what the documented precedence and case rules decide.
    #[test]
    fn tool_rules_follow_the_documented_precedence(
        rules in rules(ASCII),
        names in prop::collection::vec(text(NAME_ASCII, 0..6), 1..8),
    ) {
        let policy = compile(Kind::Tool, &rules);
        for name in names {
            prop_assert_eq!(policy.decide(Kind::Tool, &name, &nobody()), reference(Kind::Tool, &rules, &name), "{}", name);
        }
    }

    /// Resource URIs (any Unicode, matched case-sensitively): the same, with globs over
    /// multi-byte characters (the prefix index cuts by bytes).
    #[test]
    fn resource_globs_agree_with_a_reference_matcher(
        rules in rules(UNICODE),
        names in prop::collection::vec(text(UNICODE, 0..6), 1..8),
    ) {
        let policy = compile(Kind::Resource, &rules);
        for name in names {
            prop_assert_eq!(policy.decide(Kind::Resource, &name, &nobody()), reference(Kind::Resource, &rules, &name), "{:?}", name);
        }
    }

    /// The same with `\n` in URIs: a glob's `*` and `?` must match it too.
    #[test]
    fn resource_globs_match_newlines(
        rules in rules(UNICODE_NL),
        names in prop::collection::vec(text(UNICODE_NL, 0..6), 1..8),
    ) {
        let policy = compile(Kind::Resource, &rules);
        for name in names {
            prop_assert_eq!(policy.decide(Kind::Resource, &name, &nobody()), reference(Kind::Resource, &rules, &name), "{:?}", name);
        }
    }

    /// Arbitrary regexes and globs: the policy builds or says why not; decisions on any
    /// name never panic.
    #[test]
    fn any_pattern_builds_or_is_refused(
        patterns in prop::collection::vec(("\\PC{0,12}", 0u8..3), 0..4),
        names in prop::collection::vec("\\PC{0,12}", 0..4),
    ) {
        let mut builder = ToolPolicy::builder().default_scopes(["d"]);
        for (p, kind) in &patterns {
            builder = builder.rule(match kind {
                0 => Rule::tool_regex(p.clone()).all_of(["x"]),
                1 => Rule::new(Kind::Resource, Pattern::Glob(p.clone())).deny(),
                _ => Rule::tool(p.clone()).all_of(["x"]),
            });
        }
        if let Ok(policy) = builder.build() {
            for name in &names {
                for kind in [Kind::Tool, Kind::Resource, Kind::Prompt, Kind::Method] {
                    let _ = policy.decide(kind, name, &nobody());
                }
                let _ = policy.service_need(name);
            }
        }
    }
}

#[test]
fn newline_in_a_resource_uri_cannot_dodge_a_deny_glob() {
    let policy = ToolPolicy::builder()
        .default_scopes(["mcp:tools"])
        .rule(Rule::resource("*secret*").deny())
        .build()
        .unwrap();
    let read = |uri: &str| {
        let body =
            json!({"jsonrpc": "2.0", "id": 1, "method": "resources/read", "params": {"uri": uri}});
        super::envelope::post(policy.clone(), "mcp:tools", &body.to_string())
    };
    assert!(!read("notes/secret").1, "the deny rule works");
    assert!(
        !read("notes\nsecret").1,
        "forwarded: the deny glob was dodged"
    );
}

#[test]
fn deny_glob_dodged_by_a_newline() {
    let policy = ToolPolicy::builder()
        .default_scopes(["d"])
        .rule(Rule::resource("*secret*").deny())
        .build()
        .unwrap();
    // `notes\nsecret` has no scheme, so `canonical_resource_uri` lets it through too.
    assert!(matches!(
        policy.decide(Kind::Resource, "notes\nsecret", &nobody()),
        Decision::Forbidden { .. }
    ));
}
