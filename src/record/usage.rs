//! `record.include_usage`: so that every streamed chat completion is stored
//! with its token usage, tether asks the upstream for the usage chunk
//! (`stream_options.include_usage`) when the client did not, and hides that
//! chunk from the client, which did not ask for it and may not expect a
//! chunk without choices. Off by default: it is the one place tether
//! changes what passes through.
//!
//! The chunk is hidden from the live response ([`HideUsage`], which holds
//! back each event until it is whole: events usually arrive whole, one per
//! frame, so nothing waits) and from the stream's hub (so a resume numbers
//! events as the client saw them); the recorder still reads it.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame, SizeHint};
use serde_json::Value;

use super::{Api, TurnRequest};

/// The request body to send instead, when `request` (read from `body`) is
/// a streamed chat (or legacy) completion that does not ask for usage;
/// `None` to send it as is.
pub fn ask_for_usage(request: &TurnRequest, body: &[u8]) -> Option<Bytes> {
    if !matches!(request.api, Api::ChatCompletions | Api::Completions) || !request.stream {
        return None;
    }
    match &request.stream_options {
        None => {
            // The common case: add the option in front, leaving every byte
            // the client wrote as it was.
            let open = body.iter().position(|&b| b == b'{')?;
            let mut spliced = Vec::with_capacity(body.len() + 48);
            spliced.extend_from_slice(&body[..=open]);
            spliced.extend_from_slice(br#""stream_options":{"include_usage":true}"#);
            let rest = &body[open + 1..];
            if rest.iter().any(|b| !b.is_ascii_whitespace() && *b != b'}') {
                spliced.push(b',');
            }
            spliced.extend_from_slice(rest);
            Some(Bytes::from(spliced))
        }
        Some(Value::Object(options))
            if options.get("include_usage") != Some(&Value::Bool(true)) =>
        {
            // Rare: the client set other options. The body is written anew.
            let mut body: Value = serde_json::from_slice(body).ok()?;
            body["stream_options"]["include_usage"] = Value::Bool(true);
            serde_json::to_vec(&body).ok().map(Bytes::from)
        }
        // Asked for already, or a shape the upstream will refuse anyway.
        Some(_) => None,
    }
}

/// True for the data of the usage chunk: `"choices": []` and a usage object.
pub fn is_usage_chunk(data: &str) -> bool {
    // Cheap test first: almost every event is a content delta.
    if !data.contains("\"usage\"") {
        return false;
    }
    let Ok(chunk) = serde_json::from_str::<Value>(data) else {
        return false;
    };
    chunk["choices"].as_array().is_some_and(Vec::is_empty) && chunk["usage"].is_object()
}

/// The data lines of one raw SSE event, joined as the SSE spec joins them.
fn event_data(event: &[u8]) -> String {
    let text = String::from_utf8_lossy(event);
    let mut data = String::new();
    for line in text.split(['\n', '\r']).filter(|l| !l.is_empty()) {
        if let Some(value) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(value.strip_prefix(' ').unwrap_or(value));
        }
    }
    data
}

/// Where the first whole event in `buf` ends (past its blank line).
fn event_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < buf.len() {
        match buf[i] {
            b'\n' if buf.get(i + 1) == Some(&b'\n') => return Some(i + 2),
            b'\r' if buf[i + 1..].starts_with(b"\n\r\n") => return Some(i + 4),
            b'\r' if buf.get(i + 1) == Some(&b'\r') => return Some(i + 2),
            _ => {}
        }
        i += 1;
    }
    None
}

/// A response body without the usage chunk: whole events pass, the usage
/// chunk's event is dropped, a partial event waits for its end (and is
/// passed as it is if the body ends first).
pub struct HideUsage<B> {
    inner: B,
    pending: BytesMut,
    ended: bool,
}

impl<B> HideUsage<B> {
    pub fn new(inner: B) -> HideUsage<B> {
        HideUsage {
            inner,
            pending: BytesMut::new(),
            ended: false,
        }
    }

    /// The whole events now pending, without the usage chunk.
    fn whole_events(&mut self) -> Bytes {
        let mut out = BytesMut::new();
        while let Some(end) = event_end(&self.pending) {
            let event = self.pending.split_to(end);
            if !is_usage_chunk(&event_data(&event)) {
                out.extend_from_slice(&event);
            }
        }
        out.freeze()
    }
}

