// The browser side of tether, shared by the console and the demo chat page:
// where the key is kept, fetch with the key as a Bearer header, an SSE reader
// over a fetch body, and the text a streamed chunk of any recorded API adds.

/** The own-route prefix (default `/tether`), written into the page by tether. */
export const prefix = document.querySelector('meta[name="tether-prefix"]').content;

const KEY = "tether.key";

/** The key: this tab's sessionStorage, else the device's localStorage when remembered. */
export function getKey() {
  return sessionStorage.getItem(KEY) || localStorage.getItem(KEY) || "";
}

export function setKey(key, remember) {
  sessionStorage.setItem(KEY, key);
  if (remember) localStorage.setItem(KEY, key);
  else localStorage.removeItem(KEY);
}

export function forgetKey() {
  sessionStorage.removeItem(KEY);
  localStorage.removeItem(KEY);
}

/** `fetch` of an own route (`path` after the prefix) with the key. */
export function api(path, options = {}) {
  return authFetch(prefix + path, options);
}

/** `fetch` of any same-origin URL with the key as `Authorization: Bearer`. */
export function authFetch(url, options = {}) {
  const headers = new Headers(options.headers || {});
  headers.set("Authorization", `Bearer ${getKey()}`);
  return fetch(url, { ...options, headers, cache: "no-store" });
}

/** The message of an OpenAI-shaped error body, else the status line. */
export async function errorText(response) {
  const body = await response.text().catch(() => "");
  try {
    return `${response.status}: ${JSON.parse(body).error.message}`;
  } catch {
    return `${response.status} ${response.statusText}${body ? `: ${body.slice(0, 200)}` : ""}`;
  }
}

/** Yields the `data` of each SSE event of a fetch response, as it arrives. */
export async function* sseData(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let data = [];
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      // A trailing "\r" may be the first half of "\r\n": keep it for the next read.
      const cut = buffer.endsWith("\r") ? buffer.length - 1 : buffer.length;
      const lines = buffer.slice(0, cut).split(/\r\n|\r|\n/);
      buffer = lines.pop() + buffer.slice(cut);
      for (const line of lines) {
        if (line === "") {
          if (data.length) yield data.join("\n");
          data = [];
        } else if (line.startsWith("data:")) {
          data.push(line.slice(line.startsWith("data: ") ? 6 : 5));
        }
      }
    }
  } finally {
    reader.releaseLock();
  }
  if (data.length) yield data.join("\n");
}

/** The answer text one streamed event adds, for every API tether records. */
export function deltaText(data) {
  if (data === "[DONE]") return "";
  let event;
  try {
    event = JSON.parse(data);
  } catch {
    return "";
  }
  const choice = event.choices?.[0];
  if (choice) return choice.delta?.content ?? choice.text ?? "";
  if (event.type === "response.output_text.delta") return event.delta ?? "";
  if (event.type === "content_block_delta") return event.delta?.text ?? "";
  const parts = event.candidates?.[0]?.content?.parts;
  if (parts) return parts.map((p) => p.text ?? "").join("");
  return "";
}

/** The usage an event carries (chat completions send it in the last chunk). */
export function eventUsage(data) {
  try {
    return JSON.parse(data).usage ?? null;
  } catch {
    return null;
  }
}

/** "12 s ago", "5 min ago", ... for an RFC 3339 time; the time itself when older. */
export function ago(time) {
  const then = new Date(time);
  if (Number.isNaN(then.getTime())) return "";
  const seconds = Math.round((Date.now() - then.getTime()) / 1000);
  if (seconds < 60) return `${Math.max(seconds, 0)} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return then.toLocaleString();
}

/** The key form of both pages: shown while no key is set; true when a key is. */
export function keyForm(form, onReady) {
  const input = form.querySelector("input[name=key]");
  const remember = form.querySelector("input[name=remember]");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!input.value.trim()) return;
    setKey(input.value.trim(), remember.checked);
    input.value = "";
    form.hidden = true;
    onReady();
  });
  const ready = Boolean(getKey());
  form.hidden = ready;
  return ready;
}
