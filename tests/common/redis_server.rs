//! A real `redis-server` started by the test on a free loopback port, so it
//! can be killed and restarted for fault tests. It keeps nothing on disk.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One command's counts in `INFO commandstats`: `calls` counts those
/// carried out (`failed_calls` of them answered an error), and
/// `rejected_calls` those refused before they ran.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CommandStats {
    pub calls: u64,
    pub failed_calls: u64,
    pub rejected_calls: u64,
}

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    /// With an append-only file here, data survives a restart.
    persistence: Option<tempfile::TempDir>,
    /// Cluster mode, its node file here: one node that owns every slot.
    cluster: Option<tempfile::TempDir>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_on_free_port(None, None)
    }

    /// One cluster-mode node that owns all 16,384 slots, reached at one
    /// address as a plain server: what a sharding proxy in front of a
    /// cluster looks like to a client (every key is served, but a script's
    /// keys must share a slot).
    pub fn start_single_node_cluster() -> RedisServer {
        let server = Self::start_on_free_port(None, Some(tempfile::tempdir().unwrap()));
        assert!(
            server
                .cli(&["CLUSTER", "ADDSLOTSRANGE", "0", "16383"])
                .is_some_and(|out| out.trim() == "OK")
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while !server
            .cli(&["CLUSTER", "INFO"])
            .is_some_and(|info| info.contains("cluster_state:ok"))
        {
            assert!(Instant::now() < deadline, "the one-node cluster is not ok");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// A server that keeps its data across `restart` (AOF, fsync always).
    pub fn start_persistent() -> RedisServer {
        Self::start_on_free_port(Some(tempfile::tempdir().unwrap()), None)
    }

    fn start_on_free_port(
        persistence: Option<tempfile::TempDir>,
        cluster: Option<tempfile::TempDir>,
    ) -> RedisServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = RedisServer {
            port,
            child: None,
            persistence,
            cluster,
        };
        server.spawn();
        server
    }

    /// tether's store on this server, as `connect` makes it (a 60 s TTL).
    pub async fn store(&self) -> std::sync::Arc<dyn tether::store::Store> {
        self.stores().await.history
    }

    /// The same with its checkpoint store.
    pub async fn stores(&self) -> tether::store::Stores {
        use tether::store::{MemoryBudget, Retention, connect};
        let settings = tether::config::StoreSettings::Redis {
            url: self.url(),
            connect_timeout: Duration::from_secs(1),
            command_timeout: Duration::from_secs(2),
            ca_file: None,
        };
        let retention = Retention {
            history_ttl: Duration::from_secs(60),
        };
        let memory = MemoryBudget {
            max_bytes: usize::MAX,
            evicted: Default::default(),
        };
        connect(&settings, retention, memory).await.unwrap()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn spawn(&mut self) {
        let mut command = Command::new("redis-server");
        command.args([
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            // Stall tests use DEBUG SLEEP (refused unless enabled).
            "--enable-debug-command",
            "local",
        ]);
        match &self.persistence {
            Some(dir) => command.args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                dir.path().to_str().unwrap(),
            ]),
            None => command.args(["--appendonly", "no"]),
        };
        if let Some(dir) = &self.cluster {
            command.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                dir.path().join("nodes.conf").to_str().unwrap(),
            ]);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.ping() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "redis-server on port {} did not answer within 10 s",
            self.port
        );
    }

    /// True when the server answers PING.
    pub fn ping(&self) -> bool {
        self.cli(&["PING"]).is_some_and(|out| out.trim() == "PONG")
    }

    /// `INFO commandstats` by command name (lower case, `cmdstat_` left off).
    pub fn command_stats(&self) -> std::collections::BTreeMap<String, CommandStats> {
        let stats = self.cli(&["INFO", "commandstats"]).unwrap();
        stats
            .lines()
            .filter_map(|line| {
                let (name, fields) = line.strip_prefix("cmdstat_")?.split_once(':')?;
                let field = |key: &str| -> u64 {
                    fields
                        .split(',')
                        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                        .map_or(0, |n| n.trim().parse().unwrap())
                };
                let stats = CommandStats {
                    calls: field("calls"),
                    failed_calls: field("failed_calls"),
                    rejected_calls: field("rejected_calls"),
                };
                Some((name.to_owned(), stats))
            })
            .collect()
    }

    /// Runs `redis-cli` against this server and returns its stdout.
    pub fn cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Freezes the server for `secs` (DEBUG SLEEP, from another thread):
    /// commands sent meanwhile wait, and are carried out when it wakes.
    /// Join the handle to check that it really froze.
    pub fn freeze(&self, secs: f64) -> Freeze {
        let port = self.port.to_string();
        Freeze(std::thread::spawn(move || {
            let out = Command::new("redis-cli")
                .args(["-p", &port, "DEBUG", "SLEEP", &secs.to_string()])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        }))
    }

    /// Kills the server (SIGKILL) and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

/// A freeze under way.
pub struct Freeze(std::thread::JoinHandle<String>);

impl Freeze {
    /// Waits for the server to wake and asserts that it had frozen.
    pub fn join(self) {
        assert_eq!(self.0.join().unwrap(), "OK", "Redis really froze");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
