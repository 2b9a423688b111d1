//! `rediss://`: tether records into a Redis that speaks only TLS on the port
//! it is given, with a certificate a private CA signed and trusted through
//! `redis.ca_file`; without that CA the server is not trusted and tether
//! says so on /readyz while forwarding goes on.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::history::{KEY, wait_for_messages};
use common::streams::start_stream;
use common::{MockUpstream, Tether, client, free_port};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

/// A redis-server with TLS on `tls_port` (and plain on `port`, for the
/// test's own checks), its certificate for `localhost` signed by a new CA.
struct TlsRedis {
    dir: tempfile::TempDir,
    port: u16,
    tls_port: u16,
    child: Child,
}

impl TlsRedis {
    fn start() -> TlsRedis {
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let write = |name: &str, pem: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).unwrap();
            path.to_str().unwrap().to_owned()
        };
        let (ca_path, cert_path, key_path) = (
            write("ca.pem", ca.pem()),
            write("redis.pem", cert.pem()),
            write("redis.key", key.serialize_pem()),
        );
        let (port, tls_port) = (free_port(), free_port());
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--port", &port.to_string()])
            .args(["--tls-port", &tls_port.to_string()])
            .args(["--tls-cert-file", &cert_path, "--tls-key-file", &key_path])
            .args(["--tls-ca-cert-file", &ca_path, "--tls-auth-clients", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test.sh installs it)");
        let redis = TlsRedis {
            dir,
            port,
            tls_port,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while redis.cli(&["PING"]).trim() != "PONG" {
            assert!(
                Instant::now() < deadline,
                "redis-server with TLS did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    fn ca_file(&self) -> String {
        self.dir.path().join("ca.pem").to_str().unwrap().to_owned()
    }

    fn url(&self) -> String {
        format!("rediss://localhost:{}/0", self.tls_port)
    }

    /// `redis-cli` over the plain port.
    fn cli(&self, args: &[&str]) -> String {
        Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn readyz(tether: &Tether) -> u16 {
    client()
        .get(tether.url("/tether/readyz"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn history_goes_over_tls_to_a_redis_whose_ca_is_configured() {
    let redis = TlsRedis::start();
    let mock = MockUpstream::start().await;
    let (url, ca) = (redis.url(), redis.ca_file());
    let tether = Tether::start_with(&mock.url(), move |s| {
        s.redis.url = url;
        s.redis.ca_file = ca;
    })
    .await;
    assert_eq!(readyz(&tether).await, 200, "the TLS connection is up");

    start_stream(&tether.url(""), "over-tls", 4, 0)
        .await
        .bytes()
        .await
        .unwrap();
    wait_for_messages(&tether, KEY, "over-tls", 2).await;
    let keys = redis.cli(&["--scan", "--pattern", "tether:*over-tls*"]);
    assert!(
        keys.contains("over-tls"),
        "the turn is in the TLS Redis: {keys:?}"
    );
    let clients = redis.cli(&["CLIENT", "LIST"]);
    assert!(
        clients.contains(&format!("laddr=127.0.0.1:{}", redis.tls_port)),
        "tether is connected to the TLS port: {clients}"
    );
}

#[tokio::test]
async fn a_tls_redis_signed_by_an_unknown_ca_is_not_trusted() {
    let redis = TlsRedis::start();
    let mock = MockUpstream::start().await;
    let url = redis.url();
    let tether = Tether::start_with(&mock.url(), move |s| {
        s.redis.url = url;
        s.redis.connect_timeout_ms = 500;
        s.redis.command_timeout_ms = 500;
    })
    .await;
    assert_eq!(
        readyz(&tether).await,
        503,
        "the public roots do not sign this server"
    );
    let response = start_stream(&tether.url(""), "untrusted", 3, 0).await;
    assert_eq!(response.status(), 200, "forwarding goes on");
    response.bytes().await.unwrap();
    assert_eq!(redis.cli(&["DBSIZE"]).trim(), "0", "nothing written");
}
