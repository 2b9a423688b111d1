//! Recording side of the proxy: turns a response body (compressed or not,
//! streamed or not) into the assembled assistant reply. Everything here is
//! pure and incremental (bytes in, events and replies out, no I/O) except
//! the recorder, the one task that writes what they produce to the store.
//!
//! - [`decode`]: Content-Encoding decoder with an output cap.
//! - [`sse`]: SSE parser that reports each event's byte range.
//! - [`assemble`]: per-API folds from events (or a JSON body) to a [`Reply`].
//! - [`json_text`]: nesting and whitespace of JSON text, read without parsing it.
//! - [`message`]: a conversation message kept as the JSON text it is stored as.
//! - [`request`]: a recorded request's model, session hints and conversation.
//! - [`history_writer`]: the write-behind queue in front of the history store.
//! - [`recorder`]: the task beside a recorded response that stores its turn.
//! - [`turn`]: history de-duplication and the stored message shape.
//! - [`usage`]: `record.include_usage`, the usage chunk asked for and hidden.

pub mod assemble;
pub mod decode;
pub mod history_writer;
pub mod json_scan;
pub mod json_text;
pub mod json_write;
pub mod message;
pub mod recorder;
pub mod request;
pub mod sse;
pub mod turn;
pub mod usage;

pub use assemble::{Api, AssembleError, Assembler, Choice, Reply, SseStats, ToolCall};
pub use decode::{DecodeError, Decoder, Encoding};
pub use message::{Message, Role};
pub use request::{RequestError, TurnRequest};
pub use sse::{SseError, SseEvent, SseParser, SseTail};
