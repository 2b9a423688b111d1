// One recorded message as the console shows it: role, time, model, usage and
// finish reason in a header; content as Markdown; reasoning folded away; tool
// calls and tool results as structured blocks; an incomplete reply marked.

import { renderMarkdown } from "./md.js";

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** Pretty JSON when `text` is JSON (tool arguments are a JSON string), else as is. */
function pretty(text) {
  if (typeof text !== "string") return JSON.stringify(text, null, 2);
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}

/** Content is a string, or typed parts (text, images, files, ...). */
function contentNode(content) {
  const node = el("div", "content");
  if (typeof content === "string") {
    node.innerHTML = renderMarkdown(content);
  } else if (Array.isArray(content)) {
    for (const part of content) {
      const text = part?.text ?? (typeof part === "string" ? part : null);
      if (text !== null) {
        const block = el("div");
        block.innerHTML = renderMarkdown(text);
        node.append(block);
      } else {
        node.append(el("pre", "part", pretty(part)));
      }
    }
  } else if (content !== null && content !== undefined) {
    node.append(el("pre", "part", pretty(content)));
  }
  return node;
}

function toolCallNode(call) {
  const block = el("div", "tool-call");
  const head = el("div", "tool-head");
  head.append(el("span", "tool-label", "tool call"), el("strong", "", call.function?.name ?? call.type ?? "?"));
  if (call.id) head.append(el("code", "tool-id", call.id));
  block.append(head, el("pre", "", pretty(call.function?.arguments ?? call)));
  return block;
}

function usageText(usage) {
  if (!usage) return "";
  const prompt = usage.prompt_tokens ?? usage.input_tokens;
  const completion = usage.completion_tokens ?? usage.output_tokens;
  const total = usage.total_tokens ?? (prompt ?? 0) + (completion ?? 0);
  return `${prompt ?? "?"} in / ${completion ?? "?"} out / ${total} tokens`;
}

function headerNode(message) {
  const head = el("div", "msg-head");
  head.append(el("span", `role role-${message.role}`, message.role ?? "?"));
  if (message.timestamp) {
    const time = el("time", "", new Date(message.timestamp).toLocaleString());
    time.dateTime = message.timestamp;
    head.append(time);
  }
  if (message.model) head.append(el("span", "model", message.model));
  if (message.usage) head.append(el("span", "usage", usageText(message.usage)));
  if (message.finish_reason) head.append(el("span", "finish", message.finish_reason));
  if (message.complete === false) head.append(el("span", "incomplete", "incomplete"));
  if (message.tool_call_id) head.append(el("code", "tool-id", `result of ${message.tool_call_id}`));
  return head;
}

/** The list item for one history message. */
export function messageNode(message) {
  const item = el("li", `msg ${message.role ?? ""}`);
  item.dataset.index = message.index ?? "";
  if (message.complete === false) item.classList.add("is-incomplete");
  item.append(headerNode(message));
  if (message.reasoning) {
    const details = el("details", "reasoning");
    details.append(el("summary", "", "reasoning"), contentNode(message.reasoning));
    item.append(details);
  }
  if (message.role === "tool") {
    const block = el("div", "tool-result");
    block.append(el("pre", "", pretty(message.content)));
    item.append(block);
  } else {
    item.append(contentNode(message.content));
  }
  if (message.refusal) item.append(el("p", "refusal", `refused: ${message.refusal}`));
  for (const call of message.tool_calls ?? []) item.append(toolCallNode(call));
  if (message.error) item.append(el("pre", "error", pretty(message.error)));
  return item;
}
