//! Running the official OpenAI Python SDK scripts of `tests/sdk/` against
//! tether. The interpreter is `TETHER_SDK_PYTHON`, else
//! `target/sdk-venv/bin/python`; `scripts/test.sh` sets both up.

use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

use super::Tether;
use super::history::KEY;

/// How long one script may take, SDK import included.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);

/// The Python interpreter with the `openai` package, checked once; a missing
/// one fails the test (these tests never skip).
pub fn python() -> &'static str {
    static PYTHON: OnceLock<Result<String, String>> = OnceLock::new();
    let found = PYTHON.get_or_init(|| {
        let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/target/sdk-venv/bin/python");
        let python = match std::env::var("TETHER_SDK_PYTHON") {
            Ok(python) if !python.is_empty() => python,
            _ if std::path::Path::new(venv).exists() => venv.to_owned(),
            _ => {
                return Err(format!(
                    "no Python for the SDK tests: TETHER_SDK_PYTHON is not set and {venv} does not exist"
                ));
            }
        };
        let check = std::process::Command::new(&python)
            .args(["-c", "import openai; print(openai.__version__)"])
            .output()
            .map_err(|e| format!("cannot run {python}: {e}"))?;
        if !check.status.success() {
            return Err(format!(
                "{python} cannot import openai: {}",
                String::from_utf8_lossy(&check.stderr).trim()
            ));
        }
        Ok(python)
    });
    match found {
        Ok(python) => python,
        Err(why) => panic!(
            "{why}. Run scripts/test.sh once: it creates target/sdk-venv with the pinned openai package and sets TETHER_SDK_PYTHON."
        ),
    }
}

/// Runs `tests/sdk/{script}` against tether for `session` and returns the
/// JSON it printed: `{"messages": [...], "replies": [...]}`.
pub async fn run_sdk(script: &str, tether: &Tether, session: &str) -> Value {
    run_sdk_with(script, &[&tether.url(""), KEY, session], &[]).await
}

/// Runs `tests/sdk/{script}` with `args` and `envs` and returns the JSON it printed.
pub async fn run_sdk_with(script: &str, args: &[&str], envs: &[(&str, &str)]) -> Value {
    let path = format!("{}/tests/sdk/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut command = tokio::process::Command::new(python());
    command
        .arg(&path)
        .args(args)
        .envs(envs.iter().copied())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("NO_PROXY", "*")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for var in [
        "OPENAI_BASE_URL",
        "OPENAI_API_KEY",
        "OPENAI_ORG_ID",
        "OPENAI_PROJECT_ID",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        command.env_remove(var);
    }
    let child = command.spawn().expect("the SDK script starts");
    let output = tokio::time::timeout(SCRIPT_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish within {SCRIPT_TIMEOUT:?}"))
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed ({}):\n{stderr}\nstdout: {stdout}",
        output.status
    );
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{script} printed no JSON ({e}):\n{stdout}\nstderr: {stderr}"))
}
