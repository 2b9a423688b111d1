//! A real `redis-server` started by the test on a free loopback port, so it
//! can be killed and restarted for fault tests. It keeps nothing on disk.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    /// With an append-only file here, data survives a restart.
    persistence: Option<tempfile::TempDir>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = RedisServer {
            port,
            child: None,
            persistence: None,
        };
        server.spawn();
        server
    }

    /// A server that keeps its data across `restart` (AOF, fsync always).
    pub fn start_persistent() -> RedisServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = RedisServer {
            port,
            child: None,
            persistence: Some(tempfile::tempdir().unwrap()),
        };
        server.spawn();
        server
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
