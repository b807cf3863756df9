//! Unit tests of the compiled policy (kept apart: the module itself stays one job).

use serde_json::json;

use super::*;

fn ctx(claims: Value) -> AuthContext {
    let mut claims = claims.as_object().cloned().unwrap();
    claims.insert("sub".into(), "u".into());
    AuthContext::from_claims(claims).unwrap()
}

fn scoped(scope: &str) -> AuthContext {
    ctx(json!({ "scope": scope }))
}

fn needs(scopes: &str) -> Decision {
    Decision::InsufficientScope {
        scopes: scopes.split(' ').collect(),
    }
}

fn forbidden(d: &Decision) -> bool {
    matches!(d, Decision::Forbidden { .. })
}

/// A rule for one kind never decides for another: a tool rule granting `notes` on a weak
/// scope must not open the prompt, resource or method of the same name.
#[test]
fn kinds_do_not_share_rules() {
    let policy = ToolPolicy::builder()
        .tool("notes", ["public"])
        .rule(Rule::resource("notes").all_of(["res"]))
        .rule(Rule::prompt("notes").all_of(["prm"]))
        .method("notes", ["mth"])
        .build()
        .unwrap();
    let public = scoped("public");
    assert_eq!(policy.decide(Kind::Tool, "notes", &public), Decision::Allow);
    assert_eq!(
        policy.decide(Kind::Resource, "notes", &public),
        needs("res")
    );
    assert_eq!(policy.decide(Kind::Prompt, "notes", &public), needs("prm"));
    assert_eq!(policy.decide(Kind::Method, "notes", &public), needs("mth"));
    assert!(policy.permits(Kind::Prompt, "notes", &scoped("prm")));
    assert!(!policy.permits(Kind::Prompt, "notes", &public));
    let deny = ToolPolicy::builder()
        .default_scopes(["public"])
        .deny_tool("shutdown")
        .build()
        .unwrap();
    assert!(forbidden(&deny.decide(Kind::Tool, "shutdown", &public)));
    assert!(deny.permits(Kind::Prompt, "shutdown", &public));
    assert!(deny.permits(Kind::Resource, "shutdown", &public));
    assert!(!deny.has_method_rule("shutdown"));
}

/// Globs match what they say and nothing more: a `*_admin` rule must not cover `read`,
/// and a deny glob with several wildcards must still catch what it names.
#[test]
fn globs_match_exactly_their_names() {
    let policy = ToolPolicy::builder()
        .default_scopes(["public"])
        .tool("*_admin", ["admin"])
        .tool("get_?", ["one"])
        .tool("a.b*c", ["dot"])
        .rule(Rule::tool("del*te*").deny())
        .rule(Rule::tool("drop_*").deny())
        .build()
        .unwrap();
    let public = scoped("public");
    assert_eq!(policy.decide(Kind::Tool, "read", &public), Decision::Allow);
    assert_eq!(
        policy.decide(Kind::Tool, "purge_admin", &public),
        needs("admin")
    );
    assert_eq!(policy.decide(Kind::Tool, "get_x", &public), needs("one"));
    assert_eq!(
        policy.decide(Kind::Tool, "get_xy", &public),
        Decision::Allow
    );
    assert_eq!(policy.decide(Kind::Tool, "a.bc", &public), needs("dot"));
    assert_eq!(policy.decide(Kind::Tool, "axbc", &public), Decision::Allow);
    for denied in ["delete_all", "delte", "drop_table", "drop_"] {
        assert!(
            forbidden(&policy.decide(Kind::Tool, denied, &public)),
            "{denied}"
        );
    }
    assert_eq!(policy.decide(Kind::Tool, "drop", &public), Decision::Allow);
}

/// Regex rules are honoured (deny and allow alike).
#[test]
fn regex_rules_match() {
    let policy = ToolPolicy::builder()
        .default_scopes(["public"])
        .rule(Rule::tool_regex("^rm_[0-9]+$").deny())
        .tool_regex("^admin_", ["admin"])
        .build()
        .unwrap();
    let public = scoped("public");
    assert!(forbidden(&policy.decide(Kind::Tool, "rm_42", &public)));
    assert_eq!(
        policy.decide(Kind::Tool, "admin_x", &public),
        needs("admin")
    );
    assert_eq!(policy.decide(Kind::Tool, "rm_x", &public), Decision::Allow);
}

