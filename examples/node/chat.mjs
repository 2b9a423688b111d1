// tether with the official OpenAI Node SDK: a chat kept as a session, its
// history read back, and a streamed answer resumed after a dropped connection.
//
//   npm install && TETHER_URL=http://localhost:8080 OPENAI_API_KEY=sk-... node chat.mjs
//
// Environment: TETHER_URL (default http://localhost:8080), OPENAI_API_KEY
// (passed through to the upstream; it is also your tenant in tether), MODEL
// (default gpt-4o-mini), SESSION (default example-chat), DROP_AFTER (default 2).

import OpenAI from "openai";

const TETHER_URL = (process.env.TETHER_URL ?? "http://localhost:8080").replace(/\/+$/, "");
const API_KEY = process.env.OPENAI_API_KEY;
const MODEL = process.env.MODEL ?? "gpt-4o-mini";
const SESSION = process.env.SESSION ?? "example-chat";
const DROP_AFTER = Number(process.env.DROP_AFTER ?? "2");

const text = (chunk) => chunk.choices.map((c) => c.delta?.content ?? "").join("");

// 1. The session rides in the base URL: every turn of this client lands in it.
const client = new OpenAI({ baseURL: `${TETHER_URL}/s/${SESSION}/v1`, apiKey: API_KEY });
const messages = [{ role: "user", content: "Say hello" }];
console.log(`session ${SESSION}: asking ${JSON.stringify(messages[0].content)}`);
let reply = "";
for await (const chunk of await client.chat.completions.create({ model: MODEL, messages, stream: true })) {
  reply += text(chunk);
}
console.log(`reply: ${reply}`);
messages.push({ role: "assistant", content: reply });

// 2. The history tether recorded for the session (same key: your tenant).
const response = await fetch(`${TETHER_URL}/tether/history/${encodeURIComponent(SESSION)}`, {
  headers: { Authorization: `Bearer ${API_KEY}` },
});
const history = await response.json();
console.log(`history: ${history.message_count} messages`);
for (const m of history.messages) console.log(`  ${m.index} ${m.role}: ${m.content}`);

// 3. A streamed answer whose connection drops after DROP_AFTER chunks ...
messages.push({ role: "user", content: "Tell me a story" });
const { data: stream, response: raw } = await client.chat.completions
  .create({ model: MODEL, messages, stream: true })
  .withResponse();
const streamId = raw.headers.get("x-stream-id");
let first = "";
let seen = 0;
for await (const chunk of stream) {
  first += text(chunk);
  if (++seen === DROP_AFTER) break; // leaving the loop closes the connection
}
console.log(`stream ${streamId}: dropped after ${DROP_AFTER} chunks: ${JSON.stringify(first)}`);

// ... resumed where it left off, with the same SDK, on any replica.
const resumed = await client.get(`${TETHER_URL}/tether/streams/${streamId}`, {
  query: { after: DROP_AFTER },
  stream: true,
});
let rest = "";
for await (const chunk of resumed) rest += text(chunk);
console.log(`resumed after ${DROP_AFTER} chunks: ${JSON.stringify(rest)}`);
console.log(`full answer: ${first + rest}`);
