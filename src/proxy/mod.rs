//! Forwarding to the upstream: the request goes out with its body streaming
//! through a size limit, the response comes back with its body streaming to
//! the client frame by frame. Nothing here waits for a whole body.

mod body;
mod client;
mod error;
pub mod headers;
mod pool;
mod upgrade;

use std::error::Error as StdError;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{Extensions, HeaderValue, Request, Response, Uri, Version, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;

pub use body::{IdleTimeout, UpstreamBody};
pub use client::ClientError;
pub use error::ProxyError;
pub use upgrade::{TUNNEL_CLOSE_GRACE, is_upgrade};

use crate::body::Body;
use crate::config::UpstreamSettings;

/// How long the upstream took to send its response headers; put on the
/// response's extensions for the access log.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamTiming(pub Duration);

pub struct Proxy {
    upstream: Upstream,
    /// What goes before a request's path: the upstream URL without its
    /// trailing slash, or only its path for the plain pool, which sends
    /// HTTP/1's origin form.
    prefix: String,
    /// The upstream URL has no path: a request's path and query then go out
    /// as hyper parsed them, rather than written out after `prefix` and
    /// parsed again (2,000 instructions).
    bare_path: bool,
    settings: UpstreamSettings,
    max_request_bytes: u64,
}

/// How requests reach the upstream, with what each way needs of its URL.
enum Upstream {
    /// `http://`: HTTP/1.1 keep-alive connections kept by hand. Its `Host`
    /// is written once, as hyper-util would write it for every request
    /// (800 instructions).
    Plain {
        pool: pool::PlainPool,
        host: Option<HeaderValue>,
    },
    /// `https://`: hyper-util's client, for TLS and HTTP/2 through ALPN
    /// (which names the host in `:authority`, so hyper-util writes it). It
    /// takes absolute URIs: the upstream's scheme and authority.
    Client {
        client: Box<client::UpstreamClient>,
        origin: Option<(Scheme, Authority)>,
    },
}

impl Proxy {
    pub fn new(settings: &UpstreamSettings, max_request_bytes: u64) -> Result<Proxy, ClientError> {
        let base = settings.url.as_str().trim_end_matches('/').to_string();
        let uri = Uri::try_from(base.as_str()).ok();
        let bare_path = uri
            .as_ref()
            .is_some_and(|uri| uri.path() == "/" && uri.query().is_none());
        let plain = uri
            .as_ref()
            .filter(|uri| uri.scheme() == Some(&Scheme::HTTP))
            .and_then(|uri| Some((uri.host()?.to_owned(), uri.port_u16().unwrap_or(80))));
        let (upstream, prefix) = match plain {
            Some((host, port)) => {
                let header = match port {
                    80 => host.clone(),
                    port => format!("{host}:{port}"),
                };
                let pool = pool::PlainPool::new(pool::PoolSettings {
                    // An IPv6 literal without its brackets, for the socket address.
                    host: host
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_owned(),
                    port,
                    connect_timeout: settings.connect_timeout,
                    idle_timeout: settings.pool_idle_timeout,
                    max_idle: settings.pool_max_idle_per_host,
                });
                let path = uri.as_ref().map_or("", |uri| uri.path());
                let upstream = Upstream::Plain {
                    pool,
                    host: HeaderValue::try_from(header).ok(),
                };
                (upstream, path.trim_end_matches('/').to_owned())
            }
            None => {
                let origin = uri
                    .as_ref()
                    .and_then(|uri| Some((uri.scheme()?.clone(), uri.authority()?.clone())));
                let upstream = Upstream::Client {
                    client: Box::new(client::build(settings)?),
                    origin,
                };
                (upstream, base)
            }
        };
        Ok(Proxy {
            upstream,
            prefix,
            bare_path,
            settings: settings.clone(),
            max_request_bytes,
        })
    }

    /// Forwards `req` to the upstream at `path` (the client's path with any
    /// session prefix already removed), keeping the query string. The body
    /// streams through the size limit.
    pub async fn forward(
        &self,
        req: Request<Incoming>,
        path: &str,
        client_ip: IpAddr,
    ) -> Result<Response<Body>, ProxyError> {
        let (parts, body) = req.into_parts();
        self.check_announced_length(&parts.headers)?;
        // A body without Content-Length is counted as it streams.
        let body = Limited::new(body, self.max_request_bytes as usize).boxed_unsync();
        let response = self.send(parts, body, path, client_ip).await?;
        Ok(response.map(BodyExt::boxed_unsync))
    }

    /// Reads a request body whole, up to `server.max_request_bytes`, for the
    /// recorded paths whose body must be parsed before it is forwarded.
    pub async fn read_body(
        &self,
        headers: &http::HeaderMap,
        body: Incoming,
    ) -> Result<Bytes, ProxyError> {
        self.check_announced_length(headers)?;
        match Limited::new(body, self.max_request_bytes as usize)
            .collect()
            .await
        {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
                Err(ProxyError::PayloadTooLarge {
                    limit: self.max_request_bytes,
                })
            }
            Err(e) => Err(ProxyError::ClientBody(e.to_string())),
        }
    }

    fn check_announced_length(&self, headers: &http::HeaderMap) -> Result<(), ProxyError> {
        let limit = self.max_request_bytes;
        match content_length(headers) {
            Some(len) if len > limit => Err(ProxyError::PayloadTooLarge { limit }),
            _ => Ok(()),
        }
    }

    /// Sends a request to the upstream and returns its response with the
    /// header rules applied and the body still streaming.
    pub async fn send(
        &self,
        parts: http::request::Parts,
        body: Body,
        path: &str,
        client_ip: IpAddr,
    ) -> Result<Response<UpstreamBody>, ProxyError> {
        self.send_upgrade(parts, body, path, client_ip, &http::HeaderMap::new())
            .await
    }

    /// [`Proxy::send`], with `upgrade` (the `Upgrade` and `Connection`
    /// headers of a protocol switch) put back after the header rules, and
    /// the upstream's upgrade handle kept on the response.
    async fn send_upgrade(
        &self,
        mut parts: http::request::Parts,
        body: Body,
        path: &str,
        client_ip: IpAddr,
        upgrade: &http::HeaderMap,
    ) -> Result<Response<UpstreamBody>, ProxyError> {
        parts.uri = self.upstream_uri(path, &parts.uri)?;
        parts.version = Version::HTTP_11;
        parts.extensions = Extensions::new();
        headers::to_upstream(&mut parts.headers, client_ip, self.host());
        parts.headers.extend(upgrade.clone());
        let upstream_req = Request::from_parts(parts, body);

        let started = Instant::now();
        let (response, lease) =
            tokio::time::timeout(self.settings.header_timeout, self.request(upstream_req))
                .await
                .map_err(|_| ProxyError::HeaderTimeout(self.settings.header_timeout))??;
        let upstream_time = started.elapsed();

        let (mut parts, body) = response.into_parts();
        let switched = (!upgrade.is_empty()
            && parts.status == http::StatusCode::SWITCHING_PROTOCOLS)
            .then(|| parts.headers.get(header::UPGRADE).cloned())
            .flatten();
        headers::to_client(&mut parts.headers);
        if let Some(protocol) = switched {
            parts.headers.insert(header::UPGRADE, protocol);
            parts.headers.insert(
                header::CONNECTION,
                http::HeaderValue::from_static("upgrade"),
            );
        }
        parts.version = Version::HTTP_11;
        let on_upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
        parts.extensions = Extensions::new();
        parts.extensions.insert(UpstreamTiming(upstream_time));
        if let Some(on_upgrade) = on_upgrade.filter(|_| !upgrade.is_empty()) {
            parts.extensions.insert(on_upgrade);
        }
        let body = UpstreamBody::new(body, self.settings.idle_timeout, lease);
        Ok(Response::from_parts(parts, body))
    }

    /// Sends the request and, from the plain pool, the lease of its
    /// connection.
    async fn request(
        &self,
        req: Request<Body>,
    ) -> Result<(Response<Incoming>, Option<pool::Lease>), ProxyError> {
        match &self.upstream {
            Upstream::Plain { pool, .. } => match pool.send(req).await {
                Ok((response, lease)) => Ok((response, Some(lease))),
                Err(e) => Err(self.classify(&e, matches!(e, pool::PoolError::Connect(_)))),
            },
            Upstream::Client { client, .. } => match client.request(req).await {
                Ok(response) => Ok((response, None)),
                Err(e) => Err(self.classify(&e, e.is_connect())),
            },
        }
    }

    /// The `Host` tether writes itself (see [`Upstream::Plain`]).
    fn host(&self) -> Option<&HeaderValue> {
        match &self.upstream {
            Upstream::Plain { host, .. } => host.as_ref(),
            Upstream::Client { .. } => None,
        }
    }

    /// The scheme and authority an absolute URI starts with, for
    /// hyper-util's client; `None` for the plain pool's origin form.
    fn origin(&self) -> Option<&(Scheme, Authority)> {
        match &self.upstream {
            Upstream::Client { origin, .. } => origin.as_ref(),
            Upstream::Plain { .. } => None,
        }
    }

    /// The upstream's URI for `path` (the client's `original` path, or what
    /// is left of it after a session prefix) and the client's query:
    /// absolute for hyper-util's client, in origin form for the plain pool.
    fn upstream_uri(&self, path: &str, original: &Uri) -> Result<Uri, ProxyError> {
        if self.bare_path
            && original.path() == path
            && let Some(path_and_query) = original.path_and_query()
        {
            let Some((scheme, authority)) = self.origin() else {
                return Ok(Uri::from(path_and_query.clone()));
            };
            let mut parts = http::uri::Parts::default();
            parts.scheme = Some(scheme.clone());
            parts.authority = Some(authority.clone());
            parts.path_and_query = Some(path_and_query.clone());
            return Ok(Uri::from_parts(parts).map_err(http::Error::from)?);
        }
        let query = original.query();
        // Pushed rather than `format!`ed: this runs on every request.
        let mut uri = String::with_capacity(
            self.prefix.len() + path.len() + query.map_or(0, |q| q.len() + 1),
        );
        uri.push_str(&self.prefix);
        uri.push_str(path);
        if let Some(q) = query {
            uri.push('?');
            uri.push_str(q);
        }
        Ok(Uri::try_from(uri).map_err(http::Error::from)?)
    }

    /// Why a request got no response, from either client's error;
    /// `connecting` when it failed before a connection was made.
    fn classify(&self, error: &(dyn StdError + 'static), connecting: bool) -> ProxyError {
        if find_source::<LengthLimitError>(error).is_some() {
            return ProxyError::PayloadTooLarge {
                limit: self.max_request_bytes,
            };
        }
        let detail = chain(error);
        if connecting {
            let timed_out = find_source::<std::io::Error>(error)
                .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut);
            if timed_out {
                return ProxyError::ConnectTimeout(self.settings.connect_timeout);
            }
            return ProxyError::Unreachable(detail);
        }
        ProxyError::UpstreamFailed(detail)
    }
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The first error of type `E` in `error`'s source chain.
fn find_source<'a, E: StdError + 'static>(error: &'a (dyn StdError + 'static)) -> Option<&'a E> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// `error: cause: cause`, for the message a client and the log see.
fn chain(error: &(dyn StdError + 'static)) -> String {
    let mut out = error.to_string();
    let mut current = error.source();
    while let Some(e) = current {
        out.push_str(": ");
        out.push_str(&e.to_string());
        current = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy(url: &str) -> Proxy {
        let settings = UpstreamSettings {
            url: url::Url::parse(url).unwrap(),
            connect_timeout: Duration::from_secs(1),
            header_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            pool_idle_timeout: Duration::from_secs(1),
            pool_max_idle_per_host: 1,
            ca_file: None,
        };
        Proxy::new(&settings, 1024).unwrap()
    }

    #[test]
    fn the_upstream_uri_keeps_the_path_and_query_after_the_base() {
        // In origin form for the plain pool (`http://`), absolute for
        // hyper-util's client (`https://`).
        let cases = [
            // (upstream, client's URI, path left after a session prefix, expected)
            (
                "http://up:8000",
                "/v1/chat/completions",
                "/v1/chat/completions",
                "/v1/chat/completions",
            ),
            (
                "http://up:8000/",
                "/v1/models?limit=2&x=%20y",
                "/v1/models",
                "/v1/models?limit=2&x=%20y",
            ),
            (
                "https://api.example.com",
                "/s/chat-1/v1/responses?a=1",
                "/v1/responses",
                "https://api.example.com/v1/responses?a=1",
            ),
            (
                "http://up/openai",
                "/v1/chat/completions?b",
                "/v1/chat/completions",
                "/openai/v1/chat/completions?b",
            ),
            (
                "http://up/openai/",
                "/s/x/v1/embeddings",
                "/v1/embeddings",
                "/openai/v1/embeddings",
            ),
            (
                "http://[::1]:9",
                "/v1beta/models/gemini-1.5-pro:streamGenerateContent?alt=sse",
                "/v1beta/models/gemini-1.5-pro:streamGenerateContent",
                "/v1beta/models/gemini-1.5-pro:streamGenerateContent?alt=sse",
            ),
        ];
        for (upstream, client, path, expected) in cases {
            let proxy = proxy(upstream);
            let original: Uri = client.parse().unwrap();
            let uri = proxy.upstream_uri(path, &original).unwrap();
            assert_eq!(uri.to_string(), expected, "{upstream} {client}");
        }
        assert!(proxy("http://up:8000").bare_path);
        assert!(!proxy("http://up/openai").bare_path);
        assert!(proxy("https://api.example.com").origin().is_some());
        assert!(proxy("http://up:8000").origin().is_none(), "origin form");
    }

    #[test]
    fn a_plain_http_upstream_gets_its_host_written_once_as_hyper_util_writes_it() {
        let host = |url: &str| proxy(url).host().map(|h| h.to_str().unwrap().to_owned());
        assert_eq!(host("http://up:8000").as_deref(), Some("up:8000"));
        assert_eq!(host("http://up:80/openai").as_deref(), Some("up"));
        assert_eq!(host("http://[::1]:9").as_deref(), Some("[::1]:9"));
        assert_eq!(host("http://127.0.0.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(
            host("https://api.example.com"),
            None,
            "HTTP/2 may be spoken"
        );
    }
}
