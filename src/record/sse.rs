//! Incremental Server-Sent-Events parser: fed the (decoded) response body in
//! chunks of any size, it yields whole events with their byte ranges in the
//! stream, following the WHATWG event-stream rules. Pure: no I/O, no clock.

use memchr::{memchr, memchr2};
use std::mem;

/// Most bytes one pending event may span (its comment lines, fields and
/// separators) before the parser gives up.
///
/// The parser holds the event's `data` until its blank line arrives and the
/// stream hub holds the event's raw bytes for its checkpoint; without a cap a
/// broken or hostile upstream that never sends a blank line would make both
/// grow without bound. The largest legitimate events are a Responses API
/// `response.completed` that repeats the whole output (or carries base64
/// images), a few MiB at most, so 16 MiB leaves ample room.
pub const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// The UTF-8 byte order mark, which the spec strips once at stream start.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One dispatched event: it had at least one `data` field and ended with a
/// blank line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field; `None` when absent or empty, which means "message".
    pub event: Option<String>,
    /// The `data` lines joined by `\n` (invalid UTF-8 replaced by U+FFFD).
    pub data: String,
    /// The last event ID seen so far in the stream (the spec keeps it across
    /// events).
    pub id: Option<String>,
    /// Comment lines (`:` keep-alives) since the previous event; they travel
    /// with this event.
    pub comments: usize,
    /// Absolute offset of the event's first byte, comments and a leading BOM
    /// included: the end of the previous event.
    pub start: u64,
    /// Absolute offset just past the blank line that ended the event.
    pub end: u64,
}

impl SseEvent {
    /// The event type as a browser's `EventSource` reports it.
    pub fn name(&self) -> &str {
        self.event.as_deref().unwrap_or("message")
    }

    /// Whether this is the OpenAI-style `data: [DONE]` sentinel.
    pub fn is_done(&self) -> bool {
        self.data == "[DONE]"
    }
}

/// What was left after the last event when the stream ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseTail {
    /// A partial line, or `data` lines without their blank line, were pending:
    /// the spec discards them, and the stream was probably cut short.
    pub unterminated: bool,
    /// Comment lines after the last event.
    pub comments: usize,
    /// Offset where the bytes after the last event begin.
    pub start: u64,
    /// Total bytes fed: the end of the stream.
    pub end: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// The pending event grew past the cap; the parser stays failed.
    #[error("SSE event starting at byte {start} exceeds {limit} bytes")]
    EventTooLarge { start: u64, limit: usize },
}

/// Incremental parser; see the module doc.
#[derive(Debug)]
pub struct SseParser {
    limit: usize,
    /// Bytes of a line whose end has not arrived yet.
    line: Vec<u8>,
    /// Absolute offset of the next input byte.
    offset: u64,
    event_start: u64,
    data: Vec<u8>,
    has_data: bool,
    event: Option<String>,
    last_id: Option<String>,
    comments: usize,
    /// How many bytes of a leading BOM have matched; `None` once decided.
    bom_matched: Option<usize>,
    /// The last chunk ended on a `\r` line end: a `\n` starting the next
    /// chunk belongs to it.
    after_cr: bool,
    /// That `\r` ended a blank line whose dispatch waits until we know the
    /// event's end offset (with or without the `\n`).
    deferred_blank: bool,
    failed: Option<SseError>,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::new()
    }
}

impl SseParser {
    pub fn new() -> Self {
        Self::with_limit(MAX_EVENT_BYTES)
    }

    /// A parser with another cap on a pending event (tests use small ones).
    pub fn with_limit(limit: usize) -> Self {
        SseParser {
            limit,
            line: Vec::new(),
            offset: 0,
            event_start: 0,
            data: Vec::new(),
            has_data: false,
            event: None,
            last_id: None,
            comments: 0,
            bom_matched: Some(0),
            after_cr: false,
            deferred_blank: false,
            failed: None,
        }
    }

