"""tether with the official OpenAI Python SDK: a chat kept as a session, its
history read back, and a streamed answer resumed after a dropped connection.

    pip install openai
    TETHER_URL=http://localhost:8080 OPENAI_API_KEY=sk-... python chat.py

Environment: TETHER_URL (default http://localhost:8080), OPENAI_API_KEY (passed
through to the upstream; it is also your tenant in tether), MODEL (default
gpt-4o-mini), SESSION (default example-chat), DROP_AFTER (default 2).
"""

import json
import os
import urllib.request

import openai
from openai.types.chat import ChatCompletionChunk

TETHER_URL = os.environ.get("TETHER_URL", "http://localhost:8080").rstrip("/")
API_KEY = os.environ["OPENAI_API_KEY"]
MODEL = os.environ.get("MODEL", "gpt-4o-mini")
SESSION = os.environ.get("SESSION", "example-chat")
DROP_AFTER = int(os.environ.get("DROP_AFTER", "2"))

# 1. The session rides in the base URL: every turn of this client lands in it.
client = openai.OpenAI(base_url=f"{TETHER_URL}/s/{SESSION}/v1", api_key=API_KEY)
messages = [{"role": "user", "content": "Say hello"}]
print(f"session {SESSION}: asking {json.dumps(messages[0]['content'])}")
reply = ""
for chunk in client.chat.completions.create(model=MODEL, messages=messages, stream=True):
    for choice in chunk.choices:
        reply += choice.delta.content or ""
print(f"reply: {reply}")
messages.append({"role": "assistant", "content": reply})


def tether_get(path):
    """GET one of tether's own routes with the same key (your tenant)."""
    request = urllib.request.Request(f"{TETHER_URL}/tether{path}", headers={"Authorization": f"Bearer {API_KEY}"})
    with urllib.request.urlopen(request) as response:
        return json.load(response)


# 2. The history tether recorded for the session.
history = tether_get(f"/history/{SESSION}")
print(f"history: {history['message_count']} messages")
for message in history["messages"]:
    print(f"  {message['index']} {message['role']}: {message['content']}")

# 3. A streamed answer whose connection drops after DROP_AFTER chunks ...
messages.append({"role": "user", "content": "Tell me a story"})
raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=messages, stream=True)
stream_id = raw.headers["x-stream-id"]
stream = raw.parse()
first = ""
for seen, chunk in enumerate(stream, start=1):
    for choice in chunk.choices:
        first += choice.delta.content or ""
    if seen == DROP_AFTER:
        break
stream.close()
print(f"stream {stream_id}: dropped after {DROP_AFTER} chunks: {json.dumps(first)}")

# ... resumed where it left off, with the same SDK, on any replica.
resumed = client.get(
    f"{TETHER_URL}/tether/streams/{stream_id}",
    cast_to=ChatCompletionChunk,
    options={"params": {"after": DROP_AFTER}},
    stream=True,
    stream_cls=openai.Stream[ChatCompletionChunk],
)
rest = ""
for chunk in resumed:
    for choice in chunk.choices:
        rest += choice.delta.content or ""
print(f"resumed after {DROP_AFTER} chunks: {json.dumps(rest)}")
print(f"full answer: {first + rest}")
