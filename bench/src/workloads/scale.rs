//! Scale: N concurrent slow streams through tether on Redis, opened evenly
//! over a ramp, all recorded and byte-exact. Reported: the proxy's RSS per
//! active stream (RSS while all N are open, less RSS before, over N), the
//! p99 gap added to the upstream's nominal interval, TTFT p50 and p99, and
//! CPU per chunk; the same through the bare pass-through, in the same run,
//! for the floor.
//!
//! Clients come each on an HTTP/1.1 connection of its own, as SDKs do, or
//! [`H2C_STREAMS`] to an HTTP/2 connection, as from an ingress or a gateway
//! that speaks HTTP/2 to its backends. tether opens an upstream connection
//! per stream either way, so HTTP/1.1 clients cost it two sockets a stream
//! and HTTP/2 clients one: where the open-file limit cannot be raised past
//! 20,000, only HTTP/2 clients reach 10,000 streams.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::OnceCell;

use crate::load::{Conn, StreamRun, Target, one_stream};
use crate::procs::{Proc, Sample};
use crate::report::Results;
use crate::setup::Setup;
use crate::wire;
use crate::workloads::{Plan, check};

/// Streams an HTTP/2 client connection carries (tether's HTTP/2 server
/// takes 200 at once).
pub const H2C_STREAMS: usize = 100;

/// What a scale run goes through, and how its clients connect.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Through {
    /// No proxy, HTTP/1.1 clients: the first run of the machine's first
    /// 10,000 connections pays for setting up what the later runs reuse
    /// (whichever proxy ran first had a TTFT p50 of 170 to 350 ms and a
    /// p99 of 5 s, the next one 2 and 73 ms), so this one goes first.
    Direct,
    /// The bare pass-through, HTTP/1.1 clients: the floor for the others.
    Bare,
    /// tether recording into Redis, HTTP/1.1 clients.
    Tether,
    /// The same with HTTP/2 clients, through the second replica, whose heap
    /// never held the HTTP/1.1 run's streams: a process that had would
    /// reuse that memory, and its RSS would not grow by what the new
    /// streams take.
    TetherH2c,
}

/// The names a run's figures are pushed under.
struct Figures {
    name: &'static str,
    streams: &'static str,
    rss_kib_per_stream: &'static str,
    gap_p99_added_ms: &'static str,
    ttft_p50_ms: &'static str,
    ttft_p99_ms: &'static str,
    cpu_us_per_chunk: &'static str,
    recorded: &'static str,
}

/// A run's figures, each named `{key}_{figure}`.
macro_rules! figures {
    ($name:literal, $key:literal) => {
        Figures {
            name: $name,
            streams: concat!($key, "_streams"),
            rss_kib_per_stream: concat!($key, "_rss_kib_per_stream"),
            gap_p99_added_ms: concat!($key, "_gap_p99_added_ms"),
            ttft_p50_ms: concat!($key, "_ttft_p50_ms"),
            ttft_p99_ms: concat!($key, "_ttft_p99_ms"),
            cpu_us_per_chunk: concat!($key, "_cpu_us_per_chunk"),
            recorded: concat!($key, "_recorded"),
        }
    };
}

impl Through {
    fn figures(self) -> Figures {
        match self {
            Through::Direct => figures!("scale-direct", "scale_direct"),
            Through::Bare => figures!("scale-bare", "scale_bare"),
            Through::Tether => figures!("scale", "scale"),
            Through::TetherH2c => figures!("scale-h2c", "scale_h2c"),
        }
    }

    fn process(self, setup: &Setup) -> &Proc {
        match self {
            Through::Direct => &setup.upstream,
            Through::Bare => &setup.bare,
            Through::Tether => &setup.tether_redis,
            Through::TetherH2c => &setup.tether_redis_b,
        }
    }
}

