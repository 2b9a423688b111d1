//! The examples a user copies run as they are against tether and the mock
//! upstream: `examples/python/chat.py` (official `openai` Python SDK),
//! `examples/node/chat.mjs` (official `openai` npm SDK) and
//! `examples/curl.sh`. Each chats in a session given by the base URL, reads
//! the history, drops a stream after 2 chunks and resumes it; the test
//! checks what each prints and what tether recorded.

mod common;

use std::path::Path;
use std::time::Duration;

use common::history::{KEY, wait_for_messages};
use common::mock_upstream::answer;
use common::tools::{Output, run};
use common::{MockUpstream, Tether};

/// How long one example may take, interpreter start included.
const EXAMPLE_TIMEOUT: Duration = Duration::from_secs(60);

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Runs `program args` with the environment a user sets: TETHER_URL,
/// OPENAI_API_KEY, MODEL and SESSION.
async fn run_example(program: &str, args: &[&str], tether: &Tether, session: &str) -> Output {
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .current_dir(ROOT)
        .env("TETHER_URL", tether.url(""))
        .env("OPENAI_API_KEY", KEY)
        .env("MODEL", "mock-model")
        .env("SESSION", session)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("OPENAI_BASE_URL");
    let output = run(command, EXAMPLE_TIMEOUT).await;
    assert!(
        output.success,
        "{program} {args:?} failed:\n{}\nstderr: {}",
        output.stdout, output.stderr
    );
    output
}

/// What every example leaves behind: two turns in the session, the second
/// one's answer whole although its client dropped it after 2 chunks.
async fn check_history(tether: &Tether, session: &str, label: &str) {
    let stored = wait_for_messages(tether, KEY, session, 4).await;
    let roles: Vec<&str> = stored.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(
        roles,
        ["user", "assistant", "user", "assistant"],
        "{label}: two turns in session {session}"
    );
    assert_eq!(stored[0]["content"], "Say hello", "{label}");
    assert_eq!(stored[1]["content"], answer(5), "{label}: the first reply");
    assert_eq!(stored[2]["content"], "Tell me a story", "{label}");
    assert_eq!(
        stored[3]["content"],
        answer(5),
        "{label}: the dropped stream was recorded whole"
    );
    assert_eq!(stored[3]["complete"], true, "{label}");
}

/// The SDK examples print the same lines.
fn check_sdk_output(output: &Output, session: &str, label: &str) {
    let out = &output.stdout;
    for line in [
        format!("session {session}: asking \"Say hello\""),
        format!("reply: {}", answer(5)),
        "history: 2 messages".to_owned(),
        "  0 user: Say hello".to_owned(),
        format!("  1 assistant: {}", answer(5)),
        "dropped after 2 chunks: \"tok0 tok1 \"".to_owned(),
        "resumed after 2 chunks: \"tok2 tok3 tok4 \"".to_owned(),
        format!("full answer: {}", answer(5)),
    ] {
        assert!(out.contains(&line), "{label} prints {line:?}:\n{out}");
    }
}

#[tokio::test]
async fn the_python_example_chats_reads_history_and_resumes() {
    let mock = MockUpstream::start().await;
    let tether = Tether::start(&mock.url()).await;
    let output = run_example(
        common::sdk::python(),
        &["examples/python/chat.py"],
        &tether,
        "py-example",
    )
    .await;
    check_sdk_output(&output, "py-example", "python");
    check_history(&tether, "py-example", "python").await;
}

#[tokio::test]
async fn the_node_example_chats_reads_history_and_resumes() {
    assert!(
        Path::new(ROOT)
            .join("examples/node/node_modules/openai")
            .exists(),
        "examples/node/node_modules is missing: run scripts/test.sh once (it runs npm ci there)"
    );
    let mock = MockUpstream::start().await;
    let tether = Tether::start(&mock.url()).await;
    let output = run_example("node", &["examples/node/chat.mjs"], &tether, "node-example").await;
    check_sdk_output(&output, "node-example", "node");
    check_history(&tether, "node-example", "node").await;
}

#[tokio::test]
async fn the_curl_example_chats_reads_history_and_resumes() {
    let mock = MockUpstream::start().await;
    let tether = Tether::start(&mock.url()).await;
    let output = run_example("bash", &["examples/curl.sh"], &tether, "curl-example").await;
    let out = &output.stdout;
    let first = out
        .split("then dropping the connection:")
        .nth(1)
        .and_then(|rest| rest.split("dropped after 2 events").next())
        .unwrap_or_default();
    let resumed = out
        .split("resumed after 2 events:")
        .nth(1)
        .unwrap_or_default();
    assert!(
        first.contains("tok1") && !first.contains("tok2"),
        "curl keeps the first 2 events:\n{out}"
    );
    assert!(
        resumed.contains("tok2") && resumed.contains("tok4") && resumed.contains("[DONE]"),
        "the resume carries the rest to the end:\n{out}"
    );
    assert!(
        !resumed
            .split("stream status:")
            .next()
            .unwrap()
            .contains("tok1"),
        "and nothing the client had:\n{out}"
    );
    assert!(
        out.contains("\"message_count\":2"),
        "the history has the first turn:\n{out}"
    );
    assert!(
        out.contains("\"state\":\"done\""),
        "the status says done:\n{out}"
    );
    check_history(&tether, "curl-example", "curl").await;
}
