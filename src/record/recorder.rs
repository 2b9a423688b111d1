//! The recorder: runs beside a recorded response, never on its path. It
//! takes the chunks the tee hands it, decodes them (gzip, br, ...), splits
//! an SSE body into its events (each handed, numbered and byte for byte, to
//! the stream's hub and checkpoint writer), assembles the reply, and appends
//! the turn to history when the response ends.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};

use super::history_writer::{HistoryWriter, PendingTurn};
use super::turn::{self, ReplyContext};
use super::{Api, Assembler, Decoder, Encoding, Reply, SseEvent, SseParser, TurnRequest};
use crate::metrics::Metrics;
use crate::session::SessionId;
use crate::store::StreamState;
use crate::stream::{End, Hub, Recording};
use crate::tenant::Tenant;

/// Everything the recorder needs to know about one exchange.
pub struct RecordJob {
    pub tenant: Tenant,
    pub session: SessionId,
    pub request: TurnRequest,
    /// The response is `text/event-stream`.
    pub sse: bool,
    pub encoding: Encoding,
    /// Largest decoded response assembled into the reply.
    pub max_bytes: usize,
    /// Where a resumable stream's events go.
    pub stream: Option<StreamSink>,
    /// Told when the turn is stored, for callers that answer only then.
    pub done: Option<tokio::sync::oneshot::Sender<bool>>,
}

/// A resumable stream's hub: followers on this replica read it, and its
/// checkpoint writer copies it for the others.
pub struct StreamSink {
    pub hub: Arc<Hub>,
    /// The usage chunk was asked for by tether (`record.include_usage`):
    /// followers must not see it, as the client did not.
    pub hide_usage: bool,
}

/// Records one exchange; returns once the turn is queued for the history writer.
pub async fn run(
    mut job: RecordJob,
    mut recording: Recording,
    history: Arc<HistoryWriter>,
    metrics: Arc<Metrics>,
) {
    let mut fold = Fold::new(&job);
    if job.stream.is_some() {
        metrics.active_streams.inc();
    }
    while let Some(chunk) = recording.next().await {
        metrics.recorded_bytes.inc_by(chunk.len() as u64);
        fold.push(&chunk, job.stream.as_mut());
    }
    if recording.too_large() {
        fold.give_up_too_large();
    }
    let end = recording.end();
    let lossy = recording.lossy();
    let (reply, tail, failure) = fold.finish(job.request.api, job.stream.as_mut());
    let stream_id = job.stream.as_ref().map(|s| s.hub.id.clone());
    if let Some(sink) = job.stream.take() {
        metrics.active_streams.dec();
        let state = stream_state(end, lossy);
        sink.hub.finish(state, tail);
    }
    let incomplete = match end {
        End::Complete if lossy => Some("recorder_behind"),
        End::Complete => None,
        End::UpstreamError => Some("upstream_error"),
        End::ClientGone => Some("client_gone"),
        End::TooLong => Some("max_duration"),
        End::Cancelled => Some("cancelled"),
    }
    .or(failure)
    .or(reply.is_none().then_some("unparsable_reply"));
    if let Some(reason) = incomplete {
        metrics.incomplete(reason);
        tracing::info!(session = %job.session, reason, "reply recorded as incomplete");
    }
    let context = ReplyContext {
        complete: incomplete.is_none(),
        stream_id,
    };
    // Built here, beside the response, so that the history writer tasks
    // only write; the messages move into the turn.
    let mut turn = turn::build(job.request, reply, context, SystemTime::now());
    turn.id = crate::server::new_id();
    history.submit(PendingTurn {
        tenant: job.tenant,
        session: job.session,
        turn,
        done: job.done,
    });
}

/// The state a stream ends in. A recorder that fell behind holds a
/// consistent prefix (the tee stops offering at the first lost chunk), so
/// its stream ends `interrupted` rather than garbled.
fn stream_state(end: End, lossy: bool) -> StreamState {
    match end {
        End::Complete if !lossy => StreamState::Done,
        End::Complete | End::UpstreamError | End::TooLong => StreamState::Interrupted,
        End::ClientGone | End::Cancelled => StreamState::Cancelled,
    }
}

