//! Responses API fold: output items keyed by `output_index`, filled by
//! `output_text`, `refusal`, `function_call_arguments`,
//! `reasoning_summary_text` and `reasoning_text` deltas; the terminal
//! `response.completed` / `incomplete` / `failed` gives status and usage.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::chat::none_if_empty;
use super::reply::{Checks, Choice, Reply, ToolCall};
use super::{Api, Payload, Usage, str_field, string_of, truthy};

/// One output item as assembled from its deltas.
#[derive(Debug, Default)]
struct Item {
    kind: Option<String>,
    id: Option<String>,
    call_id: Option<String>,
    name: Option<String>,
    arguments: String,
    text: BTreeMap<i64, String>,
    refusal: String,
    summary: BTreeMap<i64, String>,
    reasoning_text: BTreeMap<i64, String>,
}

/// Which part of an item a delta event extends.
#[derive(Debug, Clone, Copy)]
enum Part {
    Text,
    Refusal,
    Arguments,
    Summary,
    ReasoningText,
}

#[derive(Debug, Default)]
pub(super) struct ResponsesFold {
    /// In the order the items were added: checks report in that order.
    items: Vec<(i64, Item)>,
    done_items: BTreeMap<i64, Value>,
    response: Option<Map<String, Value>>,
    terminal: Option<Map<String, Value>>,
    error: Option<Value>,
}

impl ResponsesFold {
    pub(super) fn push(&mut self, payload: &Payload) {
        let Some(Value::Object(obj)) = &payload.json else {
            return;
        };
        let kind = str_field(obj, "type")
            .filter(|k| !k.is_empty())
            .unwrap_or(payload.event);
        match kind {
            "response.created" | "response.in_progress" | "response.queued" => {
                self.response = response_of(obj);
            }
            "response.output_item.added" => self.item_added(obj),
            "response.output_text.delta" => self.delta(obj, Part::Text),
            "response.refusal.delta" => self.delta(obj, Part::Refusal),
            "response.function_call_arguments.delta" => self.delta(obj, Part::Arguments),
            "response.reasoning_summary_text.delta" => self.delta(obj, Part::Summary),
            "response.reasoning_text.delta" => self.delta(obj, Part::ReasoningText),
            "response.output_item.done" => {
                if let (Some(index), Some(item)) = (output_index(obj), obj.get("item")) {
                    self.done_items.insert(index, item.clone());
                }
            }
            "response.completed" | "response.incomplete" | "response.failed" => {
                self.terminal = response_of(obj);
            }
            "error" => self.error = Some(Value::Object(obj.clone())),
            _ => {}
        }
    }

    /// A non-streamed `response` object: its output items count as both the
    /// streamed and the final items.
    pub(super) fn from_body(body: &Map<String, Value>) -> Reply {
        let mut fold = ResponsesFold::default();
        let output = body
            .get("output")
            .and_then(Value::as_array)
            .map(Vec::as_slice);
        for (index, item) in output.unwrap_or_default().iter().enumerate() {
            if let Some(obj) = item.as_object() {
                fold.items.push((index as i64, Item::from_final(obj)));
                fold.done_items.insert(index as i64, item.clone());
            }
        }
        fold.terminal = Some(body.clone());
        fold.finish()
    }

    fn item_added(&mut self, obj: &Map<String, Value>) {
        let (Some(index), Some(Value::Object(item))) = (output_index(obj), obj.get("item")) else {
            return;
        };
        let added = Item::added(item);
        match self.items.iter_mut().find(|(i, _)| *i == index) {
            Some(slot) => slot.1 = added,
            None => self.items.push((index, added)),
        }
    }

    fn delta(&mut self, obj: &Map<String, Value>, part: Part) {
        let (Some(index), Some(Value::String(text))) = (output_index(obj), obj.get("delta")) else {
            return;
        };
        let item = self.item_mut(index, part);
        let sub = |key| obj.get(key).and_then(Value::as_i64).unwrap_or(0);
        let target = match part {
            Part::Text => item.text.entry(sub("content_index")).or_default(),
            Part::Refusal => &mut item.refusal,
            Part::Arguments => &mut item.arguments,
            Part::Summary => item.summary.entry(sub("summary_index")).or_default(),
            Part::ReasoningText => item.reasoning_text.entry(sub("content_index")).or_default(),
        };
        target.push_str(text);
    }

    /// The item under `index`; a delta for an item never announced starts
    /// one of the kind the delta implies (the reference would fail there).
    fn item_mut(&mut self, index: i64, part: Part) -> &mut Item {
        let position = match self.items.iter().position(|(i, _)| *i == index) {
            Some(position) => position,
            None => {
                let kind = match part {
                    Part::Text | Part::Refusal => "message",
                    Part::Arguments => "function_call",
                    Part::Summary | Part::ReasoningText => "reasoning",
                };
                let item = Item {
                    kind: Some(kind.to_owned()),
                    ..Item::default()
                };
                self.items.push((index, item));
                self.items.len() - 1
            }
        };
        &mut self.items[position].1
    }

    pub(super) fn finish(self) -> Reply {
        let checks = self.checks();
        let terminal = self.terminal.is_some();
        let last = self.terminal.or(self.response).unwrap_or_default();
        let mut items: Vec<&(i64, Item)> = self.items.iter().collect();
        items.sort_by_key(|(index, _)| *index);
        let mut reply = Reply::new(Api::Responses);
        reply.choices.push(assemble_choice(
            &items,
            terminal.then(|| last.get("status")).flatten(),
        ));
        reply.id = str_field(&last, "id").map(str::to_owned);
        reply.model = str_field(&last, "model").map(str::to_owned);
        reply.incomplete_reason = last
            .get("incomplete_details")
            .and_then(|d| d.get("reason"))
            .filter(|r| !r.is_null())
            .map(string_of);
        reply.usage = last
            .get("usage")
            .filter(|u| terminal && !u.is_null())
            .map(Usage::from_value);
        reply.error = match last.get("error") {
            Some(error) if terminal && truthy(error) => Some(error.clone()),
            _ => self.error,
        };
        reply.checks = Some(checks);
        reply
    }

