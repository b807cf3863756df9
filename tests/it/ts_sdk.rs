//! The TypeScript MCP SDK's own OAuth client (an independent implementation, run with Node)
//! against the quickstart's embedded stack: discovery from the 401, dynamic registration, the
//! dev login driven like a browser, PKCE code exchange with the `iss` check, tool calls, a
//! step-up refusal, and the ATAG connect flow with the third party; and the v2 client package
//! (`@modelcontextprotocol/client`): SEP-2350 step-up with consent for the added scope, and on
//! revision 2026-07-28 the ATAG `input_required` round trip through its URL elicitation
//! handler. The SDK versions are pinned in `tests/ts/package-lock.json`; the tests install them
//! (`npm ci`) on first run.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::quickstart;
use crate::support::*;

fn ts_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/ts")
}

/// Installs the pinned SDK packages once per test run (tests run in parallel: one `npm ci`).
pub(crate) async fn install_sdk() {
    static INSTALLED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    INSTALLED
        .get_or_init(|| {
            npm_ci(
                ts_dir(),
                &[
                    "@modelcontextprotocol/sdk/package.json",
                    "@modelcontextprotocol/client/package.json",
                ],
            )
        })
        .await;
}

/// Runs `script` with Node against `mcp_url` and returns its one-line JSON report.
pub(crate) async fn run_node(script: &str, args: &[&str]) -> Value {
    let run = tokio::process::Command::new("node")
        .arg(ts_dir().join(script))
        .args(args)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("the TypeScript client finishes")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).expect("one JSON report")
}

/// The v2 client (`@modelcontextprotocol/client`) in `scenario` of `tests/ts/e2e-v2.mjs`,
/// against a fresh quickstart stack.
async fn v2(scenario: &str) -> Value {
    v2_against(&start_quickstart().await.mcp_url, scenario).await
}

/// The v2 client in `scenario` against the MCP endpoint `mcp_url`.
pub(crate) async fn v2_against(mcp_url: &str, scenario: &str) -> Value {
    install_sdk().await;
    let report = run_node("e2e-v2.mjs", &[mcp_url, scenario]).await;
    assert!(report.get("fatal").is_none(), "{report}");
    report
}

fn scope_set(scope: &Value) -> BTreeSet<&str> {
    scope.as_str().unwrap_or_default().split(' ').collect()
}

#[tokio::test]
async fn typescript_sdk_client_registers_logs_in_calls_tools_and_connects_the_third_party() {
    install_sdk().await;
    let mcp_url = start_quickstart().await.mcp_url;
    let report = run_node("e2e.mjs", &[&mcp_url]).await;
    assert!(report["client_id"].as_str().unwrap().starts_with("app-"));
    assert_eq!(
        report["tools"],
        serde_json::json!(["add_note", "list_notes", "third_party_profile", "whoami"])
    );
    // It asked for the scopes the 401 challenge named.
    assert!(
        report["who"]
            .as_str()
            .unwrap()
            .ends_with("scopes=mcp:tools notes:read notes:write"),
        "{report}"
    );
    assert_eq!(report["notes"], "from the TypeScript SDK");
    // notes:admin needs a new authorization: this SDK refreshes instead, and gives up.
    assert!(
        report["stepUp"].as_str().unwrap().contains("403"),
        "{report}"
    );
    assert_eq!(report["third"]["isError"], true);
    assert_eq!(report["connected"], 200);
    assert_eq!(report["again"], "At the third party you are \"demo\"");
}

