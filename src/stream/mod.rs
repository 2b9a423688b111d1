//! Streams: the tee on a recorded response body (every frame to the client
//! at once, a clone to the recorder, the upstream read to the end when the
//! client leaves), the hub that keeps a stream's events for resumers, the
//! checkpoint writer that makes them resumable on other replicas, and the
//! replay bodies that serve a resume.

pub mod cancels;
pub mod checkpoint;
pub mod hub;
pub mod replay;
pub mod tee;

pub use hub::{Hub, Registry};
pub use tee::{End, Recording, Tap, TeeBody, collecting_tap, tap};

/// A new stream id: 32 hex digits, safe in keys, URLs and headers.
pub fn new_stream_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
