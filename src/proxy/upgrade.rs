//! Protocol upgrades (WebSocket: OpenAI's Realtime API, `GET /v1/realtime`)
//! are tunnelled, not recorded: the client's upgrade request goes to the
//! upstream with its `Upgrade` header, and when the upstream answers
//! `101 Switching Protocols` the two connections are joined byte for byte
//! until either side closes. Anything else the upstream answers (a 401, a
//! 404) goes back to the client as a normal response.

use std::net::IpAddr;
use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::Semaphore;

use super::{Proxy, ProxyError};
use crate::body::Body;

/// True for an HTTP/1.1 request asking to switch protocols: `Connection`
/// names `upgrade` and `Upgrade` names the protocol.
pub fn is_upgrade(req: &Request<Incoming>) -> bool {
    let connection_upgrade = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    connection_upgrade && req.headers().contains_key(header::UPGRADE)
}

impl Proxy {
    /// Forwards an upgrade request and, on `101`, joins the client's
    /// connection to the upstream's in a task of its own. The tunnel holds
    /// one of `connections` (`server.max_connections`) for its life: the
    /// client's connection gives its own back once hyper hands the socket
    /// over, so a tunnel is counted once, and waits for that permit rather
    /// than being refused when the limit is reached.
    pub async fn tunnel(
        &self,
        mut req: Request<Incoming>,
        path: &str,
        client_ip: IpAddr,
        connections: Arc<Semaphore>,
    ) -> Result<Response<Body>, ProxyError> {
        let client_side = hyper::upgrade::on(&mut req);
        let (parts, _) = req.into_parts();
        let protocol = parts.headers.get(header::UPGRADE).cloned();
        // The header rules drop Upgrade and Connection as hop-by-hop; an
        // upgrade is the one exchange that must carry them on.
        let mut upgrade = HeaderMap::new();
        if let Some(protocol) = protocol {
            upgrade.insert(header::UPGRADE, protocol);
            upgrade.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        let empty = Empty::new().map_err(|never| match never {}).boxed_unsync();
        let mut response = self
            .send_upgrade(parts, empty, path, client_ip, &upgrade)
            .await?;
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Ok(response.map(BodyExt::boxed_unsync));
        }
        let upstream_side = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            let (client, upstream) = match tokio::try_join!(client_side, upstream_side) {
                Ok(both) => both,
                Err(e) => {
                    tracing::debug!(error = %e, "upgrade did not complete");
                    return;
                }
            };
            let Ok(_permit) = connections.acquire_owned().await else {
                return;
            };
            let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
            match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                Ok((up, down)) => {
                    tracing::debug!(bytes_up = up, bytes_down = down, "tunnel closed")
                }
                Err(e) => tracing::debug!(error = %e, "tunnel ended with an error"),
            }
        });
        Ok(response.map(BodyExt::boxed_unsync))
    }
}
