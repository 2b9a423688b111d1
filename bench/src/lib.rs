//! The benchmark harness of tether: one driver that starts a fast mock
//! upstream, `redis-server`, a bare hyper pass-through and tether in separate
//! processes, drives them with a Rust load generator, and prints one table.
//!
//! - [`wire`]: the deterministic bytes every party agrees on (requests,
//!   completions, SSE streams), so every answer can be checked byte for byte.
//! - [`upstream`]: the mock OpenAI-compatible upstream (`bench-upstream`).
//! - [`procs`]: child processes, free ports, and CPU/RSS from `/proc`.
//! - [`redis`]: a private `redis-server` and the few commands the driver reads.
//! - [`load`]: the load generator: keep-alive workers, histograms, stream timing.
//! - [`stats`]: histograms and medians over rounds.
//! - [`setup`]: the targets under test (direct, bare, tether ...), started and stopped.
//! - [`workloads`]: one function per measured workload.
//! - [`report`]: the table on stdout and the JSON file.

pub mod load;
pub mod procs;
pub mod redis;
pub mod report;
pub mod setup;
pub mod stats;
pub mod upstream;
pub mod wire;
pub mod workloads;
