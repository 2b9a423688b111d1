//! tether: a transparent reverse proxy for OpenAI-compatible LLM endpoints that
//! records chat history and makes streamed answers resumable.
//!
//! - [`config`]: settings, layered from defaults, file, environment and flags.
//! - [`server`]: the listener, graceful shutdown, and the one dispatch between
//!   tether's own routes and the proxy.
//! - [`connection`]: one accepted connection: which HTTP it speaks, its graceful end.
//! - [`proxy`]: forwarding to the upstream: client, header rules, body limits, errors.
//! - [`capture`]: requests on recorded paths: read, forward, tee into a recorder.
//! - [`stream`]: the tee on a recorded response body.
//! - [`api`]: tether's own routes: health, sessions, history, metrics.
//! - [`tenant`]: tenants derived from credentials; who may see what.
//! - [`metrics`]: Prometheus counters for what is recorded and what is dropped.
//! - [`store`]: the `Store` trait and its Redis and in-memory implementations.
//! - [`record`]: SSE parsing, content decoding and the per-API assemblers
//!   that rebuild an assistant reply from a stream.
//! - [`session`]: session ids: where they come from and what a valid one is.
//! - [`log`]: where log lines go; the access line written by hand.
//! - [`error`]: OpenAI-shaped JSON error responses, shared by every route.
//! - [`body`]: the response body type every route returns.

pub mod access_log;
pub mod api;
pub mod app;
pub mod body;
pub mod capture;
pub mod config;
pub mod connection;
pub mod error;
pub mod log;
pub mod metrics;
pub mod proxy;
pub mod record;
pub mod server;
pub mod session;
pub mod store;
pub mod stream;
pub mod tenant;
pub mod timestamp;
