"""A three-turn streamed chat through tether, the session carried by the base URL alone.

The client's base URL is ``{tether}/s/{session}/v1``: tether strips the
prefix, records the turn under that session and answers ``x-session-id``.
Each turn streams with ``chat.completions.create(stream=True)``; the reply is
the content deltas the SDK yielded, joined, as an app would assemble it.
"""

import tether_sdk

args = tether_sdk.arguments()
client = tether_sdk.client(f"{args.base_url}/s/{args.session}/v1", args.api_key)

messages = [{"role": "system", "content": "You are terse."}]
replies = []
for turn, chunks in enumerate((3, 4, 5)):
    messages.append({"role": "user", "content": f"streamed question {turn}"})
    raw = client.chat.completions.with_raw_response.create(
        model="mock-model",
        messages=messages,
        stream=True,
        extra_headers={"x-mock-chunks": str(chunks)},
    )
    deltas, model, finish_reason = [], None, None
    for chunk in raw.parse():
        model = chunk.model
        for choice in chunk.choices:
            if choice.delta.content:
                deltas.append(choice.delta.content)
            finish_reason = choice.finish_reason or finish_reason
    messages.append(tether_sdk.assistant("".join(deltas)))
    replies.append(
        {
            "model": model,
            "x_session_id": raw.headers.get("x-session-id"),
            "deltas": deltas,
            "finish_reason": finish_reason,
        }
    )

tether_sdk.emit(messages, replies)