    /// Compares each item's deltas with its `output_item.done` item and with
    /// the terminal response's output at the same position.
    fn checks(&self) -> Checks {
        let finals = self
            .terminal
            .as_ref()
            .and_then(|t| t.get("output"))
            .and_then(Value::as_array);
        let mut problems = Vec::new();
        for (index, item) in &self.items {
            let terminal = usize::try_from(*index).ok().and_then(|i| finals?.get(i));
            for (label, reference) in [
                ("output_item.done", self.done_items.get(index)),
                ("terminal output", terminal),
            ] {
                let Some(reference) = reference.and_then(Value::as_object) else {
                    continue;
                };
                if item.agrees_with(reference) == Some(false) {
                    problems.push(format!("item {index} differs from {label}"));
                }
            }
        }
        Checks {
            deltas_match_final: problems.is_empty(),
            problems,
        }
    }
}

/// Content, refusal, reasoning and calls of the items, in output order.
fn assemble_choice(items: &[&(i64, Item)], status: Option<&Value>) -> Choice {
    let (mut content, mut refusal) = (String::new(), String::new());
    let mut reasoning: Vec<&str> = Vec::new();
    let mut tool_calls = Vec::new();
    for (_, item) in items {
        match item.kind.as_deref() {
            Some("message") => {
                item.text.values().for_each(|t| content.push_str(t));
                refusal.push_str(&item.refusal);
            }
            Some("reasoning") => {
                reasoning.extend(item.summary.values().map(String::as_str));
                reasoning.extend(item.reasoning_text.values().map(String::as_str));
            }
            Some("function_call") => tool_calls.push(ToolCall {
                id: item.call_id.clone(),
                item_id: item.id.clone(),
                name: item.name.clone(),
                arguments: item.arguments.clone(),
            }),
            _ => {}
        }
    }
    reasoning.retain(|part| !part.is_empty());
    Choice {
        content: none_if_empty(content),
        // Summary parts are separate paragraphs.
        reasoning: none_if_empty(reasoning.join("\n\n")),
        refusal: none_if_empty(refusal),
        tool_calls,
        finish_reason: status.filter(|s| !s.is_null()).map(string_of),
        ..Choice::default()
    }
}

impl Item {
    fn added(item: &Map<String, Value>) -> Self {
        Item {
            kind: str_field(item, "type").map(str::to_owned),
            id: str_field(item, "id").map(str::to_owned),
            call_id: str_field(item, "call_id").map(str::to_owned),
            name: str_field(item, "name").map(str::to_owned),
            arguments: str_field(item, "arguments").unwrap_or_default().to_owned(),
            ..Item::default()
        }
    }

    fn from_final(item: &Map<String, Value>) -> Self {
        let mut out = Item::added(item);
        for (k, part) in parts(item, "content") {
            match str_field(part, "type") {
                Some("output_text") => {
                    out.text
                        .insert(k, str_field(part, "text").unwrap_or_default().to_owned());
                }
                Some("refusal") => out
                    .refusal
                    .push_str(str_field(part, "refusal").unwrap_or_default()),
                Some("reasoning_text") => {
                    let text = str_field(part, "text").unwrap_or_default().to_owned();
                    out.reasoning_text.insert(k, text);
                }
                _ => {}
            }
        }
        for (k, part) in parts(item, "summary") {
            out.summary
                .insert(k, str_field(part, "text").unwrap_or_default().to_owned());
        }
        out
    }

    /// `None` when there is nothing to compare for this kind of item.
    fn agrees_with(&self, reference: &Map<String, Value>) -> Option<bool> {
        match self.kind.as_deref() {
            Some("message") => {
                let want: String = parts(reference, "content")
                    .filter(|(_, c)| str_field(c, "type") == Some("output_text"))
                    .map(|(_, c)| str_field(c, "text").unwrap_or_default())
                    .collect();
                Some(want == self.text.values().map(String::as_str).collect::<String>())
            }
            Some("function_call") => {
                Some(str_field(reference, "arguments") == Some(self.arguments.as_str()))
            }
            Some("reasoning") if !self.summary.is_empty() => {
                let want: Vec<Option<&str>> = parts(reference, "summary")
                    .map(|(_, s)| str_field(s, "text"))
                    .collect();
                let got: Vec<Option<&str>> =
                    self.summary.values().map(|s| Some(s.as_str())).collect();
                Some(want == got)
            }
            _ => None,
        }
    }
}

/// The object elements of an array field, with their positions.
fn parts<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
) -> impl Iterator<Item = (i64, &'a Map<String, Value>)> {
    let list = obj
        .get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    list.iter()
        .enumerate()
        .filter_map(|(k, v)| Some((k as i64, v.as_object()?)))
}

fn output_index(obj: &Map<String, Value>) -> Option<i64> {
    obj.get("output_index").and_then(Value::as_i64)
}

/// The event's `response` object; an empty one counts as absent.
fn response_of(obj: &Map<String, Value>) -> Option<Map<String, Value>> {
    obj.get("response")
        .and_then(Value::as_object)
        .filter(|r| !r.is_empty())
        .cloned()
}

#[cfg(test)]
mod tests;
