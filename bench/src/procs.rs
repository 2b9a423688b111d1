//! Child processes of the benchmark: started on free loopback ports with
//! their output in log files, waited for until they accept connections,
//! killed when dropped; and what `/proc` says about their CPU time and RSS.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A free port on 127.0.0.1 (bound, read, released: a tiny race the OS
/// almost never loses, as its ephemeral ports go round).
pub fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr")
}

/// A running child process, killed (SIGKILL) and reaped on drop.
pub struct Proc {
    pub name: String,
    pub addr: SocketAddr,
    child: std::process::Child,
}

impl Proc {
    /// Start `command` (its output to `logs/<name>.log`) and wait up to 30 s
    /// until `addr` accepts connections.
    pub fn start(
        name: &str,
        mut command: Command,
        addr: SocketAddr,
        logs: &Path,
    ) -> Result<Proc, String> {
        std::fs::create_dir_all(logs).map_err(|e| format!("{}: {e}", logs.display()))?;
        let log_path = logs.join(format!("{name}.log"));
        let log =
            std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        command.stdin(Stdio::null()).stdout(log).stderr(err);
        let child = command
            .spawn()
            .map_err(|e| format!("starting {name} ({:?}): {e}", command.get_program()))?;
        let mut proc = Proc {
            name: name.to_owned(),
            addr,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = proc.child.try_wait() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(format!("{name} exited ({status}) before listening:\n{log}"));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{name} did not listen on {addr} within 30 s (log: {})",
                    log_path.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(proc)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time and RSS of the process now.
    pub fn sample(&self) -> Sample {
        Sample::of(self.pid())
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One reading of `/proc/<pid>`: user+system CPU time and resident memory.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    pub cpu: Duration,
    /// The part of `cpu` spent in the kernel on the process's behalf
    /// (system calls, their wake-ups): instruction counts leave it out.
    pub sys: Duration,
    pub rss_kib: u64,
    /// Context switches of all the process's threads, voluntary or not: each
    /// is a thread parked and woken (a system call, and on a VM often an
    /// inter-processor interrupt), which CPU time per request hides inside.
    pub switches: u64,
}

impl Sample {
    pub fn of(pid: u32) -> Sample {
        let cpu = cpu_time(pid);
        Sample {
            cpu: cpu.map(|(user, sys)| user + sys).unwrap_or_default(),
            sys: cpu.map(|(_, sys)| sys).unwrap_or_default(),
            rss_kib: rss_kib(pid).unwrap_or_default(),
            switches: context_switches(pid).unwrap_or_default(),
        }
    }
}

/// The sum of `voluntary_ctxt_switches` and `nonvoluntary_ctxt_switches`
/// over `/proc/<pid>/task/*/status`.
fn context_switches(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0;
    for task in tasks.flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        total += status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum::<u64>();
    }
    Some(total)
}

/// utime and stime of `/proc/<pid>/stat`, in clock ticks turned into time.
fn cpu_time(pid: u32) -> Option<(Duration, Duration)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after it are plain.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    let user: u64 = fields.get(11)?.parse().ok()?;
    let sys: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let time = |ticks: u64| Duration::from_nanos(ticks * 1_000_000_000 / per_sec);
    Some((time(user), time(sys)))
}

/// VmRSS of `/proc/<pid>/status`, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Raise this process's open-file limit (inherited by the children started
/// after) to `want`, or as far as the hard limit allows; returns the limit.
pub fn raise_nofile(want: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        if limit.rlim_cur >= want {
            return limit.rlim_cur;
        }
        // Root may raise the hard limit too; others get as far as it goes.
        let raised = libc::rlimit {
            rlim_cur: want,
            rlim_max: want.max(limit.rlim_max),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
            limit.rlim_cur = limit.rlim_max.min(want);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur
    }
}

/// The directory the benchmark binaries were built into (beside this one).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent().expect("exe dir").to_path_buf()
}

/// The workspace root (the tether package), known at compile time.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ has a parent")
        .to_path_buf()
}

/// Build tether and the benchmark's helper binaries with the profile this
/// driver was built with (a no-op when they are fresh). Two cargo calls, not
/// one: building both packages together would unify their dependencies'
/// features and compile a third set of every crate.
pub fn build_binaries(with_tether: bool) -> Result<(), String> {
    let cargo = |args: &[&str]| -> Result<(), String> {
        let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cargo
            .current_dir(workspace_root())
            .args(["build", "--quiet"])
            .args(args);
        if !cfg!(debug_assertions) {
            cargo.arg("--release");
        }
        let status = cargo.status().map_err(|e| format!("running cargo: {e}"))?;
        status
            .success()
            .then_some(())
            .ok_or_else(|| format!("cargo build {args:?} failed: {status}"))
    };
    cargo(&["-p", "bench", "--bins"])?;
    if with_tether {
        cargo(&["-p", "tether", "--bin", "tether"])?;
    }
    Ok(())
}