/// The most specific rule decides: a broad rule on a weak scope, declared first, must not
/// override a narrower one (exact over glob, more literal characters among globs).
#[test]
fn most_specific_rule_wins_whatever_the_order() {
    let policy = ToolPolicy::builder()
        .tool("n*", ["broad"])
        .tool("notes_*", ["narrow"])
        .tool("notes_admin", ["admin"])
        .tool_regex("^n", ["regex"])
        .build()
        .unwrap();
    let broad = scoped("broad regex narrow");
    assert_eq!(
        policy.decide(Kind::Tool, "notes_x", &scoped("broad regex")),
        needs("narrow")
    );
    assert_eq!(
        policy.decide(Kind::Tool, "notes_admin", &broad),
        needs("admin")
    );
    assert_eq!(
        policy.decide(Kind::Tool, "nx", &scoped("regex")),
        needs("broad")
    );
    assert_eq!(
        policy.decide(Kind::Tool, "nx", &scoped("broad")),
        Decision::Allow
    );
    // Reversed declaration order, same outcome.
    let policy = ToolPolicy::builder()
        .tool_regex("^n", ["regex"])
        .tool("notes_admin", ["admin"])
        .tool("notes_*", ["narrow"])
        .tool("n*", ["broad"])
        .build()
        .unwrap();
    assert_eq!(
        policy.decide(Kind::Tool, "notes_x", &scoped("broad regex")),
        needs("narrow")
    );
    assert_eq!(
        policy.decide(Kind::Tool, "notes_admin", &broad),
        needs("admin")
    );
    // Same specificity: the first declared wins.
    let policy = ToolPolicy::builder()
        .tool("x", ["first"])
        .tool("x", ["second"])
        .build()
        .unwrap();
    assert_eq!(
        policy.decide(Kind::Tool, "x", &scoped("second")),
        needs("first")
    );
}

/// A multi-byte character in a resource URI, cut by a shorter glob prefix, must not stop
/// the lookup before a longer deny prefix.
#[test]
fn multibyte_uri_does_not_dodge_a_longer_deny_prefix() {
    let policy = ToolPolicy::builder()
        .default_scopes(["public"])
        .rule(Rule::resource("file:///x*").all_of(["x"]))
        .rule(Rule::resource("file:///\u{e9}/*").deny())
        .build()
        .unwrap();
    let public = scoped("public");
    assert!(forbidden(&policy.decide(
        Kind::Resource,
        "file:///\u{e9}/secret",
        &public
    )));
    assert_eq!(
        policy.decide(Kind::Resource, "file:///xy", &public),
        needs("x")
    );
    assert_eq!(
        policy.decide(Kind::Resource, "file:///", &public),
        Decision::Allow
    );
}

/// Tool, prompt and method names must be printable ASCII (no control characters, spaces
/// or homoglyphs); resource URIs are not restricted that way.
#[test]
fn unprintable_names_are_forbidden_except_resources() {
    let policy = ToolPolicy::builder()
        .default_scopes(["public"])
        .build()
        .unwrap();
    let public = scoped("public");
    for name in ["delete all", "delete\n", "d\u{0435}lete", "x\u{0}"] {
        for kind in [Kind::Tool, Kind::Prompt, Kind::Method] {
            assert!(forbidden(&policy.decide(kind, name, &public)), "{name:?}");
        }
    }
    assert_eq!(
        policy.decide(Kind::Tool, "delete", &public),
        Decision::Allow
    );
    assert_eq!(
        policy.decide(Kind::Resource, "file:///a b", &public),
        Decision::Allow
    );
}

/// `Delete_All` is judged by the rules for `delete_all` too (a server may fold case); a
/// resource URI is case-sensitive and is not.
#[test]
fn upper_case_names_pass_lower_case_rules() {
    let policy = ToolPolicy::builder()
        .default_scopes(["public"])
        .deny_tool("delete_all")
        .rule(Rule::prompt("secret").all_of(["admin"]))
        .rule(Rule::resource("file:///a").deny())
        .build()
        .unwrap();
    let public = scoped("public");
    assert!(forbidden(&policy.decide(Kind::Tool, "Delete_All", &public)));
    assert_eq!(
        policy.decide(Kind::Prompt, "SECRET", &public),
        needs("admin")
    );
    assert_eq!(
        policy.decide(Kind::Resource, "file:///A", &public),
        Decision::Allow
    );
    assert!(forbidden(&policy.decide(
        Kind::Resource,
        "file:///a",
        &public
    )));
}

