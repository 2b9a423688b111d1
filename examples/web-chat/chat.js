// The demo chat page. It talks to the upstream through tether (same origin)
// with `fetch` streaming and keeps only its session id in localStorage. On
// load it shows the session's history and asks tether for an answer still in
// flight (`GET {prefix}/sessions/{id}/stream`): that answer is rendered from
// the full replay, so it is on screen once, whole, even after a reload.
//
// Testing aid: query parameters of the page URL named `x-mock-*` are sent as
// request headers with each completion (tether's test upstream reads its
// knobs from them); nothing else in the URL is used.

import { api, authFetch, deltaText, errorText, eventUsage, forgetKey, keyForm, sseData } from "./tether.js";
import { renderMarkdown } from "./md.js";

const $ = (id) => document.getElementById(id);
const SESSION = "tether.chat.session";
/** The messages sent with the next request, rebuilt from history on load. */
let conversation = [];
let current = null;

function newSessionId() {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return `chat-${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}

function sessionId() {
  let id = localStorage.getItem(SESSION);
  if (!id) {
    id = newSessionId();
    localStorage.setItem(SESSION, id);
  }
  $("session-label").textContent = `session ${id}`;
  return id;
}

function mockHeaders() {
  const headers = {};
  for (const [name, value] of new URLSearchParams(location.search)) {
    if (name.toLowerCase().startsWith("x-mock-")) headers[name] = value;
  }
  return headers;
}

function setPhase(phase) {
  $("messages").dataset.phase = phase;
  const busy = phase !== "idle";
  $("send").disabled = busy;
  $("stop").hidden = !current;
}

function showError(message) {
  $("error").textContent = message ?? "";
  $("error").hidden = !message;
}

function textOf(content) {
  if (typeof content === "string") return content;
  if (Array.isArray(content)) return content.map((p) => p?.text ?? "").join("");
  return "";
}

/** A message bubble; `source` says where its text came from (live, resume, history). */
function bubble(role, text, source) {
  const item = document.createElement("li");
  item.className = `msg ${role}`;
  item.dataset.source = source;
  item.dataset.state = "done";
  const content = document.createElement("div");
  content.className = "content";
  item.append(content);
  const meta = document.createElement("div");
  meta.className = "meta";
  item.append(meta);
  $("messages").append(item);
  fill(item, text);
  return item;
}

function fill(item, text) {
  const list = $("messages");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  if (item.classList.contains("assistant")) item.querySelector(".content").innerHTML = renderMarkdown(text);
  else item.querySelector(".content").textContent = text;
  if (atBottom) list.scrollTop = list.scrollHeight;
}

/** Renders a streamed answer into `item` as it arrives; resolves to its text. */
async function streamInto(item, response) {
  item.dataset.state = "streaming";
  let text = "";
  let usage = null;
  let frame = 0;
  for await (const data of sseData(response)) {
    text += deltaText(data);
    usage = eventUsage(data) ?? usage;
    frame ||= requestAnimationFrame(() => {
      frame = 0;
      fill(item, text);
    });
  }
  cancelAnimationFrame(frame);
  fill(item, text);
  if (usage) item.querySelector(".meta").textContent = `${usage.total_tokens ?? "?"} tokens`;
  item.dataset.state = "done";
  return text;
}

async function send(event) {
  event.preventDefault();
  const text = $("prompt").value.trim();
  if (!text || $("messages").dataset.phase !== "idle") return;
  $("prompt").value = "";
  showError(null);
  conversation.push({ role: "user", content: text });
  bubble("user", text, "live");
  const answer = bubble("assistant", "", "live");
  setPhase("streaming");
  try {
    const response = await authFetch("/v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Session-Id": sessionId(), ...mockHeaders() },
      body: JSON.stringify({
        model: $("model").value.trim() || "gpt-4o-mini",
        stream: true,
        stream_options: { include_usage: true },
        messages: conversation,
      }),
    });
    if (!response.ok) throw new Error(await errorText(response));
    current = response.headers.get("x-stream-id");
    setPhase("streaming");
    conversation.push({ role: "assistant", content: await streamInto(answer, response) });
  } catch (error) {
    answer.dataset.state = "error";
    showError(`The answer failed: ${error.message}`);
  } finally {
    current = null;
    setPhase("idle");
  }
}

/** Every recorded message of the session, oldest first; none for a new session. */
async function history(id) {
  const messages = [];
  let cursor = null;
  do {
    const query = new URLSearchParams({ limit: "1000" });
    if (cursor) query.set("cursor", cursor);
    const response = await api(`/history/${encodeURIComponent(id)}?${query}`);
    if (response.status === 404) return [];
    if (!response.ok) throw new Error(await errorText(response));
    const page = await response.json();
    messages.push(...page.messages);
    cursor = page.next_cursor;
  } while (cursor);
  return messages;
}

function showHistory(messages) {
  $("messages").replaceChildren();
  conversation = [];
  for (const m of messages) {
    if (!["user", "assistant", "system", "developer"].includes(m.role)) continue;
    conversation.push({ role: m.role, content: m.content ?? "" });
    if (m.role === "system" || m.role === "developer") continue;
    const item = bubble(m.role, textOf(m.content), "history");
    if (m.complete === false) item.dataset.state = "incomplete";
    if (m.role === "assistant" && m.model) item.querySelector(".meta").textContent = m.model;
  }
}

/** On load: the history, then the answer in flight, if any, from its start. */
async function load() {
  setPhase("loading");
  const id = sessionId();
  try {
    const messages = await history(id);
    showHistory(messages);
    const response = await api(`/sessions/${encodeURIComponent(id)}/stream`);
    const streamId = response.headers.get("x-stream-id");
    if (response.status === 204) return;
    if (!response.ok) throw new Error(await errorText(response));
    if (messages.some((m) => m.stream_id === streamId)) return response.body.cancel();
    // The question of a turn in flight is recorded with its answer, at the end.
    $("messages").dataset.resumed = streamId;
    current = streamId;
    setPhase("resuming");
    await streamInto(bubble("assistant", "", "resume"), response);
    current = null;
    setPhase("syncing");
    await showRecorded(id, streamId);
  } catch (error) {
    if (error.message.startsWith("401")) signOut();
    showError(`Could not load this chat: ${error.message}`);
  } finally {
    current = null;
    setPhase("idle");
  }
}

/** Once the resumed turn is recorded (milliseconds after its end), shows it whole. */
async function showRecorded(id, streamId) {
  for (let attempt = 0; attempt < 20; attempt++) {
    const messages = await history(id);
    if (messages.some((m) => m.stream_id === streamId)) return showHistory(messages);
    await new Promise((resolve) => setTimeout(resolve, 150));
  }
}

async function stop() {
  if (current) await api(`/streams/${encodeURIComponent(current)}`, { method: "DELETE" });
}

function signOut() {
  forgetKey();
  $("chat").hidden = true;
  $("key-form").hidden = false;
}

function start() {
  $("chat").hidden = false;
  $("forget").hidden = false;
  load();
}

$("composer").addEventListener("submit", send);
$("prompt").addEventListener("keydown", (event) => {
  if (event.key !== "Enter" || event.shiftKey) return;
  event.preventDefault();
  $("composer").requestSubmit();
});
$("stop").addEventListener("click", stop);
$("new-chat").addEventListener("click", () => {
  localStorage.setItem(SESSION, newSessionId());
  location.reload();
});
$("forget").addEventListener("click", signOut);
if (keyForm($("key-form"), start)) start();