pub async fn run(setup: &Setup, plan: &Plan, n: usize, through: Through, results: &mut Results) {
    let figures = through.figures();
    let prefix = figures.name;
    let process = through.process(setup);
    let target = Arc::new(Target {
        name: process.name.clone(),
        addr: process.addr,
        headers: vec![],
        byte_exact: true,
    });
    let shape = plan.scale_stream;
    // tether's counters, to check that every stream was recorded.
    let before = if matches!(through, Through::Direct | Through::Bare) {
        None
    } else {
        match check::counters(&target).await {
            Ok(counters) => Some(counters),
            Err(e) => {
                results.fail(format!("{}: no metrics: {e}", process.name));
                return;
            }
        }
    };
    let idle = Sample::of(process.pid());
    let started = Arc::new(AtomicUsize::new(0));
    let expected = Bytes::from(wire::stream_bytes(shape.chunks, 0));
    let ramp = plan.scale_ramp;
    // Each HTTP/2 connection is opened by the first of its streams.
    let shared: Arc<Vec<OnceCell<Conn>>> = Arc::new(
        (0..n.div_ceil(H2C_STREAMS))
            .map(|_| OnceCell::new())
            .collect(),
    );
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (target, started, expected) = (target.clone(), started.clone(), expected.clone());
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut run = StreamRun::default();
                tokio::time::sleep(ramp * i as u32 / n as u32).await;
                let session = format!("{prefix}-{i}");
                let result = async {
                    let mut conn = match through {
                        Through::Direct | Through::Bare | Through::Tether => {
                            Conn::open(target).await?
                        }
                        Through::TetherH2c => shared[i / H2C_STREAMS]
                            .get_or_try_init(|| Conn::open_h2c(target))
                            .await?
                            .another_stream()
                            .ok_or("an HTTP/1.1 connection where HTTP/2 was asked")?,
                    };
                    let req = conn.chat(
                        &session,
                        wire::chat_request(true, 0),
                        Some((shape.chunks, shape.delay_ms)),
                    );
                    started.fetch_add(1, Ordering::Relaxed);
                    one_stream(&mut conn, req, shape, &mut run).await
                }
                .await;
                match result {
                    Ok((bytes, id)) if bytes == expected => {
                        run.ok = 1;
                        run.chunks = shape.chunks;
                        run.recorded.extend(id.map(|id| (session, id)));
                    }
                    Ok(_) => run.mismatched = 1,
                    Err(e) => {
                        run.failed = 1;
                        run.first_error = Some(e);
                    }
                }
                run
            })
        })
        .collect();
    // The plateau: from the last stream's start (the ramp's end) to the
    // first one's end; tether's RSS is sampled through it.
    let life = Duration::from_millis(shape.chunks * shape.delay_ms);
    let start = Instant::now();
    while started.load(Ordering::Relaxed) < n && start.elapsed() < ramp + life / 2 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut peak = Sample::of(process.pid());
    while start.elapsed() + Duration::from_millis(300) < life {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = Sample::of(process.pid());
        peak.rss_kib = peak.rss_kib.max(now.rss_kib);
    }
    let mut total = StreamRun::default();
    let mut errors = Vec::new();
    for task in tasks {
        let run = task.await.expect("stream task panicked");
        total.ok += run.ok;
        total.failed += run.failed;
        total.mismatched += run.mismatched;
        total.chunks += run.chunks;
        total.ttft.merge(&run.ttft);
        total.gap.merge(&run.gap);
        total.recorded.extend(run.recorded);
        errors.extend(run.first_error);
    }
    let end = Sample::of(process.pid());
    let cpu_us = (end.cpu - idle.cpu).as_secs_f64() * 1e6;
    results.push_global(figures.streams, n as f64);
    results.push_global(
        figures.rss_kib_per_stream,
        peak.rss_kib.saturating_sub(idle.rss_kib) as f64 / n as f64,
    );
    results.push_global(
        figures.gap_p99_added_ms,
        total.gap.quantile_us(0.99) / 1000.0 - shape.delay_ms as f64,
    );
    results.push_global(figures.ttft_p50_ms, total.ttft.quantile_us(0.5) / 1000.0);
    results.push_global(figures.ttft_p99_ms, total.ttft.quantile_us(0.99) / 1000.0);
    results.push_global(
        figures.cpu_us_per_chunk,
        cpu_us / total.chunks.max(1) as f64,
    );
    if total.failed > 0 || total.mismatched > 0 {
        results.fail(format!(
            "{prefix}: {} of {n} streams failed, {} not byte-exact (first error: {})",
            total.failed,
            total.mismatched,
            errors.first().map_or("-", String::as_str)
        ));
    }
    let Some(before) = before else {
        return;
    };
    if total.recorded.len() as u64 != total.ok {
        results.fail(format!(
            "{prefix}: {} streams without X-Stream-Id",
            total.ok - total.recorded.len() as u64
        ));
    }
    match check::drained(&target, before, total.ok, Duration::from_secs(60)).await {
        Ok(_) => {
            if let Err(e) = check::streams_recorded(
                &target,
                &total.recorded,
                shape.chunks,
                1,
                plan.history_sample,
            )
            .await
            {
                results.fail(e);
            } else {
                results.push_global(figures.recorded, total.recorded.len() as f64);
            }
        }
        Err(e) => results.fail(e),
    }
}
