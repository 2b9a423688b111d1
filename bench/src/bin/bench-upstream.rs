//! `bench-upstream --listen 127.0.0.1:PORT [--chunks N] [--delay-ms D]`: the
//! mock OpenAI-compatible upstream of the benchmark (see `bench::upstream`).

use clap::Parser;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Chunks of a streamed answer when the request has no x-bench-chunks
    #[arg(long, default_value_t = 50)]
    chunks: u64,
    /// Milliseconds between chunks when the request has no x-bench-delay-ms
    #[arg(long, default_value_t = 2)]
    delay_ms: u64,
    /// Runtime worker threads
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&args.listen).await?;
        println!("listening on {}", listener.local_addr()?);
        let defaults = bench::upstream::Defaults {
            chunks: args.chunks,
            delay_ms: args.delay_ms,
        };
        bench::upstream::run(listener, defaults).await
    })
}