/// Default deny without default scopes; methods without rules need nothing more.
#[test]
fn uncovered_names() {
    let policy = ToolPolicy::builder().build().unwrap();
    let public = scoped("public");
    assert!(forbidden(&policy.decide(Kind::Tool, "x", &public)));
    assert!(forbidden(&policy.decide(Kind::Resource, "x", &public)));
    assert_eq!(
        policy.decide(Kind::Method, "tools/list", &public),
        Decision::Allow
    );
    let policy = ToolPolicy::builder().default_scopes(["d"]).build().unwrap();
    assert_eq!(policy.decide(Kind::Tool, "x", &public), needs("d"));
    assert_eq!(
        policy.decide(Kind::Tool, "x", &scoped("d")),
        Decision::Allow
    );
}

/// `all_of`, `any_of` and claim conditions are all required; the challenge asks for what
/// is missing.
#[test]
fn requirements_and_challenges() {
    let policy = ToolPolicy::builder()
        .rule(Rule::tool("t").all_of(["a"]).any_of(["b", "c"]))
        .rule(Rule::tool("u").all_of(["a"]))
        .rule(
            Rule::tool("v")
                .all_of(["a"])
                .when(ClaimCondition::equals("tenant", "corp")),
        )
        .build()
        .unwrap();
    assert_eq!(policy.decide(Kind::Tool, "t", &scoped("x")), needs("a b"));
    assert_eq!(policy.decide(Kind::Tool, "t", &scoped("c")), needs("a"));
    assert_eq!(policy.decide(Kind::Tool, "t", &scoped("a")), needs("a b"));
    assert_eq!(
        policy.decide(Kind::Tool, "t", &scoped("a c")),
        Decision::Allow
    );
    assert_eq!(
        policy.decide(Kind::Tool, "u", &scoped("a")),
        Decision::Allow
    );
    assert_eq!(policy.decide(Kind::Tool, "u", &scoped("b")), needs("a"));
    let corp = ctx(json!({"scope": "a", "tenant": "corp"}));
    let other = ctx(json!({"scope": "a", "tenant": "evil"}));
    assert_eq!(policy.decide(Kind::Tool, "v", &corp), Decision::Allow);
    assert!(forbidden(&policy.decide(Kind::Tool, "v", &other)));
    assert!(Decision::Allow.is_allowed());
    assert!(!needs("a").is_allowed());
}

/// `files` covers `files:read` with separator `:`; `file` does not, and an empty separator
/// is no hierarchy.
#[test]
fn scope_hierarchy_and_implications() {
    let policy = ToolPolicy::builder()
        .tool("read", ["files:read:all"])
        .tool("admin", ["notes:admin"])
        .scope_separator(":")
        .scope_implies("root", ["notes:admin"])
        .build()
        .unwrap();
    assert!(policy.permits(Kind::Tool, "read", &scoped("files")));
    assert!(policy.permits(Kind::Tool, "read", &scoped("files:read")));
    assert!(!policy.permits(Kind::Tool, "read", &scoped("file")));
    assert!(!policy.permits(Kind::Tool, "read", &scoped("files:re")));
    assert!(policy.permits(Kind::Tool, "admin", &scoped("root")));
    assert!(!policy.permits(Kind::Tool, "admin", &scoped("notes:read")));
    let flat = ToolPolicy::builder()
        .tool("read", ["files:read"])
        .scope_separator("")
        .build()
        .unwrap();
    assert!(!flat.permits(Kind::Tool, "read", &scoped("files")));
}

fn groups() -> GroupMapping {
    GroupMapping {
        claim: "groups".into(),
        scopes: [("readers".to_owned(), vec!["notes:read".to_owned()])].into(),
        tool_group_template: Some("grp-{tool}-allow".into()),
    }
}

/// A group grants its own scopes, not others.
#[test]
fn groups_grant_their_scopes_only() {
    let policy = ToolPolicy::builder()
        .tool("read", ["notes:read"])
        .tool("admin", ["notes:admin"])
        .groups(groups())
        .build()
        .unwrap();
    let reader = ctx(json!({"groups": ["x", "readers"]}));
    assert!(policy.permits(Kind::Tool, "read", &reader));
    assert!(!policy.permits(Kind::Tool, "admin", &reader));
    assert!(!policy.permits(Kind::Tool, "read", &ctx(json!({"groups": ["writers"]}))));
    assert!(!policy.permits(Kind::Tool, "read", &ctx(json!({"groups": "readers"}))));
}

