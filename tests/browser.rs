//! The demo chat page and the console in a real browser: Debian's headless
//! Chromium driven by playwright-core (`tests/browser/reload.mjs`). A long
//! answer streams into the chat page, the page is reloaded mid-stream, and
//! the answer completes on screen with exactly the text the upstream sent,
//! once; then the console shows that conversation, follows a second answer
//! live, exports the session and shows tool calls as blocks. Screenshots, the
//! export and what the browser saw (`result.json`) are kept in
//! `tests/artifacts/browser/`. A missing Chromium or playwright-core fails
//! the test: `scripts/test.sh` installs both.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::history::{KEY, wait_for_messages};
use common::{MockUpstream, Tether, client, mock_upstream};
use serde_json::{Value, json};

/// A long answer: 300 chunks 25 ms apart, 7.5 s, so the reload lands mid-stream.
const CHUNKS: u64 = 300;
const DELAY_MS: u64 = 25;
const PROMPT: &str = "Count for me, slowly.";
const CHROMIUM: &str = "/usr/bin/chromium";
const TOOLS_SESSION: &str = "tools-demo";
/// The whole browser run, Chromium's start included.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

fn browser_dir() -> String {
    format!("{}/tests/browser", env!("CARGO_MANIFEST_DIR"))
}

/// Chromium and playwright-core, or a failure that says how to get them.
fn require_browser() {
    let playwright = format!("{}/node_modules/playwright-core", browser_dir());
    let missing: Vec<&str> = [
        (!Path::new(CHROMIUM).exists()).then_some("Debian's chromium (/usr/bin/chromium)"),
        (!Path::new(&playwright).exists())
            .then_some("playwright-core (tests/browser/node_modules)"),
    ]
    .into_iter()
    .flatten()
    .collect();
    assert!(
        missing.is_empty(),
        "the browser test needs {}. Run scripts/test.sh once: it installs chromium with apt-get and runs npm ci in tests/browser.",
        missing.join(" and ")
    );
}

