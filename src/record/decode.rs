//! Incremental Content-Encoding decoder for the recording side: the client
//! gets the upstream's compressed bytes untouched, while the recorder feeds
//! the same chunks through this to get the SSE text. The total output is
//! capped so that a decompression bomb fails instead of filling memory.

use std::io::{self, Write};

use brotli_decompressor::DecompressorWriter;
use flate2::write::{DeflateDecoder, MultiGzDecoder, ZlibDecoder};

/// Size of brotli's internal output buffer; output is handed on per buffer.
const BROTLI_BUFFER: usize = 16 * 1024;

/// A `Content-Encoding` the decoder understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    /// zlib-wrapped deflate as RFC 9110 says, or raw deflate as some servers
    /// send and every browser accepts: told apart by the first two bytes.
    Deflate,
    Brotli,
    Zstd,
}

impl Encoding {
    /// Reads a `Content-Encoding` header value (absent means identity).
    /// Stacked codings such as `gzip, br` are not supported: no LLM provider
    /// sends them.
    pub fn from_header(value: Option<&str>) -> Result<Self, DecodeError> {
        let unsupported = || DecodeError::Unsupported(value.unwrap_or_default().to_owned());
        let mut codings = value
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case("identity"));
        let Some(coding) = codings.next() else {
            return Ok(Encoding::Identity);
        };
        if codings.next().is_some() {
            return Err(unsupported());
        }
        match coding.to_ascii_lowercase().as_str() {
            "gzip" | "x-gzip" => Ok(Encoding::Gzip),
            "deflate" => Ok(Encoding::Deflate),
            "br" => Ok(Encoding::Brotli),
            "zstd" => Ok(Encoding::Zstd),
            _ => Err(unsupported()),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Gzip => "gzip",
            Encoding::Deflate => "deflate",
            Encoding::Brotli => "br",
            Encoding::Zstd => "zstd",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unsupported content encoding {0:?}")]
    Unsupported(String),
    #[error("decoded body exceeds {limit} bytes")]
    TooLarge { limit: usize },
    #[error("corrupt {encoding} data: {reason}")]
    Corrupt {
        encoding: &'static str,
        reason: String,
    },
    #[error("{encoding} data ended before the compressed stream did")]
    Truncated { encoding: &'static str },
    #[error("decoder used after it finished or failed")]
    Closed,
}

/// Collects a stage's output and enforces the cap.
#[derive(Debug)]
struct Sink {
    buf: Vec<u8>,
    written: usize,
    limit: usize,
    over: bool,
}

impl Write for Sink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.written.saturating_add(data.len()) > self.limit {
            self.over = true;
            return Err(io::Error::other("decoded output over the limit"));
        }
        self.written += data.len();
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A write-side decompressor writing into a [`Sink`].
trait Stage: Write + Send {
    fn sink(&mut self) -> &mut Sink;
    /// Checks that the compressed stream ended properly.
    fn end(&mut self) -> io::Result<()>;
}

macro_rules! stage {
    ($ty:ty, $end:ident) => {
        impl Stage for $ty {
            fn sink(&mut self) -> &mut Sink {
                self.get_mut()
            }
            fn end(&mut self) -> io::Result<()> {
                self.$end()
            }
        }
    };
}
stage!(MultiGzDecoder<Sink>, try_finish);
stage!(ZlibDecoder<Sink>, try_finish);
stage!(DeflateDecoder<Sink>, try_finish);
stage!(DecompressorWriter<Sink>, close);
stage!(zstd::stream::write::Decoder<'static, Sink>, do_finish);

enum Inner {
    Identity {
        written: usize,
    },
    /// Deflate before its first two bytes arrived.
    Sniff(Vec<u8>),
    Stage(Box<dyn Stage>),
    Closed,
}

/// Incremental decoder for one response body.
pub struct Decoder {
    encoding: Encoding,
    limit: usize,
    inner: Inner,
    /// Whether any input came: an empty body is fine whatever its encoding
    /// (a HEAD response, a 204).
    fed: bool,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("encoding", &self.encoding)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl Decoder {
    /// A decoder that fails once more than `max_output` bytes come out.
    pub fn new(encoding: Encoding, max_output: usize) -> Result<Self, DecodeError> {
        let sink = Sink {
            buf: Vec::new(),
            written: 0,
            limit: max_output,
            over: false,
        };
        let inner = match encoding {
            Encoding::Identity => Inner::Identity { written: 0 },
            Encoding::Deflate => Inner::Sniff(Vec::with_capacity(2)),
            Encoding::Gzip => Inner::Stage(Box::new(MultiGzDecoder::new(sink))),
            Encoding::Brotli => {
                Inner::Stage(Box::new(DecompressorWriter::new(sink, BROTLI_BUFFER)))
            }
            Encoding::Zstd => {
                let zstd =
                    zstd::stream::write::Decoder::new(sink).map_err(|e| DecodeError::Corrupt {
                        encoding: "zstd",
                        reason: e.to_string(),
                    })?;
                Inner::Stage(Box::new(zstd))
            }
        };
        Ok(Decoder {
            encoding,
            limit: max_output,
            inner,
            fed: false,
        })
    }

    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Decodes one chunk, appending whatever output it completes to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
        self.fed |= !chunk.is_empty();
        let result = self.push_inner(chunk, out);
        if result.is_err() {
            self.inner = Inner::Closed;
        }
        result
    }

    /// Ends the body: errors if the compressed stream was cut short.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), DecodeError> {
        let inner = std::mem::replace(&mut self.inner, Inner::Closed);
        match inner {
            Inner::Closed => Err(DecodeError::Closed),
            _ if !self.fed => Ok(()),
            Inner::Identity { .. } => Ok(()),
            Inner::Sniff(head) if head.is_empty() => Ok(()),
            Inner::Sniff(head) => {
                let mut stage = self.deflate_stage(&head);
                self.write_stage(stage.as_mut(), &head, out)?;
                self.end_stage(stage.as_mut(), out)
            }
            Inner::Stage(mut stage) => self.end_stage(stage.as_mut(), out),
        }
    }

    fn push_inner(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
        match &mut self.inner {
            Inner::Identity { written } => {
                *written = written.saturating_add(chunk.len());
                if *written > self.limit {
                    return Err(DecodeError::TooLarge { limit: self.limit });
                }
                out.extend_from_slice(chunk);
                Ok(())
            }
            Inner::Sniff(head) => {
                head.extend_from_slice(chunk);
                if head.len() < 2 {
                    return Ok(());
                }
                let head = std::mem::take(head);
                let mut stage = self.deflate_stage(&head);
                self.write_stage(stage.as_mut(), &head, out)?;
                self.inner = Inner::Stage(stage);
                Ok(())
            }
            Inner::Stage(stage) => {
                let stage: &mut dyn Stage = stage.as_mut();
                let (encoding, limit) = (self.encoding, self.limit);
                write_stage(stage, chunk, out, encoding, limit)
            }
            Inner::Closed => Err(DecodeError::Closed),
        }
    }

    /// zlib when the first two bytes are a valid zlib header (method 8 and
    /// a header checksum divisible by 31), raw deflate otherwise.
    fn deflate_stage(&self, head: &[u8]) -> Box<dyn Stage> {
        let sink = Sink {
            buf: Vec::new(),
            written: 0,
            limit: self.limit,
            over: false,
        };
        let zlib = match head {
            [cmf, flg, ..] => cmf & 0x0f == 8 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0,
            _ => false,
        };
        if zlib {
            Box::new(ZlibDecoder::new(sink))
        } else {
            Box::new(DeflateDecoder::new(sink))
        }
    }

    fn write_stage(
        &self,
        stage: &mut dyn Stage,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), DecodeError> {
        write_stage(stage, data, out, self.encoding, self.limit)
    }

    fn end_stage(&self, stage: &mut dyn Stage, out: &mut Vec<u8>) -> Result<(), DecodeError> {
        let ended = stage.end();
        out.append(&mut stage.sink().buf);
        ended.map_err(|e| stage_error(stage, e, self.encoding, self.limit, true))
    }
}

fn write_stage(
    stage: &mut dyn Stage,
    data: &[u8],
    out: &mut Vec<u8>,
    encoding: Encoding,
    limit: usize,
) -> Result<(), DecodeError> {
    let written = stage.write_all(data).and_then(|()| stage.flush());
    out.append(&mut stage.sink().buf);
    written.map_err(|e| stage_error(stage, e, encoding, limit, false))
}

fn stage_error(
    stage: &mut dyn Stage,
    err: io::Error,
    encoding: Encoding,
    limit: usize,
    at_end: bool,
) -> DecodeError {
    if stage.sink().over {
        return DecodeError::TooLarge { limit };
    }
    let encoding = encoding.as_str();
    if at_end {
        // Finishing fails only when the compressed stream is incomplete.
        return DecodeError::Truncated { encoding };
    }
    DecodeError::Corrupt {
        encoding,
        reason: err.to_string(),
    }
}

#[cfg(test)]
mod tests;
