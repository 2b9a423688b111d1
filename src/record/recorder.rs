//! The recorder: runs beside a recorded response, never on its path. It
//! takes the chunks the tee hands it, decodes them (gzip, br, ...), parses
//! SSE or collects the JSON body, assembles the reply, and appends the turn
//! to history when the response ends.

use std::sync::Arc;
use std::time::SystemTime;

use super::turn::{self, ReplyContext};
use super::{Api, Assembler, Decoder, Encoding, Reply, SseEvent, SseParser, TurnRequest};
use crate::metrics::Metrics;
use crate::session::SessionId;
use crate::store::Store;
use crate::stream::{End, Recording};
use crate::tenant::Tenant;

/// Everything the recorder needs to know about one exchange.
pub struct RecordJob {
    pub tenant: Tenant,
    pub session: SessionId,
    pub request: TurnRequest,
    /// The response is `text/event-stream`.
    pub sse: bool,
    pub encoding: Encoding,
    /// Largest decoded response recorded.
    pub max_bytes: usize,
    pub stream_id: Option<String>,
}

/// The reply as far as it could be rebuilt, and why it is incomplete if it is.
struct Outcome {
    reply: Option<Reply>,
    incomplete: Option<&'static str>,
}

/// Records one exchange; returns once the turn is stored (or dropped and counted).
pub async fn run(
    job: RecordJob,
    mut recording: Recording,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
) {
    let mut fold = Fold::new(&job);
    while let Some(chunk) = recording.next().await {
        fold.push(&chunk);
    }
    let end = recording.end();
    let mut outcome = fold.finish(job.request.api);
    let cut_short = match end {
        End::Complete if recording.lossy() => Some("recorder_behind"),
        End::Complete => None,
        End::UpstreamError => Some("upstream_error"),
        End::ClientGone => Some("client_gone"),
        End::TooLong => Some("max_duration"),
    };
    outcome.incomplete = cut_short.or(outcome.incomplete);
    if let Some(reason) = outcome.incomplete {
        metrics.incomplete(reason);
        tracing::info!(session = %job.session, reason, "reply recorded as incomplete");
    }
    let context = ReplyContext {
        complete: outcome.incomplete.is_none(),
        stream_id: job.stream_id.clone(),
    };
    let session_is_new = match store.session_exists(&job.tenant, &job.session).await {
        Ok(exists) => !exists,
        Err(_) => false,
    };
    let turn = turn::build(
        &job.request,
        outcome.reply.as_ref(),
        session_is_new,
        &context,
        SystemTime::now(),
    );
    match store.append_turn(&job.tenant, &job.session, &turn).await {
        Ok(()) => {
            metrics.history_turns.inc();
            metrics.history_messages.inc_by(turn.messages.len() as u64);
        }
        Err(e) => {
            metrics.history_dropped.inc();
            tracing::warn!(session = %job.session, error = %e, messages = turn.messages.len(), "history write failed; turn dropped");
        }
    }
}

/// Decoding and parsing state, fed chunk by chunk.
struct Fold {
    decoder: Option<Decoder>,
    decoded: Vec<u8>,
    /// SSE: parser and assembler; else the collected JSON body.
    sse: Option<(SseParser, Assembler, Vec<SseEvent>)>,
    body: Vec<u8>,
    max_bytes: usize,
    seen_bytes: usize,
    failure: Option<&'static str>,
}

impl Fold {
    fn new(job: &RecordJob) -> Self {
        let decoder = Decoder::new(job.encoding, job.max_bytes).ok();
        Fold {
            failure: decoder.is_none().then_some("decode"),
            decoder,
            decoded: Vec::new(),
            sse: job.sse.then(|| {
                (
                    SseParser::new(),
                    Assembler::new(Some(job.request.api)),
                    Vec::new(),
                )
            }),
            body: Vec::new(),
            max_bytes: job.max_bytes,
            seen_bytes: 0,
        }
    }

    fn push(&mut self, chunk: &[u8]) {
        if self.failure.is_some() {
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
        self.seen_bytes += self.decoded.len();
        if self.seen_bytes > self.max_bytes {
            self.failure = Some("too_large");
            return;
        }
        self.consume();
    }

    /// Hands the freshly decoded bytes to the parser or the body.
    fn consume(&mut self) {
        match &mut self.sse {
            Some((parser, assembler, events)) => {
                if parser.push(&self.decoded, events).is_err() {
                    self.failure = Some("sse_event_too_large");
                }
                for event in events.drain(..) {
                    assembler.push(&event);
                }
            }
            None => self.body.extend_from_slice(&self.decoded),
        }
    }

    fn finish(mut self, api: Api) -> Outcome {
        if self.failure.is_none()
            && let Some(decoder) = self.decoder.as_mut()
        {
            self.decoded.clear();
            match decoder.finish(&mut self.decoded) {
                Ok(()) => self.consume(),
                Err(_) => self.failure = Some("decode"),
            }
        }
        let reply = match self.sse {
            Some((mut parser, assembler, mut events)) => {
                let tail = parser.finish(&mut events);
                let mut assembler = assembler;
                for event in events.drain(..) {
                    assembler.push(&event);
                }
                assembler.finish(&tail).ok()
            }
            None if self.failure.is_none() => Reply::from_body(Some(api), &self.body).ok(),
            None => None,
        };
        let incomplete = self
            .failure
            .or(reply.is_none().then_some("unparsable_reply"));
        Outcome { reply, incomplete }
    }
}