/// The per-tool group grants exactly its tool: not one of the same length, not a group
/// with a different prefix or suffix around the tool's name, not a prompt of that name.
#[test]
fn tool_group_grants_exactly_its_tool() {
    let policy = ToolPolicy::builder()
        .groups(groups())
        .deny_tool("delete")
        .build()
        .unwrap();
    let member = ctx(json!({"groups": ["grp-notes-allow"]}));
    assert!(policy.permits(Kind::Tool, "notes", &member));
    assert!(!policy.permits(Kind::Prompt, "notes", &member));
    assert!(!policy.permits(Kind::Tool, "todos", &member));
    assert!(!policy.permits(Kind::Tool, "note", &member));
    for group in [
        "evilnotes-allow",
        "grp-notes-deny!",
        "xxx-notes-yyyyy",
        "grp-notes-allowx",
        "grp-notes-allo",
        "grp-todos-allow",
    ] {
        let other = ctx(json!({ "groups": [group] }));
        assert!(!policy.permits(Kind::Tool, "notes", &other), "{group}");
    }
    let deny_member = ctx(json!({"groups": ["grp-delete-allow"]}));
    assert!(!policy.permits(Kind::Tool, "delete", &deny_member));
}

/// Tools that need a third-party service are served only once an ATAG layer serves them.
#[test]
fn services() {
    let policy = ToolPolicy::builder()
        .default_scopes(["mcp"])
        .rule(
            Rule::tool("github_*")
                .all_of(["mcp"])
                .needs_service("github", ["repo"]),
        )
        .rule(
            Rule::tool("gh_*")
                .all_of(["mcp"])
                .needs_service("github", ["repo"]),
        )
        .rule(
            Rule::tool("mail")
                .all_of(["mcp"])
                .needs_service("google", ["gmail"]),
        )
        .build()
        .unwrap();
    assert_eq!(policy.service_ids(), ["github", "google"]);
    let need = policy.service_need("github_repos").unwrap();
    assert_eq!(
        (need.service.as_str(), &need.scopes[..]),
        ("github", &["repo".to_owned()][..])
    );
    assert_eq!(
        policy.service_need("GitHub_Repos").unwrap().service,
        "github"
    );
    assert_eq!(policy.service_need("whoami"), None);
    assert!(policy.serves("whoami"));
    assert!(!policy.serves("github_repos"));
    assert!(!policy.serves("mail"));
    let clone = policy.clone();
    clone.serve_services();
    assert!(policy.serves("github_repos"));
    assert!(policy.serves("whoami"));
    let plain = ToolPolicy::builder()
        .default_scopes(["mcp"])
        .build()
        .unwrap();
    assert!(plain.serves("github_repos"));
    assert!(plain.service_ids().is_empty());
}

/// `scopes()` lists what can be asked for, not the scopes written on deny rules.
#[test]
fn scopes_lists_allowing_rules() {
    let policy = ToolPolicy::builder()
        .default_scopes(["mcp:tools"])
        .tool("purge_*", ["notes:admin"])
        .rule(Rule::tool("t").any_of(["b"]))
        .rule(Rule::tool("shutdown").all_of(["secret"]).deny())
        .build()
        .unwrap();
    assert_eq!(policy.scopes().to_string(), "b mcp:tools notes:admin");
}

/// Methods with rules of their own, allowing or denying, are known as such.
#[test]
fn method_rules() {
    let policy = ToolPolicy::builder()
        .method("tools/call", ["mcp"])
        .rule(Rule::method("DELETE").deny())
        .build()
        .unwrap();
    assert!(policy.has_method_rule("tools/call"));
    assert!(policy.has_method_rule("DELETE"));
    assert!(!policy.has_method_rule("ping"));
}

/// Decisions combine to the stricter; scope refusals add up.
#[test]
fn decisions_combine() {
    let f = Decision::Forbidden { reason: "r" };
    assert_eq!(needs("a").and(f.clone()), f);
    assert_eq!(Decision::Allow.and(needs("a")), needs("a"));
    assert_eq!(needs("a").and(needs("b")), needs("a b"));
    assert_eq!(Decision::Allow.and(Decision::Allow), Decision::Allow);
}
