//! Where log lines go, and the one line written on every request.
//!
//! Lines collect in memory and go to stderr in blocks (when 64 KiB have
//! gathered, every 100 ms, and at exit), instead of one `write` system call
//! per request on the request path. Warnings and errors are written at once,
//! with everything before them. Colours only on a terminal.
//!
//! Every line but one goes through `tracing`. The access line, one per
//! request, is written here by hand in the same two formats: through
//! tracing-subscriber's formatter it cost about 18,000 instructions per
//! request (each field through `fmt` and a visitor), a fifth of a whole
//! proxied request. It still obeys the level filter of `tether::access`.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::{LogFormat, LogSettings};

/// A log block is written once it reaches this size.
const LOG_BLOCK: usize = 64 * 1024;
/// And at the latest this long after its first line.
const LOG_FLUSH_EVERY: Duration = Duration::from_millis(100);

/// The process's log, once [`init`] has run.
static SINK: OnceLock<Sink> = OnceLock::new();

struct Sink {
    buffer: LogBuffer,
    format: LogFormat,
    ansi: bool,
}

/// Sets up `tracing` for the process and the block writer behind it. The
/// returned guard writes what is still buffered when dropped (at exit).
pub fn init(settings: &LogSettings) -> LogGuard {
    use std::io::IsTerminal;
    let filter = EnvFilter::new(&settings.level);
    let ansi = std::io::stderr().is_terminal();
    let buffer = LogBuffer::default();
    let flusher = buffer.clone();
    // Detached: it only ever flushes, and exit flushes what it has not.
    let _ = std::thread::Builder::new()
        .name("tether-log".into())
        .spawn(move || {
            loop {
                std::thread::sleep(LOG_FLUSH_EVERY);
                flusher.flush();
            }
        });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(buffer.clone());
    match (settings.format, ansi) {
        (LogFormat::Json, _) => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
        // The default field formatter paints every field name (italic, a
        // dimmed `=`) even with colours off: through `fmt` three times per
        // field, and the request span's three fields are formatted on every
        // request. Without colours this writes the same `name=value` text.
        (LogFormat::Text, false) => builder.fmt_fields(plain_fields()).init(),
        (LogFormat::Text, true) => builder.init(),
    }
    let _ = SINK.set(Sink {
        buffer: buffer.clone(),
        format: settings.format,
        ansi,
    });
    LogGuard(buffer)
}

/// `message`, then `name=value` for the other fields, space separated: what
/// tracing-subscriber's default field formatter writes without colours.
fn plain_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + 'static {
    use tracing_subscriber::field::MakeExt;
    tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
        if field.name() == "message" {
            write!(writer, "{value:?}")
        } else {
            write!(
                writer,
                "{}={value:?}",
                field.name().trim_start_matches("r#")
            )
        }
    })
    .delimited(" ")
}

/// Writes the lines still buffered when dropped (at exit).
pub struct LogGuard(LogBuffer);

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.0.flush();
    }
}

/// The fields of an access line.
#[derive(Debug, Clone, Copy)]
pub struct AccessLine<'a> {
    pub request_id: &'a str,
    pub class: &'static str,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub upstream: Option<Duration>,
    pub overhead: Duration,
    pub total: Duration,
    pub bytes: u64,
    pub end: &'static str,
}

/// Writes an access line when `tether::access` is enabled at `info`. Without
/// [`init`] (tether as a library, in tests) the line goes through `tracing`.
pub fn access(line: &AccessLine<'_>) {
    if !tracing::enabled!(target: "tether::access", tracing::Level::INFO) {
        return;
    }
    let Some(sink) = SINK.get() else {
        let millis = |d: Duration| d.as_micros() as f64 / 1e3;
        tracing::info!(
            target: "tether::access",
            request_id = line.request_id,
            class = line.class,
            method = line.method,
            path = line.path,
            status = line.status,
            upstream_ms = line.upstream.map(millis),
            overhead_ms = millis(line.overhead),
            total_ms = millis(line.total),
            bytes = line.bytes,
            end = line.end,
            "request"
        );
        return;
    };
    let now = SystemTime::now();
    sink.buffer.with_lines(|out| match sink.format {
        LogFormat::Text => write_text(out, line, now, sink.ansi),
        LogFormat::Json => write_json(out, line, now),
    });
}

/// As tracing-subscriber's default format writes an event:
/// `{time}  INFO tether::access: request key=value ...`.
fn write_text(out: &mut Vec<u8>, line: &AccessLine<'_>, now: SystemTime, ansi: bool) {
    let time = crate::timestamp::rfc3339_micros(now);
    if ansi {
        let _ = write!(
            out,
            "\x1b[2m{time}\x1b[0m \x1b[32m INFO\x1b[0m \x1b[2mtether::access\x1b[0m\x1b[2m:\x1b[0m request"
        );
    } else {
        let _ = write!(out, "{time}  INFO tether::access: request");
    }
    write_fields(out, line, Fields::Text);
    out.push(b'\n');
}

/// As tracing-subscriber's JSON format with flattened fields writes an
/// event: `timestamp`, `level`, `message`, the fields, `target`.
fn write_json(out: &mut Vec<u8>, line: &AccessLine<'_>, now: SystemTime) {
    let _ = write!(
        out,
        r#"{{"timestamp":"{}","level":"INFO","message":"request""#,
        crate::timestamp::rfc3339_micros(now)
    );
    write_fields(out, line, Fields::Json);
    out.extend_from_slice(b",\"target\":\"tether::access\"}\n");
}

