//! Header rules between client and upstream: hop-by-hop headers are dropped
//! both ways, `Host` is left to the client library (which sets the upstream's),
//! `X-Forwarded-For`/`-Proto` are added, and SSE responses are marked so that
//! an nginx in front does not buffer them. Everything else passes untouched.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one connection, not the message (RFC 9110 7.6.1),
/// plus the `Proxy-Connection` some old clients still send.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

/// Removes hop-by-hop headers, including any that `Connection` names.
/// `Upgrade` goes too; a protocol switch puts it back (`proxy::upgrade`).
///
/// Runs twice per request: the headers are looked over once, and only those
/// present are removed (a removal hashes its name; ten of them cost more
/// than the rest of the header handling).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let is_hop = |name: &HeaderName| name == header::UPGRADE || HOP_BY_HOP.contains(name);
    if !headers.keys().any(is_hop) {
        return;
    }
    let mut gone: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    gone.extend(headers.keys().filter(|name| is_hop(name)).cloned());
    for name in &gone {
        headers.remove(name);
    }
}

/// Prepares the client's request headers for the upstream: `Host` becomes
/// `host` when given (the upstream's, written once), else is left to the
/// client library.
pub fn to_upstream(headers: &mut HeaderMap, client_ip: IpAddr, host: Option<&HeaderValue>) {
    strip_hop_by_hop(headers);
    match host {
        Some(host) => headers.insert(header::HOST, host.clone()),
        None => headers.remove(header::HOST),
    };
    let forwarded_for = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(earlier) => HeaderValue::try_from(format!("{earlier}, {client_ip}")).ok(),
        None => Some(ip_value(client_ip)),
    };
    if let Some(value) = forwarded_for {
        headers.insert(X_FORWARDED_FOR, value);
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
}

/// `ip` as a header value. A worker thread keeps the last one it wrote: a
/// client's requests come one connection after another from one address,
/// and formatting it (through `fmt`) was a tenth of the header handling.
fn ip_value(ip: IpAddr) -> HeaderValue {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(IpAddr, HeaderValue)>> =
            const { std::cell::RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| match last {
        Some((known, value)) if *known == ip => value.clone(),
        _ => {
            let value = HeaderValue::try_from(ip.to_string())
                .expect("an IP address is a valid header value");
            *last = Some((ip, value.clone()));
            value
        }
    })
}

/// Prepares the upstream's response headers for the client.
pub fn to_client(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    if is_event_stream(headers) {
        headers.insert(X_ACCEL_BUFFERING, HeaderValue::from_static("no"));
    }
}

/// True for `Content-Type: text/event-stream` (any parameters, any case).
pub fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("text/event-stream"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (k, v) in pairs {
            headers.append(*k, HeaderValue::from_static(v));
        }
        headers
    }

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_names_are_dropped() {
        let mut headers = map(&[
            ("connection", "keep-alive, x-private-hop"),
            ("keep-alive", "timeout=5"),
            ("x-private-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic Zm9v"),
            ("authorization", "Bearer sk-kept"),
            ("content-type", "application/json"),
        ]);
        strip_hop_by_hop(&mut headers);
        let left: Vec<_> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(
            left,
            ["authorization", "content-type"],
            "only end-to-end headers stay"
        );
    }

    #[test]
    fn forwarded_headers_are_added_and_appended() {
        let mut headers = map(&[("host", "tether:8080"), ("x-forwarded-for", "203.0.113.7")]);
        to_upstream(&mut headers, "10.0.0.2".parse().unwrap(), None);
        assert_eq!(
            headers.get("host"),
            None,
            "Host is set by the client library for the upstream"
        );
        assert_eq!(headers["x-forwarded-for"], "203.0.113.7, 10.0.0.2");
        assert_eq!(headers["x-forwarded-proto"], "http");
        let mut headers = map(&[("host", "tether:8080")]);
        let upstream = HeaderValue::from_static("up:8000");
        to_upstream(&mut headers, "10.0.0.2".parse().unwrap(), Some(&upstream));
        assert_eq!(headers["host"], "up:8000", "or by tether, the upstream's");
    }

    #[test]
    fn each_request_names_its_own_client_and_plain_headers_are_left_alone() {
        for ip in ["10.0.0.2", "10.0.0.3", "10.0.0.3", "::1", "10.0.0.2"] {
            let mut headers = map(&[("content-type", "application/json"), ("x-custom", "1")]);
            to_upstream(&mut headers, ip.parse().unwrap(), None);
            assert_eq!(headers["x-forwarded-for"], ip);
            assert_eq!(headers.len(), 4, "{headers:?}");
        }
    }

    #[test]
    fn event_streams_are_marked_unbuffered() {
        let mut sse = map(&[("content-type", "Text/Event-Stream; charset=utf-8")]);
        to_client(&mut sse);
        assert_eq!(sse["x-accel-buffering"], "no");
        let mut json = map(&[("content-type", "application/json")]);
        to_client(&mut json);
        assert!(!json.contains_key("x-accel-buffering"));
    }
}
