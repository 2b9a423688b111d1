"""A streamed chat that loses its connection after 100 chunks and resumes.

Run as ``python chat_resume.py BASE_URL API_KEY SESSION``, with
``TETHER_RESUME_BASE_URL`` naming the replica to resume on (default BASE_URL).
The SDK streams a 500-chunk answer with ``chat.completions.create(stream=True)``
and reads ``x-stream-id`` from the response; after 100 chunks it closes the
stream (the connection drops, as on a refresh). It then resumes with the same
SDK: ``GET {RESUME_BASE_URL}/tether/streams/{id}?after=100`` read as a
``Stream[ChatCompletionChunk]``, on the same replica or another one. It
prints the conversation (the assistant message is both parts joined) and the
deltas of each part.
"""

import os

import openai
from openai.types.chat import ChatCompletionChunk

import tether_sdk

DROP_AFTER = 100

args = tether_sdk.arguments()
resume_base = os.environ.get("TETHER_RESUME_BASE_URL", args.base_url).rstrip("/")
client = tether_sdk.client(f"{args.base_url}/v1", args.api_key, default_headers={"X-Session-Id": args.session})

messages = [{"role": "user", "content": "tell me a long story"}]
raw = client.chat.completions.with_raw_response.create(
    model="mock-model",
    messages=messages,
    stream=True,
    extra_headers={"x-mock-chunks": "500", "x-mock-delay-ms": "2"},
)
stream_id = raw.headers["x-stream-id"]
stream = raw.parse()
first, model = [], None
for count, chunk in enumerate(stream, start=1):
    model = chunk.model
    first.extend(c.delta.content for c in chunk.choices if c.delta.content)
    if count == DROP_AFTER:
        break
stream.close()

resumer = tether_sdk.client(f"{resume_base}/v1", args.api_key)
resumed_stream = resumer.get(
    f"{resume_base}/tether/streams/{stream_id}",
    cast_to=ChatCompletionChunk,
    options={"params": {"after": DROP_AFTER}},
    stream=True,
    stream_cls=openai.Stream[ChatCompletionChunk],
)
resumed, finish_reason = [], None
for chunk in resumed_stream:
    for choice in chunk.choices:
        if choice.delta.content:
            resumed.append(choice.delta.content)
        finish_reason = choice.finish_reason or finish_reason

messages.append(tether_sdk.assistant("".join(first + resumed)))
replies = [{"model": model, "x_session_id": raw.headers.get("x-session-id"), "deltas": first + resumed, "finish_reason": finish_reason}]
tether_sdk.emit(messages, replies, stream_id=stream_id, first=first, resumed=resumed)
