// The console: the key form, the sessions list (newest first), one session's
// conversation with its totals, a live view of its stream in flight, export
// and delete. Every call goes through tether.js with the key.

import { ago, api, deltaText, errorText, forgetKey, getKey, keyForm, sseData } from "./tether.js";
import { messageNode } from "./conversation.js";
import { renderMarkdown } from "./md.js";

const $ = (id) => document.getElementById(id);
const state = { cursor: null, selected: null, live: null };

/** `{route}/{id}{suffix}?{params}`, with `?tenant=` for the admin token's picks. */
function scoped(route, selected, suffix = "", params = {}) {
  const query = new URLSearchParams(params);
  if (selected.tenant) query.set("tenant", selected.tenant);
  const text = query.toString();
  return `${route}/${encodeURIComponent(selected.id)}${suffix}${text ? `?${text}` : ""}`;
}

function showError(node, message) {
  node.textContent = message ?? "";
  node.hidden = !message;
}

async function signedOut(response) {
  if (response.status !== 401) return false;
  forgetKey();
  $("app").hidden = true;
  $("forget").hidden = true;
  $("key-form").hidden = false;
  $("key").setCustomValidity("");
  $("key").placeholder = "that key was not accepted; try again";
  return true;
}

async function loadSessions(reset) {
  if (reset) state.cursor = null;
  const params = new URLSearchParams({ limit: "50" });
  if (state.cursor) params.set("cursor", state.cursor);
  const response = await api(`/sessions?${params}`);
  if (await signedOut(response)) return;
  if (!response.ok) return showError($("sessions-error"), await errorText(response));
  showError($("sessions-error"), null);
  const page = await response.json();
  const list = $("sessions");
  if (reset) list.replaceChildren();
  for (const item of page.items ?? []) list.append(sessionItem(item));
  $("total").textContent = `(${page.total_sessions ?? list.children.length})`;
  state.cursor = page.next_cursor ?? null;
  $("more").hidden = !state.cursor;
}

function sessionItem(item) {
  const li = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.className = "session";
  button.dataset.session = item.session_id;
  const name = document.createElement("span");
  name.className = "session-id";
  name.textContent = item.session_id;
  const meta = document.createElement("span");
  meta.className = "meta";
  meta.textContent = `${item.message_count} messages · ${ago(item.last_activity)}`;
  if (item.tenant) meta.textContent += ` · tenant ${item.tenant.slice(0, 8)}`;
  button.append(name, meta);
  const selected = { id: item.session_id, tenant: item.tenant ?? null };
  if (state.selected?.id === selected.id) button.classList.add("selected");
  button.addEventListener("click", () => select(selected));
  li.append(button);
  return li;
}

function select(selected) {
  state.selected = selected;
  for (const b of document.querySelectorAll(".session")) {
    b.classList.toggle("selected", b.dataset.session === selected.id);
  }
  const hash = new URLSearchParams({ session: selected.id });
  if (selected.tenant) hash.set("tenant", selected.tenant);
  history.replaceState(null, "", `#${hash}`);
  loadSession();
}

/** Every message of the session, page by page. */
async function allMessages(selected) {
  const messages = [];
  let cursor = null;
  do {
    const params = { limit: "1000" };
    if (cursor) params.cursor = cursor;
    const response = await api(scoped("/history", selected, "", params));
    if (!response.ok) throw new Error(await errorText(response));
    const page = await response.json();
    messages.push(...page.messages);
    cursor = page.next_cursor;
  } while (cursor);
  return messages;
}

async function loadSession() {
  const selected = state.selected;
  $("empty").hidden = true;
  $("detail").hidden = false;
  $("session-id").textContent = selected.id;
  try {
    const info = await api(scoped("/sessions", selected));
    if (!info.ok) throw new Error(await errorText(info));
    const meta = await info.json();
    const messages = await allMessages(selected);
    if (state.selected !== selected) return;
    showError($("detail-error"), null);
    renderMeta(meta);
    $("messages").replaceChildren(...messages.map(messageNode));
    $("messages").dataset.count = messages.length;
    if (meta.active_stream && !state.live) follow(selected, messages);
  } catch (error) {
    showError($("detail-error"), error.message);
  }
}

