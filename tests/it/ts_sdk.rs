//! The TypeScript MCP SDK's own OAuth client (an independent implementation, run with Node)
//! against the quickstart's embedded stack: discovery from the 401, dynamic registration, the
//! dev login driven like a browser, PKCE code exchange with the `iss` check, tool calls, a
//! step-up refusal, and the ATAG connect flow with the third party. The SDK version is pinned
//! in `tests/ts/package-lock.json`; the test installs it (`npm ci`) on first run.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::quickstart;
use crate::support::*;

fn ts_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/ts")
}

async fn install_sdk() {
    let dir = ts_dir();
    if dir
        .join("node_modules/@modelcontextprotocol/sdk/package.json")
        .exists()
    {
        return;
    }
    let status = tokio::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&dir)
        .status()
        .await
        .expect("npm (Node.js) is needed to run the TypeScript SDK client");
    assert!(status.success(), "npm ci in {} failed", dir.display());
}

#[tokio::test]
async fn typescript_sdk_client_registers_logs_in_calls_tools_and_connects_the_third_party() {
    install_sdk().await;
    let (tp_listener, tp_addr) = listener().await;
    let (listener, addr) = listener().await;
    let base = format!("http://{addr}");
    let mcp_url = format!("{base}/mcp");
    let (app, third_party) = quickstart::embedded_stack(
        quickstart::auth_server_builder(&base, &mcp_url, "demo-password"),
        &mcp_url,
        &format!("http://{tp_addr}"),
        "demo-password",
    )
    .unwrap();
    spawn(tp_listener, third_party);
    spawn(listener, app);

    let run = tokio::process::Command::new("node")
        .arg(ts_dir().join("e2e.mjs"))
        .arg(&mcp_url)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the TypeScript client finishes")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_str(stdout.trim()).expect("one JSON report");
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