#[tokio::test]
async fn typescript_v2_client_steps_up_to_admin_as_demo_with_consent_for_the_new_scope() {
    let report = v2("stepup-demo").await;
    let rounds = report["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 2, "{report}");
    // Round 1: the scopes the 401 names; a login and a consent page.
    assert_eq!(
        scope_set(&rounds[0]["scope"]),
        scope_set(&quickstart::DEMO_SCOPES.into())
    );
    assert_eq!(rounds[0]["login"], true);
    // The 403 names everything purge_all_notes needs, in one challenge.
    let challenge = report["challenge403"].as_str().unwrap();
    assert!(
        challenge.contains(r#"scope="mcp:tools notes:admin""#),
        "{challenge}"
    );
    // Round 2: the union, signed in already, the consent page marking only the added scope.
    assert_eq!(
        scope_set(&rounds[1]["scope"]),
        BTreeSet::from(["mcp:tools", "notes:read", "notes:write", "notes:admin"])
    );
    assert_eq!(rounds[1]["login"], false);
    assert_eq!(rounds[1]["consent"], true);
    assert_eq!(rounds[1]["newScopes"], serde_json::json!(["notes:admin"]));
    assert!(scope_set(&report["tokenScope"]).contains("notes:admin"));
    assert_eq!(report["purge"]["ok"], true, "{report}");
    assert!(
        report["purge"]["text"]
            .as_str()
            .unwrap()
            .starts_with("demo purged"),
        "{report}"
    );
}

#[tokio::test]
async fn typescript_v2_client_stepping_up_as_reader_gets_no_admin_and_stays_refused() {
    let report = v2("stepup-reader").await;
    let rounds = report["rounds"].as_array().unwrap();
    assert!(rounds.len() >= 2, "{report}");
    // Every later round asked for notes:admin and got a token without it (RFC 6749 §3.3:
    // `scope` in the token response says what was granted).
    for round in &rounds[1..] {
        assert!(
            scope_set(&round["scope"]).contains("notes:admin"),
            "{report}"
        );
        assert_eq!(
            scope_set(&round["tokenScope"]),
            scope_set(&quickstart::DEMO_SCOPES.into()),
            "{report}"
        );
    }
    assert_eq!(report["purge"]["ok"], false, "{report}");
    assert!(
        report["challenge403"]
            .as_str()
            .unwrap()
            .contains(r#"error="insufficient_scope""#)
    );
    assert!(report["who"].as_str().unwrap().contains("subject=reader"));
}

#[tokio::test]
async fn typescript_v2_client_declining_the_new_scope_keeps_the_old_token() {
    let report = v2("stepup-decline").await;
    let rounds = report["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 2, "{report}");
    assert_eq!(rounds[1]["consent"], true);
    assert_eq!(rounds[1]["decision"], "deny");
    assert_eq!(rounds[1]["error"], "access_denied");
    assert_eq!(report["purge"]["ok"], false);
    assert_eq!(
        scope_set(&report["tokenScope"]),
        scope_set(&quickstart::DEMO_SCOPES.into())
    );
    assert!(
        report["whoAfter"]
            .as_str()
            .unwrap()
            .contains("subject=demo"),
        "{report}"
    );
}

#[tokio::test]
async fn typescript_v2_client_on_2026_07_28_connects_the_third_party_through_url_elicitation() {
    let report = v2("atag-elicitation").await;
    assert_eq!(report["protocol"], "2026-07-28");
    assert_eq!(report["handlerCalls"], 1, "{report}");
    let prompt = &report["elicitations"][0];
    assert_eq!(prompt["mode"], "url");
    assert!(prompt["url"].as_str().unwrap().contains("/atag/connect/"));
    assert_eq!(prompt["callback"], 200);
    assert_eq!(report["result"]["ok"], true, "{report}");
    assert_eq!(
        report["result"]["text"],
        "At the third party you are \"demo\""
    );
}

#[tokio::test]
async fn typescript_v2_client_on_2026_07_28_accepts_the_tool_error_with_the_link() {
    let report = v2("atag-no-elicitation").await;
    assert_eq!(report["protocol"], "2026-07-28");
    // Accepted by the SDK (it refuses results without `resultType` on this revision).
    assert_eq!(report["result"]["ok"], true, "{report}");
    assert_eq!(report["result"]["isError"], true);
    assert!(report["link"].as_str().unwrap().contains("/atag/connect/"));
    assert_eq!(report["callback"], 200);
    assert_eq!(
        report["again"]["text"],
        "At the third party you are \"demo\""
    );
}

#[tokio::test]
async fn typescript_v2_client_declining_or_cancelling_the_connection_ends_the_call() {
    for (scenario, word) in [("atag-decline", "declined"), ("atag-cancel", "cancelled")] {
        let report = v2(scenario).await;
        // Asked once; the answer ends the call with a result instead of a new prompt.
        assert_eq!(report["handlerCalls"], 1, "{report}");
        assert_eq!(report["result"]["ok"], true, "{report}");
        assert_eq!(report["result"]["isError"], true);
        let text = report["result"]["text"].as_str().unwrap();
        assert!(
            text.contains(word) && text.contains("third_party_profile"),
            "{text}"
        );
    }
}
