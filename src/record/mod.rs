//! Recording side of the proxy: turns a response body (compressed or not,
//! streamed or not) into the assembled assistant reply. Everything here is
//! pure and incremental: bytes in, events and replies out, no I/O.
//!
//! - [`decode`]: Content-Encoding decoder with an output cap.
//! - [`sse`]: SSE parser that reports each event's byte range.
//! - [`assemble`]: per-API folds from events (or a JSON body) to a [`Reply`].

pub mod assemble;
pub mod decode;
pub mod sse;

pub use assemble::{Api, AssembleError, Assembler, Choice, Reply, SseStats, ToolCall};
pub use decode::{DecodeError, Decoder, Encoding};
pub use sse::{SseError, SseEvent, SseParser, SseTail};