/// Records a conversation with parallel tool calls (a real OpenAI stream
/// replayed by the mock) in `session`, for the console to show.
async fn record_tool_calls(tether: &Tether, session: &str) -> Vec<Value> {
    let fixture = "openai-chat-parallel_tools-2";
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/streams");
    let body = std::fs::read_to_string(format!("{dir}/{fixture}.request.json")).unwrap();
    let response = client()
        .post(tether.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .header("x-session-id", session)
        .header("x-mock-replay", format!("{fixture}.sse"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.bytes().await.unwrap();
    let stored = wait_for_messages(tether, KEY, session, 2).await;
    stored
        .last()
        .and_then(|reply| reply["tool_calls"].as_array().cloned())
        .expect("the replayed reply has tool calls")
}

/// Runs the browser script against tether and returns the JSON it printed.
async fn run_browser(tether: &Tether) -> Value {
    let artifacts = format!("{}/tests/artifacts/browser", env!("CARGO_MANIFEST_DIR"));
    let _ = std::fs::remove_dir_all(&artifacts);
    std::fs::create_dir_all(&artifacts).unwrap();
    let mut command = tokio::process::Command::new("node");
    command
        .current_dir(browser_dir())
        .arg("reload.mjs")
        .args([
            &tether.url(""),
            KEY,
            &CHUNKS.to_string(),
            &DELAY_MS.to_string(),
        ])
        .args([&artifacts, TOOLS_SESSION])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = tokio::time::timeout(SCRIPT_TIMEOUT, command.output())
        .await
        .expect("the browser script finishes within its timeout")
        .expect("node runs (Node 20 or newer)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stdout.lines().last().unwrap_or_default();
    let result: Value = serde_json::from_str(last).unwrap_or_else(|e| {
        panic!(
            "the browser script printed no JSON ({e}); status {}\nstdout: {stdout}\nstderr: {stderr}",
            output.status
        )
    });
    std::fs::write(format!("{artifacts}/result.json"), result.to_string()).unwrap();
    assert_eq!(
        result["problems"],
        json!([]),
        "the browser run had no failed step, page error or console error (all it saw: {artifacts}/result.json)\nstderr: {stderr}"
    );
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_mid_stream_completes_the_answer_once_and_the_console_shows_it() {
    require_browser();
    let mock = MockUpstream::start().await;
    let tether = Tether::start(&mock.url()).await;
    let tool_calls = record_tool_calls(&tether, TOOLS_SESSION).await;
    let result = run_browser(&tether).await;
    let expected = mock_upstream::answer(CHUNKS);

    assert!(
        result["before_reload"].as_str().is_some_and(
            |t| t.starts_with("tok0 tok1") && !t.contains(&format!("tok{}", CHUNKS - 1))
        ),
        "part of the answer, not all, was on screen before the reload: {}",
        result["before_reload"]
    );
    assert_eq!(
        result["resumed_while_streaming"], true,
        "after the reload the page picked the answer up while it was still streaming"
    );
    assert_eq!(
        result["chat"]["answers"],
        json!([expected.trim_end()]),
        "the answer on screen is exactly the upstream's text, in one bubble"
    );
    assert_eq!(
        (
            result["chat"]["first_token_count"].as_u64(),
            result["chat"]["last_token_count"].as_u64()
        ),
        (Some(1), Some(1)),
        "the answer's first and last tokens are on the page once each"
    );
    assert_eq!(
        result["chat"]["questions"],
        json!([PROMPT]),
        "once recorded, the question of the resumed turn is shown too"
    );

    let session = result["session"]
        .as_str()
        .expect("the page kept a session id");
    assert!(
        result["console_item"]
            .as_str()
            .is_some_and(|t| t.contains(session) && t.contains("2 messages")),
        "the console lists the session with its message count: {}",
        result["console_item"]
    );
    assert_eq!(
        result["console"]["roles"],
        json!(["user", "assistant"]),
        "the console shows the conversation"
    );
    assert_eq!(
        result["console"]["contents"],
        json!([PROMPT, expected.trim_end()]),
        "the console shows the question and the whole answer"
    );
    assert_eq!(
        result["console"]["models"],
        json!(["gpt-4o-mini", "gpt-4o-mini"]),
        "the console shows the model"
    );
    assert!(
        result["console"]["usage"][0]
            .as_str()
            .is_some_and(|u| u.contains(&format!("{CHUNKS} out"))),
        "the console shows the reply's usage: {}",
        result["console"]["usage"]
    );

    let from_the_page = mock
        .requests()
        .iter()
        .filter(|r| r.headers.get("x-session-id").is_some_and(|v| v == session))
        .count();
    assert_eq!(
        from_the_page, 2,
        "one completion from the page (the reload resumed it, it did not ask again) and the console test's second one"
    );
    let stored = wait_for_messages(&tether, KEY, session, 4).await;
    assert_eq!(
        stored[1]["content"], expected,
        "history holds the whole answer"
    );
    assert_eq!(stored[1]["complete"], true);
    assert_eq!(
        stored[1]["stream_id"], result["resumed_stream"],
        "the page resumed the very stream that history recorded"
    );

    let second = mock_upstream::answer(150);
    assert_eq!(
        result["live"],
        json!({"hidden_after_end": true, "last": second.trim_end(), "client_got": second.trim_end()}),
        "the console followed a second answer live, then showed it recorded"
    );
    assert_eq!(
        result["export"],
        json!({"name": format!("tether-{session}.json"), "messages": 4}),
        "the JSON export downloads the whole session"
    );
    let shown: Vec<Value> = tool_calls
        .iter()
        .map(|call| {
            let arguments = call["function"]["arguments"].as_str().unwrap();
            json!({
                "name": call["function"]["name"],
                "arguments": serde_json::from_str::<Value>(arguments).unwrap(),
            })
        })
        .collect();
    assert_eq!(
        result["tools"],
        json!(shown),
        "the console shows each tool call as a block with its name and arguments"
    );
}
