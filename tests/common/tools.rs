//! The command-line tools the operations tests run: schemathesis and
//! kubernetes-validate from `target/ops-venv` (pinned in `scripts/test.sh`),
//! and a child process helper that bounds their time and shows their output.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

/// A tool installed by `scripts/test.sh` in `target/ops-venv/bin`, or
/// `TETHER_OPS_VENV/bin`; a missing one fails the test (they never skip).
pub fn ops_tool(name: &str) -> PathBuf {
    let venv = std::env::var("TETHER_OPS_VENV")
        .ok()
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/ops-venv")));
    let tool = venv.join("bin").join(name);
    assert!(
        tool.exists(),
        "{} is missing. Run scripts/test.sh once: it creates target/ops-venv with the pinned schemathesis and kubernetes-validate.",
        tool.display()
    );
    tool
}

/// What a finished child printed.
pub struct Output {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `command` to its end within `limit`, without proxies from the
/// environment, and returns what it printed.
pub async fn run(mut command: tokio::process::Command, limit: Duration) -> Output {
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        command.env_remove(var);
    }
    command
        .env("NO_PROXY", "*")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().expect("the tool starts");
    let output = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{command:?} did not finish within {limit:?}"))
        .unwrap();
    Output {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}