impl<B> HttpBody for HideUsage<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        if this.pending.is_empty() && event_end(&data) == Some(data.len()) {
                            // One whole event (or several) in one frame: the
                            // usual case, passed on without a copy unless it
                            // holds the usage chunk.
                            if !data.windows(7).any(|w| w == b"\"usage\"") {
                                return Poll::Ready(Some(Ok(Frame::data(data))));
                            }
                        }
                        this.pending.extend_from_slice(&data);
                        let out = this.whole_events();
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => {
                    this.ended = true;
                    if !this.pending.is_empty() {
                        let rest = this.pending.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(rest))));
                    }
                    return Poll::Ready(None);
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || (self.pending.is_empty() && self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    /// What capture does: the body read as a request, then asked for usage
    /// (a body that cannot be read is not recorded, so never asked).
    fn ask_for_usage(api: Api, body: &[u8]) -> Option<Bytes> {
        let request = crate::record::request::parse(api, body).ok()?;
        super::ask_for_usage(&request, body)
    }

    #[test]
    fn a_streamed_chat_is_asked_for_usage_with_the_clients_bytes_kept() {
        let body = br#"{"model":"m","stream":true,"messages":[]}"#;
        let sent = ask_for_usage(Api::ChatCompletions, body).unwrap();
        assert_eq!(
            &sent[..],
            br#"{"stream_options":{"include_usage":true},"model":"m","stream":true,"messages":[]}"#
        );
        let with_options =
            br#"{"stream":true,"stream_options":{"include_obfuscation":false},"messages":[]}"#;
        let sent: Value =
            serde_json::from_slice(&ask_for_usage(Api::ChatCompletions, with_options).unwrap())
                .unwrap();
        assert_eq!(sent["stream_options"]["include_usage"], true);
        assert_eq!(sent["stream_options"]["include_obfuscation"], false);
        // A member given twice: the last one counts, as in a parsed body.
        let twice = br#"{"stream":false, "messages":[{"role":"user"}], "stream":true}"#;
        let sent = ask_for_usage(Api::ChatCompletions, twice).unwrap();
        assert!(sent.starts_with(br#"{"stream_options":{"include_usage":true},"stream":false"#));
    }

    #[test]
    fn what_asks_already_or_does_not_stream_is_left_alone() {
        for body in [
            br#"{"stream":true,"stream_options":{"include_usage":true},"messages":[]}"#.as_slice(),
            br#"{"stream":false,"messages":[]}"#,
            br#"{"model":"m"}"#,
            br#"{"stream":true,"stream_options":null,"messages":[]}"#,
            br#"{"stream":false,"stream":true,"stream":false,"messages":[]}"#,
            br#"[true,null]"#,
            b"not json",
        ] {
            assert_eq!(ask_for_usage(Api::ChatCompletions, body), None);
        }
        assert_eq!(ask_for_usage(Api::Responses, br#"{"stream":true}"#), None);
    }

    #[test]
    fn only_the_chunk_without_choices_is_the_usage_chunk() {
        assert!(is_usage_chunk(
            r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#
        ));
        assert!(!is_usage_chunk(
            r#"{"choices":[{"delta":{"content":"a"}}],"usage":null}"#
        ));
        assert!(!is_usage_chunk(
            r#"{"choices":[{"delta":{}}],"usage":{"total_tokens":5}}"#
        ));
        assert!(!is_usage_chunk("[DONE]"));
    }

    #[tokio::test]
    async fn the_usage_chunk_is_hidden_wherever_the_frames_split() {
        let stream = concat!(
            "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n",
            "data: {\"choices\":[],\"usage\":{\"total_tokens\":5}}\n\n",
            "data: [DONE]\n\n"
        );
        let expected = concat!(
            "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n",
            "data: [DONE]\n\n"
        );
        for split in 1..stream.len() {
            for size in [split, 7] {
                let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = stream
                    .as_bytes()
                    .chunks(size)
                    .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
                    .collect();
                let body = StreamBody::new(futures_util::stream::iter(frames));
                let out = HideUsage::new(body).collect().await.unwrap().to_bytes();
                assert_eq!(
                    std::str::from_utf8(&out).unwrap(),
                    expected,
                    "frames of {size}"
                );
            }
        }
    }
}
