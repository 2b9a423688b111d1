//! The `tether` binary as an operator runs it: graceful shutdown on SIGTERM,
//! one clear line for a bad configuration, a useful `--help`.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::process::Process;
use common::{MockUpstream, chat_body, client, mock_upstream};

#[tokio::test]
async fn sigterm_lets_an_in_flight_stream_finish_then_exits_0() {
    let mock = MockUpstream::start().await;
    let mut tether = Process::start(&mock.url(), &[]).await;
    let mut response = client()
        .post(tether.url("/v1/chat/completions"))
        .header("x-mock-chunks", "8")
        .header("x-mock-delay-ms", "100")
        .body(chat_body(true))
        .send()
        .await
        .unwrap();
    let mut text = String::from_utf8(response.chunk().await.unwrap().unwrap().to_vec()).unwrap();
    tether.signal(libc::SIGTERM);

    while let Some(bytes) = response
        .chunk()
        .await
        .expect("the stream is not cut by the shutdown")
    {
        text.push_str(std::str::from_utf8(&bytes).unwrap());
    }
    for i in 0..8 {
        assert!(
            text.contains(&mock_upstream::token(i)),
            "chunk {i} arrived after SIGTERM: {text}"
        );
    }
    assert!(text.ends_with("data: [DONE]\n\n"), "the stream completed");
    assert_eq!(
        tether.exit_code(Duration::from_secs(10)).await,
        Some(0),
        "exit status 0 after draining"
    );
}

#[tokio::test]
async fn new_connections_are_refused_while_draining_and_the_grace_period_is_bounded() {
    let mock = MockUpstream::start().await;
    let mut tether =
        Process::start(&mock.url(), &[("TETHER_SERVER__SHUTDOWN_GRACE_SECS", "1")]).await;
    let mut stalled = client()
        .post(tether.url("/v1/chat/completions"))
        .header("x-mock-chunks", "5")
        .header("x-mock-stall-after", "1")
        .body(chat_body(true))
        .send()
        .await
        .unwrap();
    stalled.chunk().await.unwrap().unwrap();
    let signalled = Instant::now();
    tether.signal(libc::SIGTERM);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = std::net::TcpStream::connect(("127.0.0.1", tether.port));
    assert!(
        refused.is_err(),
        "the listener is closed once shutdown starts"
    );
    assert_eq!(tether.exit_code(Duration::from_secs(10)).await, Some(0));
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "a stalled stream cannot hold the exit past the grace period"
    );
}

#[test]
fn a_bad_configuration_stops_the_start_with_one_line_naming_the_key() {
    let output = Command::new(env!("CARGO_BIN_EXE_tether"))
        .env("TETHER_SERVER__MAX_REQUEST_BYTES", "a lot")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("server.max_request_bytes"), "{stderr}");
}

#[tokio::test]
async fn the_healthcheck_subcommand_probes_the_local_listener() {
    let mock = MockUpstream::start().await;
    let tether = Process::start(&mock.url(), &[]).await;
    let listen = format!("127.0.0.1:{}", tether.port);
    let probe = |listen: String| {
        Command::new(env!("CARGO_BIN_EXE_tether"))
            .args(["--listen", &listen, "healthcheck"])
            .output()
            .unwrap()
    };
    assert!(
        probe(listen).status.success(),
        "a running tether is healthy"
    );
    drop(tether);
    let dead = probe(format!("127.0.0.1:{}", free_port()));
    assert_eq!(
        dead.status.code(),
        Some(1),
        "nothing listening is unhealthy"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn help_lists_the_flags_and_the_layering() {
    let output = Command::new(env!("CARGO_BIN_EXE_tether"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for flag in [
        "--config",
        "--listen",
        "--upstream",
        "--redis-url",
        "TETHER_",
        "REDIS_URL",
    ] {
        assert!(help.contains(flag), "--help mentions {flag}:\n{help}");
    }
}

#[tokio::test]
async fn json_logs_have_one_line_per_request_and_never_a_credential() {
    let mock = MockUpstream::start().await;
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut tether = Process::start_logging(
        &mock.url(),
        &[("TETHER_LOG__FORMAT", "json")],
        Stdio::from(log.reopen().unwrap()),
    )
    .await;
    let secret = "sk-test-4f8a1c9e-never-log-me";
    for (header, value) in [
        ("authorization", format!("Bearer {secret}")),
        ("x-api-key", secret.to_string()),
    ] {
        let response = client()
            .post(tether.url("/v1/chat/completions?key=query-secret"))
            .header(header, value)
            .body(chat_body(true))
            .send()
            .await
            .unwrap();
        response.bytes().await.unwrap();
    }
    tether.signal(libc::SIGTERM);
    assert_eq!(tether.exit_code(Duration::from_secs(10)).await, Some(0));

    let text = std::fs::read_to_string(log.path()).unwrap();
    assert!(
        !text.contains(secret),
        "the API key must never be logged:\n{text}"
    );
    assert!(
        !text.contains("query-secret"),
        "query strings are not logged:\n{text}"
    );
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let requests: Vec<_> = lines
        .iter()
        .filter(|l| l["target"] == "tether::access" && l["path"] == "/v1/chat/completions")
        .collect();
    assert_eq!(requests.len(), 2, "one line per request:\n{text}");
    for line in requests {
        assert_eq!(line["method"], "POST");
        assert_eq!(line["status"], 200);
        assert!(
            line["upstream_ms"].is_number() && line["total_ms"].is_number(),
            "{line}"
        );
        assert_eq!(line["end"], "Complete", "{line}");
    }
    assert!(
        lines.iter().any(|l| l["message"] == "tether started"),
        "the start line is logged:\n{text}"
    );
}
