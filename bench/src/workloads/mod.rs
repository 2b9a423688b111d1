//! The measured workloads, one file each. Each runs against the subjects of
//! a [`crate::setup::Setup`], pushes its figures into
//! [`crate::report::Results`], and records a failure for every byte
//! mismatch, failed request or lost recording.

pub mod check;
pub mod history;
pub mod non_stream;
pub mod redis_cost;
pub mod resume;
pub mod scale;
pub mod streams;

use std::time::Duration;

use crate::load::StreamShape;

/// How long and how hard each workload runs.
#[derive(Clone, Debug)]
pub struct Plan {
    pub rounds: usize,
    /// Workers of the non-stream and stream runs (the 32).
    pub concurrency: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// One request at a time, per round.
    pub serial_duration: Duration,
    pub stream_workers: usize,
    pub stream_duration: Duration,
    pub stream: StreamShape,
    /// Streams recorded per round whose stored history is read back.
    pub history_sample: usize,
    pub resumes: usize,
    pub resume_stream: StreamShape,
    /// Events read before the connection is dropped.
    pub resume_after: u64,
    /// How long the client is away before it resumes (the events of that
    /// time are the backlog the first replayed byte comes from).
    pub resume_pause: Duration,
    /// Streams followed live at once (on each replica) after `follow_after`
    /// events, to time the longest wait between the events a follower gets.
    pub follows: usize,
    pub follow_stream: StreamShape,
    pub follow_after: u64,
    /// Concurrent long streams whose Redis commands are counted per token.
    pub cost_streams: usize,
    pub cost_stream: StreamShape,
    pub history_duration: Duration,
    /// Earlier turns (question and answer) in each request of the chat run.
    pub chat_turns: usize,
    /// Extra user messages per request in the history run.
    pub history_messages: usize,
    /// Streams of the scale run with HTTP/1.1 clients, then with HTTP/2
    /// clients (`scale::Clients`).
    pub scale: usize,
    pub scale_h2c: usize,
    pub scale_stream: StreamShape,
    /// The scale run's streams open evenly over this time (clients arrive;
    /// a burst of 10,000 connects would measure the listen backlog).
    pub scale_ramp: Duration,
}

impl Plan {
    /// Under a minute, all of it: proves the harness, not the speed.
    pub fn quick(scale: Option<usize>) -> Plan {
        Plan {
            rounds: 1,
            concurrency: 32,
            warmup: Duration::from_millis(200),
            duration: Duration::from_secs(1),
            serial_duration: Duration::from_millis(500),
            stream_workers: 16,
            stream_duration: Duration::from_secs(1),
            stream: StreamShape {
                chunks: 50,
                delay_ms: 2,
            },
            history_sample: 20,
            resumes: 10,
            resume_stream: StreamShape {
                chunks: 100,
                delay_ms: 2,
            },
            resume_after: 20,
            resume_pause: Duration::from_millis(50),
            follows: 8,
            follow_stream: StreamShape {
                chunks: 60,
                delay_ms: 25,
            },
            follow_after: 10,
            cost_streams: 8,
            cost_stream: StreamShape {
                chunks: 200,
                delay_ms: 5,
            },
            history_duration: Duration::from_secs(1),
            history_messages: 48,
            chat_turns: 20,
            scale: scale.unwrap_or(200),
            scale_h2c: scale.unwrap_or(200),
            scale_stream: StreamShape {
                chunks: 10,
                delay_ms: 200,
            },
            scale_ramp: Duration::from_millis(500),
        }
    }

    /// The full run: a few minutes on a quiet machine.
    pub fn full(scale: Option<usize>) -> Plan {
        Plan {
            rounds: 3,
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(5),
            serial_duration: Duration::from_secs(2),
            stream_duration: Duration::from_secs(5),
            history_sample: 200,
            resumes: 50,
            follows: 16,
            history_duration: Duration::from_secs(5),
            cost_streams: 16,
            cost_stream: StreamShape {
                chunks: 1000,
                delay_ms: 10,
            },
            scale: scale.unwrap_or(10_000),
            scale_h2c: scale.unwrap_or(10_000),
            scale_stream: StreamShape {
                chunks: 40,
                delay_ms: 500,
            },
            scale_ramp: Duration::from_secs(5),
            ..Plan::quick(None)
        }
    }
}
