// Drives Debian's headless Chromium through the demo chat page and the
// console (tests/browser.rs starts tether and the mock upstream and reads
// the JSON this prints). A long answer streams; the page is reloaded
// mid-stream; the answer must complete on screen whole, once; then the
// console must show that conversation, follow a second answer live, export
// the session, and show a recorded tool-call conversation as structured
// blocks. Screenshots and the export go to the artifacts dir.
//
// usage: node reload.mjs BASE_URL KEY CHUNKS DELAY_MS ARTIFACTS_DIR TOOLS_SESSION

import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [base, key, chunksArg, delayArg, artifacts, toolsSession] = process.argv.slice(2);
const chunks = Number(chunksArg);
const expected = Array.from({ length: chunks }, (_, i) => `tok${i} `).join("").trim();
const PROMPT = "Count for me, slowly.";
const TIMEOUT = 30_000;

function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}

/** Streams an answer of `chunks` in `session` as another client would; once the
 * first bytes are in, resolves to `{ text }`: a promise of the whole answer. */
async function startStream(session, chunks) {
  const response = await fetch(`${base}/v1/chat/completions`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${key}`, "content-type": "application/json", "x-session-id": session,
      "x-mock-chunks": String(chunks), "x-mock-delay-ms": delayArg,
    },
    body: JSON.stringify({ model: "gpt-4o-mini", stream: true, messages: [{ role: "user", content: "And again." }] }),
  });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let raw = (await reader.read()).value ?? "";
  const rest = (async () => {
    for (let r = await reader.read(); !r.done; r = await reader.read()) raw += r.value;
    return raw
      .split("\n")
      .filter((l) => l.startsWith("data: {"))
      .map((l) => JSON.parse(l.slice(6)).choices?.[0]?.delta?.content ?? "")
      .join("");
  })();
  return { text: rest };
}

mkdirSync(artifacts, { recursive: true });
const profile = mkdtempSync(join(tmpdir(), "tether-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1200, height: 800 },
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const problems = [];
const result = {};
const page = context.pages()[0] ?? (await context.newPage());
try {
  page.setDefaultTimeout(TIMEOUT);
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("console", (message) => {
    // Failed fetches are judged by their responses, below.
    if (message.type() === "error" && !message.text().startsWith("Failed to load resource")) {
      problems.push(`console error: ${message.text()}`);
    }
  });
  // The only failure expected: the history of the session is a 404 until its
  // first turn is recorded, at the end of the first answer.
  page.on("response", (response) => {
    const url = new URL(response.url());
    const unrecorded = url.pathname.startsWith("/tether/history/") && response.status() === 404;
    if (response.status() >= 400 && !unrecorded) {
      problems.push(`${response.request().method()} ${url.pathname}${url.search}: ${response.status()}`);
    }
  });
  const shot = (name) => page.screenshot({ path: join(artifacts, `${name}.png`), fullPage: true });

  // The chat page: enter the key, ask, watch the answer start streaming.
  await page.goto(`${base}/tether/ui/chat?x-mock-chunks=${chunks}&x-mock-delay-ms=${delayArg}`);
  await page.fill("#key", key);
  await page.click("#key-save");
  await page.waitForSelector("#messages[data-phase=idle]");
  result.session = await page.evaluate(() => localStorage.getItem("tether.chat.session"));
  await page.fill("#prompt", PROMPT);
  await page.press("#prompt", "Enter");
  const answer = page.locator(".msg.assistant .content").last();
  await page.waitForFunction(() => document.querySelector(".msg.assistant .content")?.textContent.includes("tok20 "));
  await shot("1-chat-streaming");
  result.before_reload = (await answer.textContent()).trim();

  // Reload mid-stream: the page picks the answer up from tether.
  await page.reload();
  await page.waitForSelector(".msg.assistant[data-source=resume]");
  result.resumed_while_streaming = await page.evaluate(
    () => document.querySelector(".msg.assistant[data-source=resume]")?.dataset.state === "streaming",
  );
  await shot("2-chat-resumed-mid-stream");
  await page.waitForSelector("#messages[data-phase=idle]", { timeout: chunks * Number(delayArg) + TIMEOUT });
  await shot("3-chat-complete");
  result.resumed_stream = await page.evaluate(() => document.getElementById("messages").dataset.resumed ?? null);
  result.chat = await page.evaluate(() => ({
    answers: [...document.querySelectorAll(".msg.assistant .content")].map((n) => n.innerText.trim()),
    questions: [...document.querySelectorAll(".msg.user .content")].map((n) => n.innerText.trim()),
    whole: document.getElementById("messages").innerText,
  }));
  const whole = result.chat.whole;
  result.chat.first_token_count = whole.split(/\btok0 /).length - 1;
  result.chat.last_token_count = whole.split(`tok${chunks - 1}`).length - 1;
  delete result.chat.whole;

  // The console, in the same tab (the key is in its sessionStorage).
  await page.goto(`${base}/tether/ui`);
  const item = page.locator(`.session[data-session="${result.session}"]`);
  await item.waitFor();
  result.console_item = (await item.innerText()).replace(/\s+/g, " ").trim();
  await item.click();
  await page.waitForFunction(() => Number(document.getElementById("messages").dataset.count) >= 2);
  await shot("4-console-conversation");
  result.console = await page.evaluate(() => ({
    roles: [...document.querySelectorAll("#messages .msg .role")].map((n) => n.textContent),
    contents: [...document.querySelectorAll("#messages .msg > .content")].map((n) => n.innerText.trim()),
    models: [...document.querySelectorAll("#messages .msg .model")].map((n) => n.textContent),
    usage: [...document.querySelectorAll("#messages .msg .usage")].map((n) => n.textContent),
    meta: document.getElementById("session-meta").textContent,
  }));
  check(result.console.contents.includes(expected), "the console shows the whole answer");

  // A second answer in the same session, from another client: the console follows it live.
  const second = await startStream(result.session, 150);
  await page.click("#refresh");
  await page.waitForFunction(() => document.getElementById("live-content").textContent.includes("tok10 "));
  await shot("5-console-live");
  await page.waitForFunction(() => document.getElementById("messages").dataset.count === "4");
  result.live = {
    hidden_after_end: await page.locator("#live").isHidden(),
    last: (await page.locator("#messages .msg > .content").last().innerText()).trim(),
    client_got: (await second.text).trim(),
  };

  // Export: the JSON download, through a Blob URL.
  const [download] = await Promise.all([page.waitForEvent("download"), page.click("[data-export=json]")]);
  const exported = join(artifacts, download.suggestedFilename());
  await download.saveAs(exported);
  result.export = { name: download.suggestedFilename(), messages: JSON.parse(readFileSync(exported, "utf8")).messages.length };

  // A recorded tool-call conversation: calls as structured blocks.
  await page.click(`.session[data-session="${toolsSession}"]`);
  await page.waitForSelector("#messages .tool-call");
  await shot("6-console-tool-calls");
  result.tools = await page.evaluate(() =>
    [...document.querySelectorAll("#messages .tool-call")].map((n) => ({
      name: n.querySelector("strong").textContent,
      arguments: JSON.parse(n.querySelector("pre").textContent),
    })),
  );
  result.expected_matches = result.chat.answers.length === 1 && result.chat.answers[0] === expected;
} catch (error) {
  problems.push(error.stack ?? String(error));
  await page.screenshot({ path: join(artifacts, "failure.png"), fullPage: true }).catch(() => {});
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
result.problems = problems;
console.log(JSON.stringify(result));