/// How a field is written: ` name=value`, or `,"name":value` with strings
/// quoted and escaped.
#[derive(Clone, Copy)]
enum Fields {
    Text,
    Json,
}

impl Fields {
    fn name(self, out: &mut Vec<u8>, name: &str) {
        let (before, after): (&[u8], &[u8]) = match self {
            Fields::Text => (b" ", b"="),
            Fields::Json => (b",\"", b"\":"),
        };
        out.extend_from_slice(before);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(after);
    }

    fn text(self, out: &mut Vec<u8>, value: &str) {
        match self {
            Fields::Text => out.extend_from_slice(value.as_bytes()),
            Fields::Json => push_json_str(out, value),
        }
    }
}

fn write_fields(out: &mut Vec<u8>, line: &AccessLine<'_>, fields: Fields) {
    for (name, value) in [
        ("request_id", line.request_id),
        ("class", line.class),
        ("method", line.method),
        ("path", line.path),
    ] {
        fields.name(out, name);
        fields.text(out, value);
    }
    fields.name(out, "status");
    push_int(out, line.status as u64);
    let times = [
        ("upstream_ms", line.upstream),
        ("overhead_ms", Some(line.overhead)),
        ("total_ms", Some(line.total)),
    ];
    for (name, time) in times {
        if let Some(time) = time {
            fields.name(out, name);
            push_millis(out, time);
        }
    }
    fields.name(out, "bytes");
    push_int(out, line.bytes);
    fields.name(out, "end");
    fields.text(out, line.end);
}

fn push_int(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Milliseconds with microsecond precision (`12.345`), as log tools read them.
fn push_millis(out: &mut Vec<u8>, d: Duration) {
    let micros = d.as_micros() as u64;
    push_int(out, micros / 1000);
    let frac = micros % 1000;
    out.extend_from_slice(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

fn push_json_str(out: &mut Vec<u8>, s: &str) {
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// The log lines not yet written to stderr.
#[derive(Clone, Default)]
struct LogBuffer {
    lines: Arc<Mutex<Vec<u8>>>,
    /// Held while a block is written, so blocks reach stderr in order.
    writing: Arc<Mutex<()>>,
}

impl LogBuffer {
    fn append(&self, line: &[u8], now: bool) {
        self.with_lines(|lines| lines.extend_from_slice(line));
        if now {
            self.flush();
        }
    }

    /// Lets `write` add to the lines, then writes a full block out.
    fn with_lines(&self, write: impl FnOnce(&mut Vec<u8>)) {
        let full = {
            let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
            write(&mut lines);
            lines.len() >= LOG_BLOCK
        };
        if full {
            self.flush();
        }
    }

    /// Writes out what has gathered.
    fn flush(&self) {
        let _writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        let block = {
            let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
            if lines.is_empty() {
                return;
            }
            std::mem::replace(&mut *lines, Vec::with_capacity(LOG_BLOCK + 4096))
        };
        // Nowhere to report a failed write of the log to.
        let _ = std::io::stderr().lock().write_all(&block);
    }
}

/// One event's writer: the formatter hands it the whole line.
struct LineWriter<'a> {
    buffer: &'a LogBuffer,
    urgent: bool,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buffer.append(data, self.urgent);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogBuffer {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            buffer: self,
            urgent: false,
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        LineWriter {
            buffer: self,
            urgent: *meta.level() <= tracing::Level::WARN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line() -> AccessLine<'static> {
        AccessLine {
            request_id: "req-1",
            class: "recorded",
            method: "POST",
            path: "/v1/chat/completions",
            status: 200,
            upstream: Some(Duration::from_micros(1_234_567)),
            overhead: Duration::from_micros(45),
            total: Duration::from_micros(2_000_001),
            bytes: 300,
            end: "Complete",
        }
    }

    fn at() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_micros(1_765_000_000_123_456)
    }

    #[test]
    fn a_text_line_reads_like_the_other_log_lines() {
        let mut out = Vec::new();
        write_text(&mut out, &line(), at(), false);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2025-12-06T05:46:40.123456Z  INFO tether::access: request request_id=req-1 \
             class=recorded method=POST path=/v1/chat/completions status=200 \
             upstream_ms=1234.567 overhead_ms=0.045 total_ms=2000.001 bytes=300 end=Complete\n"
        );
    }

    #[test]
    fn a_json_line_is_one_object_with_the_fields_at_the_top() {
        let mut out = Vec::new();
        let mut odd = line();
        odd.path = "/v1/\"quoted\"\\path";
        odd.upstream = None;
        write_json(&mut out, &odd, at());
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with('\n') && text.lines().count() == 1, "{text}");
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "timestamp": "2025-12-06T05:46:40.123456Z", "level": "INFO",
                "message": "request", "target": "tether::access",
                "request_id": "req-1", "class": "recorded", "method": "POST",
                "path": "/v1/\"quoted\"\\path", "status": 200,
                "overhead_ms": 0.045, "total_ms": 2000.001, "bytes": 300, "end": "Complete",
            })
        );
    }
}
