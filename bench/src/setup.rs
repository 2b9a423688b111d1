//! The subjects under test, each a separate process on a free loopback port:
//! the mock upstream (reached directly: "direct"), the bare pass-through,
//! tether with recording off, on with Redis (two replicas sharing one
//! private `redis-server`), and on with the in-memory store; plus peers
//! (LiteLLM, Portkey) the user started, by URL.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use crate::load::{StreamShape, Target};
use crate::procs::{Proc, free_addr};
use crate::redis::Redis;

/// How to start the processes.
pub struct Options {
    pub logs: PathBuf,
    pub bin_dir: PathBuf,
    pub tether: PathBuf,
    /// Fixed upstream port (peers are configured with it), else a free one.
    pub upstream_port: Option<u16>,
    pub upstream_threads: usize,
    /// The streams the upstream sends when a request does not say (peers
    /// do not forward the benchmark's `x-bench-*` headers).
    pub stream_defaults: StreamShape,
    /// tether's `log.level` (`info` logs a line per request, as deployed).
    pub tether_log: String,
    /// tether's `server.max_connections` (the scale run needs more than 10,000).
    pub max_connections: usize,
    /// `NAME=URL` of peers already running.
    pub peers: Vec<(String, String)>,
}

/// Which kind of subject a target is; the report reads ratios by kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Direct,
    Bare,
    TetherOff,
    TetherRedis,
    TetherMemory,
    Peer,
}

/// A target and the process whose CPU and memory it costs (none for
/// direct, which is the upstream itself, or for peers).
#[derive(Clone)]
pub struct Subject {
    pub kind: Kind,
    pub target: Arc<Target>,
    pub pid: Option<u32>,
    /// The store process it writes to (`redis-server` for tether on Redis).
    pub store_pid: Option<u32>,
}

impl Subject {
    pub fn name(&self) -> &str {
        &self.target.name
    }

    pub fn is_tether(&self) -> bool {
        matches!(
            self.kind,
            Kind::TetherOff | Kind::TetherRedis | Kind::TetherMemory
        )
    }

    pub fn records(&self) -> bool {
        matches!(self.kind, Kind::TetherRedis | Kind::TetherMemory)
    }
}

pub struct Setup {
    pub upstream: Proc,
    pub bare: Proc,
    pub redis: Redis,
    pub tether_off: Proc,
    pub tether_redis: Proc,
    /// A second replica on the same Redis, for resume across replicas.
    pub tether_redis_b: Proc,
    pub tether_memory: Proc,
    pub peers: Vec<Subject>,
}

impl Setup {
    pub fn start(o: &Options) -> Result<Setup, String> {
        let up_addr = match o.upstream_port {
            Some(port) => SocketAddr::from(([127, 0, 0, 1], port)),
            None => free_addr(),
        };
        let mut up = Command::new(o.bin_dir.join("bench-upstream"));
        up.args([
            "--listen",
            &up_addr.to_string(),
            "--threads",
            &o.upstream_threads.to_string(),
        ]);
        let upstream = Proc::start("upstream", up, up_addr, &o.logs)?;
        let up_url = format!("http://{up_addr}");

        let bare_addr = free_addr();
        let mut bare = Command::new(o.bin_dir.join("bench-passthrough"));
        bare.args(["--listen", &bare_addr.to_string(), "--upstream", &up_url]);
        let bare = Proc::start("passthrough", bare, bare_addr, &o.logs)?;

        let redis = Redis::start(&o.logs)?;
        let tether = |name: &str, redis_url: Option<&str>, record: bool| -> Result<Proc, String> {
            let addr = free_addr();
            let mut cmd = Command::new(&o.tether);
            cmd.current_dir(&o.logs)
                .args(["--listen", &addr.to_string(), "--upstream", &up_url]);
            if let Some(url) = redis_url {
                cmd.args(["--redis-url", url]);
            }
            // Nothing from the caller's environment may pick another store.
            for (key, _) in std::env::vars() {
                if key.starts_with("TETHER_")
                    || key.starts_with("REDIS_")
                    || key == "CHAT_HISTORY_TTL"
                {
                    cmd.env_remove(key);
                }
            }
            cmd.env("TETHER_RECORD__ENABLED", record.to_string())
                .env("TETHER_LOG__LEVEL", &o.tether_log)
                .env(
                    "TETHER_SERVER__MAX_CONNECTIONS",
                    o.max_connections.to_string(),
                );
            Proc::start(name, cmd, addr, &o.logs)
        };
        let redis_url = redis.url();
        let tether_off = tether("tether-off", None, false)?;
        let tether_redis = tether("tether-redis", Some(&redis_url), true)?;
        let tether_redis_b = tether("tether-redis-b", Some(&redis_url), true)?;
        let tether_memory = tether("tether-mem", None, true)?;
        let peers = o
            .peers
            .iter()
            .map(|(name, url)| peer(name, url, &up_url))
            .collect::<Result<_, _>>()?;
        Ok(Setup {
            upstream,
            bare,
            redis,
            tether_off,
            tether_redis,
            tether_redis_b,
            tether_memory,
            peers,
        })
    }

    /// Every subject, in the order of the table.
    pub fn subjects(&self) -> Vec<Subject> {
        let local = |kind, name: &str, proc: &Proc, pid: bool| Subject {
            kind,
            target: Arc::new(Target {
                name: name.into(),
                addr: proc.addr,
                headers: vec![],
                byte_exact: true,
            }),
            pid: pid.then(|| proc.pid()),
            store_pid: (kind == Kind::TetherRedis).then(|| self.redis.proc.pid()),
        };
        let mut all = vec![
            local(Kind::Direct, "direct", &self.upstream, false),
            local(Kind::Bare, "bare", &self.bare, true),
            local(Kind::TetherOff, "tether-off", &self.tether_off, true),
            local(Kind::TetherRedis, "tether-redis", &self.tether_redis, true),
            local(Kind::TetherMemory, "tether-mem", &self.tether_memory, true),
        ];
        all.extend(self.peers.iter().cloned());
        all
    }

    /// The processes that must stay up for the run to mean anything.
    pub fn check_alive(&mut self) -> Result<(), String> {
        for p in [
            &mut self.upstream,
            &mut self.bare,
            &mut self.tether_off,
            &mut self.tether_redis,
            &mut self.tether_redis_b,
            &mut self.tether_memory,
        ] {
            if !p.alive() {
                return Err(format!("{} died (see its log)", p.name));
            }
        }
        Ok(())
    }
}

/// A peer gateway started by the user (`bench/peers/run.sh`), at `url`.
/// Portkey is told where the upstream is by headers; LiteLLM by its config.
fn peer(name: &str, url: &str, upstream_url: &str) -> Result<Subject, String> {
    let addr: SocketAddr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .map_err(|_| format!("--peer {name}={url}: expected http://127.0.0.1:PORT"))?;
    let headers = if name.starts_with("portkey") {
        vec![
            ("x-portkey-provider".into(), "openai".into()),
            ("x-portkey-custom-host".into(), format!("{upstream_url}/v1")),
        ]
    } else {
        vec![]
    };
    let target = Target {
        name: name.into(),
        addr,
        headers,
        byte_exact: false,
    };
    Ok(Subject {
        kind: Kind::Peer,
        target: Arc::new(target),
        pid: None,
        store_pid: None,
    })
}
