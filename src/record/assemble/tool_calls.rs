//! Merging of Chat Completions tool-call deltas into whole calls, by `index`
//! and `id`, so that parallel calls never bleed into each other and
//! index-less providers (Mistral, Ollama, Gemini's OpenAI layer) still work.

use serde_json::{Map, Value};

use super::pyjson;
use super::reply::ToolCall;

#[derive(Debug, Default)]
struct CallState {
    id: Option<String>,
    name: Option<String>,
    arguments: String,
}

/// The calls of one choice, in the order they were started.
#[derive(Debug, Default)]
pub(super) struct ToolCalls {
    calls: Vec<CallState>,
    /// Delta `index` -> position in `calls` (the latest call under it).
    by_index: Vec<(Value, usize)>,
}

impl ToolCalls {
    /// Folds one element of `delta.tool_calls` (or of a whole message's).
    pub(super) fn add(&mut self, delta: &Map<String, Value>) {
        let index = delta.get("index").filter(|v| !v.is_null());
        let call_id = non_empty(delta.get("id"));
        let function = delta.get("function").and_then(Value::as_object);
        let name = non_empty(function.and_then(|f| f.get("name")));
        let position = match self.target(index, call_id, name) {
            Some(position) => position,
            None => self.start(index),
        };
        let call = &mut self.calls[position];
        if let (Some(id), None) = (call_id, &call.id) {
            call.id = Some(id.to_owned());
        }
        if let Some(name) = name {
            merge_name(&mut call.name, name);
        }
        match function.and_then(|f| f.get("arguments")) {
            None | Some(Value::Null) => {}
            Some(Value::String(fragment)) => call.arguments.push_str(fragment),
            // A provider sent the whole arguments object.
            Some(object) => call.arguments.push_str(&pyjson::compact(object, false)),
        }
    }

    pub(super) fn finish(self) -> Vec<ToolCall> {
        self.calls
            .into_iter()
            .map(|c| ToolCall {
                id: c.id,
                item_id: None,
                name: c.name,
                arguments: c.arguments,
            })
            .collect()
    }

    /// Which known call a delta continues, if any.
    ///
    /// With an index: the call under that index, unless both carry ids that
    /// differ (a provider reusing an index for a new call). Without one: the
    /// call with the same id; or, for an id-less, name-less fragment, the
    /// latest call.
    fn target(
        &self,
        index: Option<&Value>,
        call_id: Option<&str>,
        name: Option<&str>,
    ) -> Option<usize> {
        if let Some(index) = index {
            let (_, known) = self.by_index.iter().find(|(k, _)| k == index)?;
            let reused =
                matches!((call_id, &self.calls[*known].id), (Some(new), Some(old)) if new != old);
            return (!reused).then_some(*known);
        }
        if let Some(id) = call_id {
            return self.calls.iter().position(|c| c.id.as_deref() == Some(id));
        }
        if name.is_none() && !self.calls.is_empty() {
            return Some(self.calls.len() - 1);
        }
        None
    }

    fn start(&mut self, index: Option<&Value>) -> usize {
        self.calls.push(CallState::default());
        let position = self.calls.len() - 1;
        if let Some(index) = index {
            match self.by_index.iter_mut().find(|(k, _)| k == index) {
                Some(entry) => entry.1 = position,
                None => self.by_index.push((index.clone(), position)),
            }
        }
        position
    }
}

/// A repeated name is kept once; a differing one is a streamed fragment.
fn merge_name(current: &mut Option<String>, name: &str) {
    match current {
        Some(existing) if existing != name => existing.push_str(name),
        Some(_) => {}
        None => *current = Some(name.to_owned()),
    }
}

/// A non-empty string value: `""` (Gemini's id) counts as absent.
fn non_empty(value: Option<&Value>) -> Option<&str> {
    value.and_then(Value::as_str).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fold(deltas: Value) -> Vec<ToolCall> {
        let mut calls = ToolCalls::default();
        for d in deltas.as_array().unwrap() {
            calls.add(d.as_object().unwrap());
        }
        calls.finish()
    }

    fn args(calls: &[ToolCall]) -> Vec<(&str, &str)> {
        calls
            .iter()
            .map(|c| (c.name.as_deref().unwrap_or(""), c.arguments.as_str()))
            .collect()
    }

    #[test]
    fn interleaved_parallel_deltas_stay_separate() {
        let calls = fold(json!([
            {"index": 0, "id": "call_a", "type": "function", "function": {"name": "alpha", "arguments": ""}},
            {"index": 1, "id": "call_b", "type": "function", "function": {"name": "beta", "arguments": ""}},
            {"index": 0, "function": {"arguments": "{\"x\":"}},
            {"index": 1, "function": {"arguments": "{\"y\":"}},
            {"index": 0, "function": {"arguments": "1}"}},
            {"index": 1, "function": {"arguments": "2}"}}
        ]));
        assert_eq!(
            args(&calls),
            [("alpha", "{\"x\":1}"), ("beta", "{\"y\":2}")]
        );
        assert_eq!(calls[1].id.as_deref(), Some("call_b"));
    }

    #[test]
    fn index_less_whole_calls_and_reused_index() {
        let calls = fold(json!([
            {"id": "a", "function": {"name": "f", "arguments": "{}"}},
            {"id": "b", "function": {"name": "g", "arguments": {"k": "v"}}},
            {"function": {"arguments": " "}},
            {"index": 0, "id": "c", "function": {"name": "h", "arguments": "1"}},
            {"index": 0, "id": "d", "function": {"name": "i", "arguments": "2"}},
            {"index": 0, "function": {"arguments": "3"}}
        ]));
        assert_eq!(
            args(&calls),
            [
                ("f", "{}"),
                ("g", "{\"k\":\"v\"} "),
                ("h", "1"),
                ("i", "23")
            ]
        );
    }

    #[test]
    fn gemini_empty_id_and_repeated_names() {
        let calls = fold(json!([
            {"id": "", "function": {"name": "get", "arguments": "{\"a\":"}},
            {"id": "", "function": {"arguments": "1}"}},
            {"index": 5, "id": "x", "function": {"name": "get_", "arguments": ""}},
            {"index": 5, "function": {"name": "weather", "arguments": "{}"}},
            {"index": 5, "function": {"name": "get_weather"}}
        ]));
        assert_eq!(calls[0].id, None);
        assert_eq!(args(&calls), [("get", "{\"a\":1}"), ("get_weather", "{}")]);
    }
}
