//! A private `redis-server` on a free port (never the machine's shared one
//! on 6379), and the few things the driver reads from it through `redis-cli`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::procs::{Proc, free_addr};

pub struct Redis {
    pub proc: Proc,
}

impl Redis {
    /// `redis-server --port P --save "" --appendonly no`, in memory only,
    /// in an empty directory of its own under `logs`: started where a `dump.rdb`
    /// lies (a replica's snapshot, say), it would load it and, with it, a
    /// replication backlog that every write then feeds (a fifth more
    /// instructions a turn: BENCHMARKS.md, the evening of 2026-12-07).
    pub fn start(logs: &Path) -> Result<Redis, String> {
        let addr = free_addr();
        let dir = logs.join("redis-data");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut command = Command::new("redis-server");
        command
            .args(["--bind", "127.0.0.1", "--port", &addr.port().to_string()])
            .args(["--save", "", "--appendonly", "no", "--maxclients", "50000"])
            .arg("--dir")
            .arg(&dir);
        Ok(Redis {
            proc: Proc::start("redis", command, addr, logs)?,
        })
    }

    pub fn url(&self) -> String {
        format!("redis://{}/", self.proc.addr)
    }

    /// Run one command; its reply as text.
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.proc.addr.port().to_string()])
            .args(args)
            .output()
            .map_err(|e| format!("redis-cli: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Calls per command so far (`INFO commandstats`).
    pub fn command_calls(&self) -> BTreeMap<String, u64> {
        let stats = self.cli(&["INFO", "commandstats"]).unwrap_or_default();
        stats
            .lines()
            .filter_map(|l| {
                let name = l.strip_prefix("cmdstat_")?.split(':').next()?.to_owned();
                let calls = l.split("calls=").nth(1)?.split(',').next()?.parse().ok()?;
                Some((name, calls))
            })
            .collect()
    }

    /// Commands spent since `before`, less the driver's own reads.
    pub fn spent_since(&self, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
        const OWN: [&str; 5] = ["info", "memory|usage", "scan", "llen", "command|docs"];
        self.command_calls()
            .into_iter()
            .map(|(name, calls)| {
                let spent = calls - before.get(&name).copied().unwrap_or(0);
                (name, spent)
            })
            .filter(|(name, n)| *n > 0 && !OWN.contains(&name.as_str()))
            .collect()
    }

    /// Up to `count` keys matching `pattern`.
    pub fn keys(&self, pattern: &str, count: usize) -> Vec<String> {
        let reply = self
            .cli(&["--scan", "--pattern", pattern])
            .unwrap_or_default();
        reply.lines().take(count).map(str::to_owned).collect()
    }

    /// `MEMORY USAGE key` and `LLEN key` of a list.
    pub fn list_memory(&self, key: &str) -> Option<(u64, u64)> {
        let bytes = self.cli(&["MEMORY", "USAGE", key, "SAMPLES", "0"]).ok()?;
        let len = self.cli(&["LLEN", key]).ok()?;
        Some((bytes.trim().parse().ok()?, len.trim().parse().ok()?))
    }
}
