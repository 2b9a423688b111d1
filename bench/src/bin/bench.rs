//! `cargo run --release -p bench -- [--quick] [--scale N] [--json PATH]`:
//! builds tether and the helpers, starts the mock upstream, the bare
//! pass-through, `redis-server` and four tether processes, runs every
//! workload, prints the table, and exits 1 on a byte mismatch, a failed
//! request or a lost recording (never on speed).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use bench::procs;
use bench::report::Results;
use bench::setup::{Options, Setup};
use bench::workloads::scale::{H2C_STREAMS, Through};
use bench::workloads::{self, Plan};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Benchmark tether against direct, a bare hyper pass-through and peers")]
struct Args {
    /// Under a minute, one round, a small scale run: proves the harness
    /// end to end (byte-exact, nothing lost) and asserts nothing about speed.
    #[arg(long)]
    quick: bool,
    /// Rounds (figures are medians over rounds) [default: 3, quick: 1]
    #[arg(long)]
    rounds: Option<usize>,
    /// Concurrent slow streams of the scale run [default: 10000, quick: 200]; 0 skips it
    #[arg(long)]
    scale: Option<usize>,
    /// Workers of the non-stream and stream runs
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// A tether binary to use instead of building one
    #[arg(long, value_name = "PATH")]
    tether: Option<PathBuf>,
    /// Write every figure (per round and median) to this JSON file
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// tether's log.level (info writes one line per request, as deployed)
    #[arg(long, default_value = "info")]
    tether_log: String,
    /// Runtime threads of the mock upstream
    #[arg(long, default_value_t = 2)]
    upstream_threads: usize,
    /// Fixed port of the mock upstream (peers are configured with it)
    #[arg(long)]
    upstream_port: Option<u16>,
    /// Run only these workloads (non-stream, chat, streams, history, cost,
    /// resume, scale); repeatable [default: all]
    #[arg(long, value_name = "WORKLOAD", value_parser = ["non-stream", "chat", "streams", "history", "cost", "resume", "scale"])]
    only: Vec<String>,
    /// A peer gateway already running, NAME=http://127.0.0.1:PORT
    /// (bench/peers/run.sh starts LiteLLM and Portkey); repeatable
    #[arg(long, value_name = "NAME=URL", value_parser = parse_peer)]
    peer: Vec<(String, String)>,
}

fn parse_peer(s: &str) -> Result<(String, String), String> {
    let (name, url) = s.split_once('=').ok_or("expected NAME=URL")?;
    Ok((name.to_owned(), url.to_owned()))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut plan = if args.quick {
        Plan::quick(args.scale)
    } else {
        Plan::full(args.scale)
    };
    plan.rounds = args.rounds.unwrap_or(plan.rounds);
    plan.concurrency = args.concurrency;
    // The scale run with HTTP/1.1 clients holds N client sockets here, N
    // upstream sockets in the mock and 2N in tether (plus a few dozen of its
    // own); with HTTP/2 clients, tether holds N plus one a connection.
    // Children inherit this process's limit.
    const SPARE: usize = 128;
    let wanted = (2 * plan.scale + SPARE) as u64;
    let limit = procs::raise_nofile(wanted) as usize;
    let room = limit.saturating_sub(SPARE);
    if room < 2 * plan.scale {
        let fit = room / 2;
        eprintln!(
            "open-file limit {limit} < {wanted}: scale run cut to {fit} streams with HTTP/1.1 clients"
        );
        plan.scale = fit;
    }
    let h2c_fit = room * H2C_STREAMS / (H2C_STREAMS + 1);
    if h2c_fit < plan.scale_h2c {
        eprintln!(
            "open-file limit {limit}: scale run with HTTP/2 clients cut to {h2c_fit} streams"
        );
        plan.scale_h2c = h2c_fit;
    }
    if let Err(e) = procs::build_binaries(args.tether.is_none()) {
        eprintln!("bench: {e}");
        return ExitCode::from(2);
    }
    let options = Options {
        logs: procs::workspace_root().join("target").join("bench-logs"),
        bin_dir: procs::bin_dir(),
        tether: args
            .tether
            .clone()
            .unwrap_or_else(|| procs::bin_dir().join("tether")),
        upstream_port: args.upstream_port,
        upstream_threads: args.upstream_threads,
        stream_defaults: plan.stream,
        tether_log: args.tether_log.clone(),
        max_connections: plan.scale.max(plan.scale_h2c) + 1024,
        peers: args.peer.clone(),
    };
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let started = Instant::now();
    let results = match runtime.block_on(run(&options, &plan, &args.only)) {
        Ok(results) => results,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::from(2);
        }
    };
    let mode = if args.quick {
        "quick (numbers not meaningful)"
    } else {
        "full"
    };
    let header = format!(
        "tether benchmark, {mode}: {}\n{} rounds; concurrency {}; {}s per round; streams of {} chunks every {} ms; tether log.level={}; took {:.0}s",
        machine(),
        plan.rounds,
        plan.concurrency,
        plan.duration.as_secs_f64(),
        plan.stream.chunks,
        plan.stream.delay_ms,
        options.tether_log,
        started.elapsed().as_secs_f64(),
    );
    println!("{}", results.table(&header));
    for note in &results.notes {
        println!("note: {note}");
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&results.json()).expect("json");
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("bench: writing {}: {e}", path.display());
        }
    }
    if results.failures.is_empty() {
        println!("\nall streams byte-exact, every recording written: OK");
        ExitCode::SUCCESS
    } else {
        println!("\n{} FAILURES:", results.failures.len());
        for failure in &results.failures {
            println!("  {failure}");
        }
        ExitCode::FAILURE
    }
}