    /// Total bytes fed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Feeds one chunk, appending every event it completes to `out`. Events
    /// completed before an error are still appended.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let rest = self.strip_bom(chunk, out)?;
        self.feed(rest, out)
    }

    /// Ends the stream: dispatches an event whose closing `\r` was the last
    /// byte, and reports what was left.
    pub fn finish(&mut self, out: &mut Vec<SseEvent>) -> SseTail {
        if let Some(matched) = self.bom_matched.take() {
            self.line.extend_from_slice(&BOM[..matched]);
            self.offset += matched as u64;
        }
        if mem::take(&mut self.deferred_blank) {
            self.blank_line(out);
        }
        self.after_cr = false;
        SseTail {
            unterminated: !self.line.is_empty() || self.has_data,
            comments: self.comments,
            start: self.event_start,
            end: self.offset,
        }
    }

    /// Consumes a leading BOM, possibly split across chunks; returns the part
    /// of `chunk` still to parse.
    fn strip_bom<'c>(
        &mut self,
        chunk: &'c [u8],
        out: &mut Vec<SseEvent>,
    ) -> Result<&'c [u8], SseError> {
        let Some(mut matched) = self.bom_matched else {
            return Ok(chunk);
        };
        let mut used = 0;
        while matched < BOM.len() && used < chunk.len() && chunk[used] == BOM[matched] {
            matched += 1;
            used += 1;
        }
        if matched == BOM.len() {
            self.bom_matched = None;
            self.offset += BOM.len() as u64;
            return Ok(&chunk[used..]);
        }
        if used == chunk.len() {
            self.bom_matched = Some(matched);
            return Ok(&[]);
        }
        self.bom_matched = None;
        self.feed(&BOM[..matched], out)?;
        Ok(&chunk[used..])
    }

    fn feed(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        let mut pos = 0;
        if self.after_cr && !chunk.is_empty() {
            self.after_cr = false;
            if chunk[0] == b'\n' {
                pos = 1;
                self.offset += 1;
            }
            if mem::take(&mut self.deferred_blank) {
                self.blank_line(out);
            }
        }
        while pos < chunk.len() {
            let Some(found) = memchr2(b'\n', b'\r', &chunk[pos..]) else {
                self.line.extend_from_slice(&chunk[pos..]);
                self.offset += (chunk.len() - pos) as u64;
                break;
            };
            let end = pos + found;
            let mut next = end + 1;
            let cr_at_chunk_end = chunk[end] == b'\r' && next == chunk.len();
            if chunk[end] == b'\r' && chunk.get(next) == Some(&b'\n') {
                next += 1;
            }
            self.offset += (next - pos) as u64;
            self.take_line(&chunk[pos..end], cr_at_chunk_end, out);
            self.check_limit()?;
            pos = next;
        }
        self.check_limit()
    }

    /// Handles one complete line (its end-of-line bytes already counted).
    fn take_line(&mut self, tail: &[u8], cr_at_chunk_end: bool, out: &mut Vec<SseEvent>) {
        self.after_cr = cr_at_chunk_end;
        if self.line.is_empty() {
            if tail.is_empty() {
                self.blank_or_defer(cr_at_chunk_end, out);
            } else {
                self.field_line(tail);
            }
            return;
        }
        let mut line = mem::take(&mut self.line);
        line.extend_from_slice(tail);
        self.field_line(&line);
        line.clear();
        self.line = line;
    }

    fn blank_or_defer(&mut self, cr_at_chunk_end: bool, out: &mut Vec<SseEvent>) {
        if cr_at_chunk_end {
            self.deferred_blank = true;
        } else {
            self.blank_line(out);
        }
    }

    fn field_line(&mut self, line: &[u8]) {
        if line[0] == b':' {
            self.comments += 1;
            return;
        }
        let (field, value) = match memchr(b':', line) {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
            b"id" if memchr(0, value).is_none() => {
                self.last_id = Some(String::from_utf8_lossy(value).into_owned());
            }
            _ => {}
        }
    }

    /// A blank line dispatches the pending event, if it has data, and resets
    /// the event fields either way.
    fn blank_line(&mut self, out: &mut Vec<SseEvent>) {
        let event = self.event.take().filter(|name| !name.is_empty());
        if !mem::take(&mut self.has_data) {
            return;
        }
        let data = mem::take(&mut self.data);
        let data = String::from_utf8(data)
            .unwrap_or_else(|err| String::from_utf8_lossy(err.as_bytes()).into_owned());
        out.push(SseEvent {
            event,
            data,
            id: self.last_id.clone(),
            comments: mem::take(&mut self.comments),
            start: self.event_start,
            end: self.offset,
        });
        self.event_start = self.offset;
    }

    fn check_limit(&mut self) -> Result<(), SseError> {
        if self.offset - self.event_start <= self.limit as u64 {
            return Ok(());
        }
        let err = SseError::EventTooLarge {
            start: self.event_start,
            limit: self.limit,
        };
        self.failed = Some(err.clone());
        Err(err)
    }
}

/// Parses a whole body at once (non-streamed responses, tests).
pub fn parse_all(body: &[u8]) -> Result<(Vec<SseEvent>, SseTail), SseError> {
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    parser.push(body, &mut events)?;
    let tail = parser.finish(&mut events);
    Ok((events, tail))
}

#[cfg(test)]
mod tests;
