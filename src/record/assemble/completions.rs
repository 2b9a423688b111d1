//! Legacy Completions (`POST /v1/completions`, `text_completion` objects):
//! the Chat Completions fold with `choices[].text` as the content. Legacy
//! `logprobs` (parallel token arrays) are not recorded.

use super::Api;
use super::chat::ChatFold;

pub(super) fn fold() -> ChatFold {
    ChatFold::new(Api::Completions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_chunks_are_concatenated_per_choice() {
        let mut fold = fold();
        for chunk in [
            json!({"id": "cmpl-1", "object": "text_completion", "model": "gpt-3.5-turbo-instruct",
                   "choices": [{"text": "Hello", "index": 0, "logprobs": null, "finish_reason": null}]}),
            json!({"id": "cmpl-1", "object": "text_completion",
                   "choices": [{"text": " world", "index": 0, "logprobs": null, "finish_reason": "stop"}]}),
        ] {
            fold.chunk(chunk.as_object().unwrap());
        }
        let reply = fold.finish();
        assert_eq!(reply.api, Api::Completions);
        let message = reply.message().unwrap();
        assert_eq!(message.content.as_deref(), Some("Hello world"));
        assert_eq!(message.finish_reason.as_deref(), Some("stop"));
        assert_eq!(message.logprobs, None);
        assert_eq!(reply.model.as_deref(), Some("gpt-3.5-turbo-instruct"));
    }
}