async fn run(options: &Options, plan: &Plan, only: &[String]) -> Result<Results, String> {
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    let mut setup = Setup::start(options)?;
    let subjects = setup.subjects();
    let mut results = Results {
        subjects: subjects
            .iter()
            .map(|s| (s.name().to_owned(), s.kind))
            .collect(),
        ..Results::default()
    };
    for round in 0..plan.rounds {
        eprintln!("round {}/{}", round + 1, plan.rounds);
        if wanted("non-stream") {
            workloads::non_stream::round(&subjects, plan, round, &mut results).await;
        }
        if wanted("chat") {
            workloads::non_stream::chat_round(&subjects, plan, round, &mut results).await;
        }
        if wanted("streams") {
            workloads::streams::round(&setup, &subjects, plan, round, &mut results).await;
        }
        if wanted("history") {
            workloads::history::run(&setup, plan, round, &mut results).await;
        }
        setup.check_alive()?;
    }
    if wanted("cost") {
        let (n, tokens) = (plan.cost_streams, plan.cost_stream.chunks);
        eprintln!("redis cost: {n} streams of {tokens} tokens");
        workloads::redis_cost::run(&setup, plan, &mut results).await;
    }
    if wanted("resume") {
        eprintln!("resume: {} streams per replica", plan.resumes);
        workloads::resume::run(&setup, plan, &mut results).await;
    }
    if plan.scale > 0 && wanted("scale") {
        let n = plan.scale;
        eprintln!("scale: {n} concurrent streams, a connection each, direct");
        workloads::scale::run(&setup, plan, n, Through::Direct, &mut results).await;
        eprintln!("scale: {n} concurrent streams, a connection each, through bare");
        workloads::scale::run(&setup, plan, n, Through::Bare, &mut results).await;
        eprintln!("scale: {n} concurrent streams, a connection each, through tether");
        workloads::scale::run(&setup, plan, n, Through::Tether, &mut results).await;
        let n = plan.scale_h2c;
        eprintln!("scale: {n} concurrent streams, {H2C_STREAMS} an HTTP/2 connection");
        workloads::scale::run(&setup, plan, n, Through::TetherH2c, &mut results).await;
    }
    setup.check_alive()?;
    Ok(results)
}

/// CPU model, cores and kernel, for the table's header.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split(':').nth(1))
        .unwrap_or("unknown CPU")
        .trim()
        .to_owned();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{model}, {cores} cores, Linux {}", kernel.trim())
}