function renderMeta(meta) {
  const usage = meta.usage ?? {};
  const parts = [
    `${meta.message_count} messages`,
    meta.created_at && `started ${new Date(meta.created_at).toLocaleString()}`,
    meta.last_message_time && `last ${ago(meta.last_message_time)}`,
    meta.models?.length && `models ${meta.models.join(", ")}`,
    `${usage.total_tokens ?? 0} tokens (${usage.prompt_tokens ?? 0} in / ${usage.completion_tokens ?? 0} out)`,
  ];
  $("session-meta").textContent = parts.filter(Boolean).join(" · ");
}

/** Follows the session's stream in flight; reloads the conversation at its end. */
async function follow(selected, messages) {
  const controller = new AbortController();
  state.live = controller;
  try {
    const response = await api(scoped("/sessions", selected, "/stream"), {
      signal: controller.signal,
    });
    const streamId = response.headers.get("x-stream-id");
    if (response.status !== 200 || messages.some((m) => m.stream_id === streamId)) {
      controller.abort();
      return;
    }
    $("live").hidden = false;
    $("live-meta").textContent = `stream ${streamId}`;
    let text = "";
    for await (const data of sseData(response)) {
      if (state.selected !== selected) return controller.abort();
      text += deltaText(data);
      $("live-content").innerHTML = renderMarkdown(text);
    }
    await waitForRecorded(selected, streamId);
    loadSessions(true);
  } catch (error) {
    if (error.name !== "AbortError") showError($("detail-error"), `live view: ${error.message}`);
  } finally {
    if (state.live === controller) state.live = null;
    $("live").hidden = true;
    $("live-content").textContent = "";
  }
  if (state.selected === selected) loadSession();
}

/** The turn lands in history milliseconds after its stream ends. */
async function waitForRecorded(selected, streamId) {
  for (let i = 0; i < 20; i++) {
    const messages = await allMessages(selected).catch(() => []);
    if (messages.some((m) => m.stream_id === streamId)) return;
    await new Promise((resolve) => setTimeout(resolve, 150));
  }
}

async function exportAs(format) {
  const response = await api(scoped("/history", state.selected, "/export", { format }));
  if (!response.ok) return showError($("detail-error"), await errorText(response));
  const disposition = response.headers.get("content-disposition") ?? "";
  const name = disposition.match(/filename="([^"]+)"/)?.[1] ?? `tether-${state.selected.id}.${format}`;
  const url = URL.createObjectURL(await response.blob());
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

async function deleteSelected() {
  const selected = state.selected;
  if (!confirm(`Delete the whole history of session ${selected.id}? This cannot be undone.`)) return;
  const response = await api(scoped("/history", selected), { method: "DELETE" });
  if (!response.ok) return showError($("detail-error"), await errorText(response));
  state.selected = null;
  history.replaceState(null, "", "#");
  $("detail").hidden = true;
  $("empty").hidden = false;
  await loadSessions(true);
}

function start() {
  $("app").hidden = false;
  $("forget").hidden = false;
  loadSessions(true);
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.get("session")) select({ id: hash.get("session"), tenant: hash.get("tenant") });
}

$("forget").addEventListener("click", () => {
  forgetKey();
  location.reload();
});
$("refresh").addEventListener("click", () => {
  loadSessions(true);
  if (state.selected) loadSession();
});
$("more").addEventListener("click", () => loadSessions(false));
$("delete").addEventListener("click", deleteSelected);
for (const button of document.querySelectorAll("[data-export]")) {
  button.addEventListener("click", () => exportAs(button.dataset.export));
}
setInterval(() => {
  if (getKey() && !document.hidden && !$("app").hidden) loadSessions(true);
}, 10_000);
if (keyForm($("key-form"), start)) start();
