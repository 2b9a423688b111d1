//! `bench-passthrough --listen ADDR --upstream http://HOST:PORT`: the smallest
//! correct streaming reverse proxy on hyper 1 + hyper-util. No parsing, no
//! recording: every request goes to the upstream with the same method, path,
//! headers and streaming body; the response streams back frame by frame. It
//! is the lower bound for anything built on hyper, so every tether figure is
//! read as a ratio to it.

use std::convert::Infallible;

use clap::Parser;
use http::{HeaderValue, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty, combinators::BoxBody};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

type Upstream = Client<HttpConnector, Incoming>;
type Body = BoxBody<Bytes, hyper::Error>;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    listen: String,
    /// http://host:port of the upstream
    #[arg(long)]
    upstream: String,
}

async fn forward(
    mut req: Request<Incoming>,
    client: Upstream,
    authority: HeaderValue,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let uri = format!("http://{}{path}", authority.to_str().unwrap_or_default());
    *req.uri_mut() = uri.parse::<Uri>().expect("a valid upstream uri");
    // Hop-by-hop headers are the connection's, not the message's.
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::TE,
    ] {
        req.headers_mut().remove(name);
    }
    req.headers_mut().insert(header::HOST, authority);
    Ok(match client.request(req).await {
        Ok(response) => response.map(BodyExt::boxed),
        Err(_) => {
            let body = Empty::new().map_err(|never| match never {}).boxed();
            Response::builder()
                .status(StatusCode::BAD_GATEWAY)
                .body(body)
                .unwrap()
        }
    })
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let upstream: Uri = args
        .upstream
        .parse()
        .expect("--upstream is http://host:port");
    let authority =
        HeaderValue::from_str(upstream.authority().expect("host:port").as_str()).unwrap();
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Upstream = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build(connector);
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let (client, authority) = (client.clone(), authority.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| forward(req, client.clone(), authority.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}