/// Decoding, event splitting and assembling state, fed chunk by chunk.
struct Fold {
    decoder: Option<Decoder>,
    decoded: Vec<u8>,
    /// SSE: the parser, the events it just found, and the bytes not yet
    /// assigned to an event (starting at stream offset `consumed`).
    sse: Option<(SseParser, Vec<SseEvent>)>,
    pending: BytesMut,
    consumed: u64,
    /// Folds events (SSE) or collects the body (JSON) until `max_bytes`.
    assembler: Option<Assembler>,
    /// False once past `max_bytes`: the assembler keeps what it has.
    assembling: bool,
    body: Vec<u8>,
    max_bytes: usize,
    seen_bytes: usize,
    failure: Option<&'static str>,
}

impl Fold {
    fn new(job: &RecordJob) -> Self {
        let decoder = Decoder::new(job.encoding, job.max_bytes.max(1)).ok();
        Fold {
            failure: decoder.is_none().then_some("decode"),
            decoder,
            decoded: Vec::new(),
            sse: job.sse.then(|| (SseParser::new(), Vec::new())),
            pending: BytesMut::new(),
            consumed: 0,
            assembler: job.sse.then(|| Assembler::new(Some(job.request.api))),
            assembling: true,
            body: Vec::new(),
            max_bytes: job.max_bytes,
            seen_bytes: 0,
        }
    }

    fn push(&mut self, chunk: &[u8], sink: Option<&mut StreamSink>) {
        if self.failure == Some("decode") || self.failure == Some("sse_event_too_large") {
            return;
        }
        let Some(decoder) = self.decoder.as_mut() else {
            return;
        };
        self.decoded.clear();
        if decoder.push(chunk, &mut self.decoded).is_err() {
            self.failure = Some("decode");
            return;
        }
        self.consume(sink);
    }

    /// The reply is assembled no further: a stream's reply keeps what came
    /// before the limit (its events still go to the hub), a whole body is
    /// let go and its reply stored empty.
    fn give_up_too_large(&mut self) {
        if self.failure.is_none() {
            self.failure = Some("too_large");
            self.assembling = false;
            self.body = Vec::new();
        }
    }

    /// Hands the freshly decoded bytes to the parser (and the events on to
    /// the hub and the assembler) or to the collected body.
    fn consume(&mut self, sink: Option<&mut StreamSink>) {
        self.seen_bytes += self.decoded.len();
        if self.seen_bytes > self.max_bytes {
            self.give_up_too_large();
        }
        let Some((parser, events)) = &mut self.sse else {
            if self.failure.is_none() {
                self.body.extend_from_slice(&self.decoded);
            }
            return;
        };
        if parser.push(&self.decoded, events).is_err() {
            self.failure = Some("sse_event_too_large");
            return;
        }
        self.pending.extend_from_slice(&self.decoded);
        let mut sink = sink;
        for event in events.drain(..) {
            let len = (event.end - self.consumed) as usize;
            let raw = self.pending.split_to(len.min(self.pending.len())).freeze();
            self.consumed = event.end;
            if let Some(assembler) = self.assembler.as_mut().filter(|_| self.assembling) {
                assembler.push(&event);
            }
            if let Some(sink) = sink.as_deref_mut()
                && !(sink.hide_usage && super::usage::is_usage_chunk(&event.data))
            {
                sink.hub.push(raw);
            }
        }
    }

    /// The reply, the trailing bytes after the last event, and why the
    /// reply is incomplete if it is.
    fn finish(
        mut self,
        api: Api,
        sink: Option<&mut StreamSink>,
    ) -> (Option<Reply>, Option<Bytes>, Option<&'static str>) {
        if self.failure.is_none_or(|f| f == "too_large")
            && let Some(decoder) = self.decoder.as_mut()
        {
            self.decoded.clear();
            match decoder.finish(&mut self.decoded) {
                Ok(()) => self.consume(sink),
                Err(_) => self.failure = Some("decode"),
            }
        }
        let tail = (!self.pending.is_empty()).then(|| self.pending.split().freeze());
        let reply = match (self.sse, self.assembler) {
            (Some((mut parser, mut events)), Some(assembler)) if !self.assembling => {
                assembler.finish(&parser.finish(&mut events)).ok()
            }
            (Some((mut parser, mut events)), Some(mut assembler)) => {
                let sse_tail = parser.finish(&mut events);
                for event in events.drain(..) {
                    assembler.push(&event);
                }
                assembler.finish(&sse_tail).ok()
            }
            (None, _) if self.failure.is_none() => Reply::from_body(Some(api), &self.body).ok(),
            (None, _) if self.failure == Some("too_large") => Some(Reply::new(api)),
            _ => None,
        };
        (reply, tail, self.failure)
    }
}
