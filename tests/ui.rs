//! The console's and the chat page's files over HTTP: public, with a strict
//! Content-Security-Policy, `nosniff`, their content types and ETags; no
//! inline script; the data routes behind them still need the key; a custom
//! prefix is written into the pages; `ui.enabled = false` is a 404.

mod common;

use common::{MockUpstream, Tether, client};

/// Every file the pages load, with its content type.
const FILES: &[(&str, &str)] = &[
    ("/ui", "text/html; charset=utf-8"),
    ("/ui/chat", "text/html; charset=utf-8"),
    ("/ui/console.js", "text/javascript; charset=utf-8"),
    ("/ui/conversation.js", "text/javascript; charset=utf-8"),
    ("/ui/tether.js", "text/javascript; charset=utf-8"),
    ("/ui/md.js", "text/javascript; charset=utf-8"),
    ("/ui/chat.js", "text/javascript; charset=utf-8"),
    ("/ui/console.css", "text/css; charset=utf-8"),
    ("/ui/chat.css", "text/css; charset=utf-8"),
];

#[tokio::test]
async fn the_pages_are_public_static_files_with_a_strict_policy() {
    let mock = MockUpstream::start().await;
    let tether = Tether::start(&mock.url()).await;
    for (path, content_type) in FILES {
        let response = client()
            .get(tether.url(&format!("/tether{path}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path} needs no credential");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        assert_eq!(header("content-type"), *content_type, "{path}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        let csp = header("content-security-policy");
        assert!(
            csp.contains("default-src 'none'")
                && csp.contains("script-src 'self';")
                && csp.contains("connect-src 'self'")
                && !csp.contains("unsafe"),
            "{path}: scripts and fetches from tether only, nothing inline: {csp}"
        );
        assert!(header("etag").starts_with('"'), "{path} has an ETag");
        assert_eq!(header("cache-control"), "no-cache", "{path}");
    }
    assert!(
        mock.requests().is_empty(),
        "the pages never reach the upstream"
    );
}

#[tokio::test]
async fn the_pages_hold_no_inline_script_and_name_the_prefix() {
    let mock = MockUpstream::start().await;
    let tether = Tether::start_with(&mock.url(), |s| s.api.prefix = "/ops/tether".into()).await;
    for page in ["/ops/tether/ui", "/ops/tether/ui/chat"] {
        let html = client()
            .get(tether.url(page))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(
            html.matches("<script").count(),
            html.matches("<script type=\"module\" src=\"/ops/tether/ui/")
                .count(),
            "{page}: every script is a file under the prefix"
        );
        assert!(
            !has_event_handler(&html),
            "{page}: no inline event handlers"
        );
        assert!(
            html.contains(r#"<meta name="tether-prefix" content="/ops/tether">"#),
            "{page} tells its script the prefix"
        );
        assert!(!html.contains("{{"), "{page}: every placeholder filled in");
    }
}

/// An attribute like ` onclick=` anywhere in the page.
fn has_event_handler(html: &str) -> bool {
    html.match_indices(" on").any(|(at, _)| {
        let rest = &html[at + 3..];
        let name_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        name_len > 0 && rest[name_len..].starts_with('=')
    })
}

#[tokio::test]
async fn a_current_copy_is_a_304() {
    let mock = MockUpstream::start().await;
    let tether = Tether::start(&mock.url()).await;
    let url = tether.url("/tether/ui/console.js");
    let first = client().get(&url).send().await.unwrap();
    let etag = first.headers()["etag"].clone();
    let again = client()
        .get(&url)
        .header("if-none-match", etag.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304, "the browser's copy is current");
    assert_eq!(again.headers()["etag"], etag);
    assert!(again.bytes().await.unwrap().is_empty(), "a 304 has no body");
}

#[tokio::test]
async fn the_data_behind_the_pages_still_needs_the_key() {
    let mock = MockUpstream::start().await;
    let tether = Tether::start(&mock.url()).await;
    for path in ["/tether/sessions", "/tether/history/chat-1"] {
        let status = client()
            .get(tether.url(path))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 401, "{path} without a key");
    }
    let status = |path: &'static str| {
        let url = tether.url(path);
        async move { client().get(url).send().await.unwrap().status() }
    };
    assert_eq!(status("/tether/ui/nothing.js").await, 404, "unknown file");
    let post = client()
        .post(tether.url("/tether/ui/chat"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(post, 405, "the pages are read only");
}

#[tokio::test]
async fn ui_enabled_false_is_a_404() {
    let mock = MockUpstream::start().await;
    let tether = Tether::start_with(&mock.url(), |s| s.ui.enabled = false).await;
    for (path, _) in FILES {
        let response = client()
            .get(tether.url(&format!("/tether{path}")))
            .bearer_auth("sk-any")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path} with the console off");
    }
    let anonymous = client()
        .get(tether.url("/tether/ui"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(anonymous, 404, "a 404, not a 401, without a key too");
}
