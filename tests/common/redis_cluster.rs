//! A real Redis Cluster on loopback: three masters with a replica each,
//! started by the test (`redis-server --cluster-enabled yes` and
//! `redis-cli --cluster create`), so a master can be killed and its replica
//! promoted while tether runs.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisCluster {
    dir: tempfile::TempDir,
    nodes: Vec<(u16, Option<Child>)>,
}

/// A port that is free, and whose cluster bus port (+10000) is free too.
fn free_port_pair() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let dir = tempfile::tempdir().unwrap();
        let mut cluster = RedisCluster {
            dir,
            nodes: Vec::new(),
        };
        for _ in 0..6 {
            let port = free_port_pair();
            let child = cluster.spawn(port);
            cluster.nodes.push((port, Some(child)));
        }
        for (port, _) in &cluster.nodes {
            wait_until(
                || cli(*port, &["PING"]).is_some_and(|o| o.trim() == "PONG"),
                "node answers",
            );
        }
        let addresses: Vec<String> = cluster
            .nodes
            .iter()
            .map(|(p, _)| format!("127.0.0.1:{p}"))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .unwrap();
        assert!(
            created.status.success(),
            "cluster create: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        // Right after `create` every node is still a master: wait for the three replicas.
        wait_until(
            || {
                cluster
                    .nodes
                    .iter()
                    .filter(|(p, _)| {
                        cli(*p, &["INFO", "replication"])
                            .is_some_and(|i| i.contains("master_link_status:up"))
                    })
                    .count()
                    == 3
            },
            "three replicas in sync",
        );
        cluster.wait_healthy();
        cluster
    }

    fn spawn(&self, port: u16) -> Child {
        Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
            ])
            .args([
                "--cluster-config-file",
                &format!("nodes-{port}.conf"),
                "--cluster-node-timeout",
                "1000",
            ])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir.path().to_str().unwrap(),
            ])
            // Replicas sync at once, and may take over however long ago they last heard from their master.
            .args([
                "--repl-diskless-sync-delay",
                "0",
                "--cluster-replica-validity-factor",
                "0",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed")
    }

    /// `redis+cluster://` with every node.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|(p, _)| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// Any live node's port.
    pub fn any_port(&self) -> u16 {
        self.nodes.iter().find(|(_, c)| c.is_some()).unwrap().0
    }

    /// Runs `redis-cli -c` (cluster mode) against a live node.
    pub fn cli(&self, args: &[&str]) -> Option<String> {
        let port = self.any_port().to_string();
        let out = Command::new("redis-cli")
            .args(["-c", "-p", &port])
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Waits until every slot is served (`cluster_state:ok` on every live
    /// node) and every replica has synced with its master.
    pub fn wait_healthy(&self) {
        let live = || {
            self.nodes
                .iter()
                .filter(|(_, c)| c.is_some())
                .map(|(p, _)| *p)
        };
        wait_until(
            || {
                live().all(|p| {
                    cli(p, &["CLUSTER", "INFO"]).is_some_and(|i| i.contains("cluster_state:ok"))
                })
            },
            "cluster_state:ok",
        );
        let masters = live()
            .filter(|p| cli(*p, &["ROLE"]).is_some_and(|r| r.starts_with("master")))
            .count();
        let expected_replicas = live().count() - masters.min(3);
        wait_until(
            || {
                live()
                    .filter(|p| {
                        cli(*p, &["INFO", "replication"])
                            .is_some_and(|i| i.contains("master_link_status:up"))
                    })
                    .count()
                    >= expected_replicas
            },
            "replicas in sync",
        );
    }

    /// Kills (SIGKILL) the master serving `key`; returns its port.
    pub fn kill_master_of(&mut self, key: &str) -> u16 {
        let slot: u16 = cli(self.any_port(), &["CLUSTER", "KEYSLOT", key])
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let nodes = cli(self.any_port(), &["CLUSTER", "NODES"]).unwrap();
        let master = nodes
            .lines()
            .find(|line| {
                line.contains("master")
                    && !line.contains("fail")
                    && line.split(' ').skip(8).any(|range| {
                        let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                        matches!((lo.parse::<u16>(), hi.parse::<u16>()), (Ok(lo), Ok(hi)) if lo <= slot && slot <= hi)
                    })
            })
            .expect("a master serves the slot");
        let port: u16 = master
            .split(' ')
            .nth(1)
            .unwrap()
            .split(['@', ':'])
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let node = self.nodes.iter_mut().find(|(p, _)| *p == port).unwrap();
        if let Some(mut child) = node.1.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        port
    }
}

fn cli(port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn wait_until(mut ready: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "redis cluster: {what} not reached within 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.nodes {
            if let Some(mut child) = child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
