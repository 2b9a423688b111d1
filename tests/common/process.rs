//! The `tether` binary in a process of its own, for what only a process
//! shows: signals, exit codes, its log, and a replica that can be killed.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::client;

pub struct Process {
    child: Child,
    pub port: u16,
}

impl Process {
    /// Starts the binary on a free port and waits until healthz answers.
    pub async fn start(upstream: &str, env: &[(&str, &str)]) -> Process {
        Self::start_logging(upstream, env, Stdio::null()).await
    }

    /// Like [`Process::start`], with the log (stderr) sent to `log`.
    pub async fn start_logging(upstream: &str, env: &[(&str, &str)], log: Stdio) -> Process {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_tether"))
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--upstream",
                upstream,
            ])
            .envs(env.iter().copied())
            .env_remove("REDIS_URL")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let process = Process { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(r) = client().get(process.url("/tether/healthz")).send().await
                && r.status() == 200
            {
                return process;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("tether did not become healthy");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn signal(&self, signal: libc::c_int) {
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill({signal}) failed");
    }

    /// Waits for exit, up to `limit`.
    pub async fn exit_code(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("tether did not exit within {limit:?}");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
