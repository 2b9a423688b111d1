//! tether itself, in-process: the real server on a `127.0.0.1:0` listener
//! with a shutdown handle, configured through the same `RawSettings` the
//! binary layers.

use std::net::SocketAddr;
use std::sync::Arc;

use tether::app::App;
use tether::config::RawSettings;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub struct Tether {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Tether {
    /// tether in front of `upstream`, with the in-memory store.
    pub async fn start(upstream: &str) -> Tether {
        Self::start_with(upstream, |_| {}).await
    }

    /// tether in front of `upstream`, after `tweak` has adjusted the settings.
    pub async fn start_with(upstream: &str, tweak: impl FnOnce(&mut RawSettings)) -> Tether {
        // `TETHER_TEST_LOG=tether=debug cargo test ...` shows tether's log.
        if let Ok(filter) = std::env::var("TETHER_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
        let mut raw = RawSettings::default();
        raw.upstream.url = upstream.to_string();
        raw.server.listen = "127.0.0.1:0".into();
        tweak(&mut raw);
        let settings = raw.validate().expect("test settings are valid");
        let listener = TcpListener::bind(settings.server.listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = App::build(settings).await.expect("tether starts");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(tether::server::run(listener, app.clone(), async {
            let _ = rx.await;
        }));
        Tether {
            addr,
            app,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops accepting and waits for the server to drain and return.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

/// tether on the embedded store, then on a real Redis of its own (kept
/// alive beside it), both configured by `tweak`: tests that must hold on
/// both stores loop over them.
pub async fn both_stores(
    upstream: &str,
    tweak: impl Fn(&mut RawSettings),
) -> Vec<(Tether, Option<super::RedisServer>)> {
    let memory = Tether::start_with(upstream, &tweak).await;
    let redis = super::RedisServer::start();
    let url = redis.url();
    let on_redis = Tether::start_with(upstream, |s| {
        tweak(s);
        s.redis.url = url;
    })
    .await;
    vec![(memory, None), (on_redis, Some(redis))]
}

impl Drop for Tether {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}
