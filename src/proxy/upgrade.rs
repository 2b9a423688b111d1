//! Protocol upgrades (WebSocket: OpenAI's Realtime API, `GET /v1/realtime`)
//! are tunnelled, not recorded: the client's upgrade request goes to the
//! upstream with its `Upgrade` header, and when the upstream answers
//! `101 Switching Protocols` the two connections are joined byte for byte
//! until either side closes. Anything else the upstream answers (a 401, a
//! 404) goes back to the client as a normal response.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
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
            join(TokioIo::new(client), TokioIo::new(upstream)).await;
        });
        Ok(response.map(BodyExt::boxed_unsync))
    }
}

/// How long the other side of a tunnel may stay open once one side has
/// closed. A WebSocket's closing handshake takes milliseconds; a peer that
/// vanished without closing (its network gone) would otherwise hold the
/// tunnel, its two sockets and its place of `server.max_connections` for
/// good, as a tunnel has no idle cut-off.
pub const TUNNEL_CLOSE_GRACE: Duration = Duration::from_secs(10);

/// Copies both ways until both sides have closed, each side's close passed
/// on to the other (a write shutdown), the second side at most
/// `TUNNEL_CLOSE_GRACE` after the first; an error on either way ends both.
async fn join<C, U>(client: C, upstream: U)
where
    C: AsyncRead + AsyncWrite,
    U: AsyncRead + AsyncWrite,
{
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut upstream_read, mut upstream_write) = tokio::io::split(upstream);
    let up = async {
        let copied = tokio::io::copy(&mut client_read, &mut upstream_write).await?;
        upstream_write.shutdown().await.map(|()| copied)
    };
    let down = async {
        let copied = tokio::io::copy(&mut upstream_read, &mut client_write).await?;
        client_write.shutdown().await.map(|()| copied)
    };
    tokio::pin!(up, down);
    // The first side's result, then the other side's within the grace
    // (`None`: it stayed open past it).
    let (first, other, end) = tokio::select! {
        done = &mut up => ("client", "upstream", match done {
            Err(e) => Err(e),
            Ok(_) => Ok(tokio::time::timeout(TUNNEL_CLOSE_GRACE, &mut down).await.ok()),
        }),
        done = &mut down => ("upstream", "client", match done {
            Err(e) => Err(e),
            Ok(_) => Ok(tokio::time::timeout(TUNNEL_CLOSE_GRACE, &mut up).await.ok()),
        }),
    };
    match end {
        Err(e) => tracing::debug!(side = first, error = %e, "tunnel ended with an error"),
        Ok(Some(Ok(_))) => tracing::debug!(first, "tunnel closed"),
        Ok(Some(Err(e))) => tracing::debug!(side = other, error = %e, "tunnel ended with an error"),
        Ok(None) => tracing::debug!(
            first,
            grace_secs = TUNNEL_CLOSE_GRACE.as_secs(),
            "tunnel cut: the {other} side stayed open after the {first} side closed"
        ),
    }
}
