//! A real Sentinel-managed Redis on loopback: a password-protected master,
//! its replica and a Sentinel watching them (quorum 1, a master is "down"
//! after 500 ms), started by the test so the master can be killed and the
//! replica promoted while tether runs.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

pub const MASTER_NAME: &str = "mymaster";
pub const PASSWORD: &str = "s3cret/with:odd@chars";

pub struct RedisSentinel {
    dir: tempfile::TempDir,
    pub master_port: u16,
    pub replica_port: u16,
    pub sentinel_port: u16,
    master: Option<Child>,
    replica: Option<Child>,
    sentinel: Option<Child>,
}

/// Runs `redis-cli` against a port (with the data nodes' password unless
/// `auth` is false) and returns stdout.
pub fn cli(port: u16, auth: bool, args: &[&str]) -> Option<String> {
    let mut command = Command::new("redis-cli");
    command.args(["-p", &port.to_string()]);
    if auth {
        command.args(["--no-auth-warning", "-a", PASSWORD]);
    }
    let out = command.args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn wait_until(mut done: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn spawn(args: &[&str]) -> Child {
    Command::new("redis-server")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server must be installed (scripts/test.sh installs it)")
}

/// A data node keeping its files (a replica writes the master's snapshot)
/// under `dir`: in the working directory they would be the repository's,
/// and a later `redis-server` started there (the benchmark's) would load
/// them and, with them, a replication backlog that every write then feeds.
fn data_node(port: u16, replica_of: Option<u16>, dir: &std::path::Path) -> Child {
    let port = port.to_string();
    let dir = dir.join(&port);
    std::fs::create_dir_all(&dir).unwrap();
    let mut args = vec![
        "--dir",
        dir.to_str().unwrap(),
        "--port",
        &port,
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--requirepass",
        PASSWORD,
        "--masterauth",
        PASSWORD,
    ];
    let master = replica_of.map(|p| p.to_string());
    if let Some(master) = &master {
        args.extend(["--replicaof", "127.0.0.1", master]);
    }
    spawn(&args)
}

impl RedisSentinel {
    pub fn start() -> RedisSentinel {
        let dir = tempfile::tempdir().unwrap();
        let (master_port, replica_port, sentinel_port) = (free_port(), free_port(), free_port());
        let master = data_node(master_port, None, dir.path());
        wait_until(
            || cli(master_port, true, &["PING"]).is_some_and(|o| o.trim() == "PONG"),
            "the master answers",
        );
        let replica = data_node(replica_port, Some(master_port), dir.path());
        wait_until(
            || {
                cli(replica_port, true, &["INFO", "replication"])
                    .is_some_and(|i| i.contains("master_link_status:up"))
            },
            "the replica is in sync",
        );
        // The Sentinel rewrites its file, so it gets one of its own.
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {sentinel_port}\nbind 127.0.0.1\ndir {dir}\n\
                 sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 1\n\
                 sentinel auth-pass {MASTER_NAME} {PASSWORD}\n\
                 sentinel down-after-milliseconds {MASTER_NAME} 500\n\
                 sentinel failover-timeout {MASTER_NAME} 3000\n",
                dir = dir.path().display()
            ),
        )
        .unwrap();
        let sentinel = spawn(&[conf.to_str().unwrap(), "--sentinel"]);
        let watched = RedisSentinel {
            dir,
            master_port,
            replica_port,
            sentinel_port,
            master: Some(master),
            replica: Some(replica),
            sentinel: Some(sentinel),
        };
        // A failover needs a replica the Sentinel knows of (it learns them
        // from the master's INFO).
        wait_until(
            || {
                cli(sentinel_port, false, &["SENTINEL", "replicas", MASTER_NAME])
                    .is_some_and(|o| o.contains(&replica_port.to_string()))
            },
            "the Sentinel sees the replica",
        );
        watched
    }

    /// `redis+sentinel://` naming a Sentinel that does not exist first (it
    /// must be skipped), then the real one; db 2 and the master's password.
    pub fn url(&self) -> String {
        let dead = free_port();
        let password: String = url::form_urlencoded::byte_serialize(PASSWORD.as_bytes()).collect();
        format!(
            "redis+sentinel://:{password}@127.0.0.1:{dead},127.0.0.1:{}/{MASTER_NAME}/2",
            self.sentinel_port
        )
    }

    /// The port of the node the Sentinel calls the master now.
    pub fn current_master_port(&self) -> Option<u16> {
        let out = cli(
            self.sentinel_port,
            false,
            &["SENTINEL", "get-master-addr-by-name", MASTER_NAME],
        )?;
        out.lines().nth(1)?.trim().parse().ok()
    }

    /// Waits until every write made so far is on the replica, then kills
    /// the master (SIGKILL) and waits for the Sentinel to promote the replica.
    pub fn fail_over(&mut self) {
        let acked = cli(self.master_port, true, &["WAIT", "1", "5000"]).unwrap_or_default();
        assert_eq!(
            acked.trim(),
            "1",
            "the replica has every write before the kill"
        );
        if let Some(mut master) = self.master.take() {
            let _ = master.kill();
            let _ = master.wait();
        }
        wait_until(
            || self.current_master_port() == Some(self.replica_port),
            "the Sentinel promotes the replica",
        );
        wait_until(
            || {
                cli(self.replica_port, true, &["ROLE"])
                    .is_some_and(|r| r.lines().next() == Some("master"))
            },
            "the replica calls itself master",
        );
    }

    /// `redis-cli` against the node that is master now.
    pub fn master_cli(&self, args: &[&str]) -> Option<String> {
        cli(self.current_master_port()?, true, args)
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        for child in [&mut self.sentinel, &mut self.master, &mut self.replica] {
            if let Some(mut child) = child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = &self.dir;
    }
}
