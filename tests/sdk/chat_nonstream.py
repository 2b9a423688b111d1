"""A three-turn non-streamed chat through tether, the session in an ``X-Session-Id`` header.

The header rides on every request through the client's ``default_headers``;
each reply is the SDK's parsed ``ChatCompletion`` message, and the
``x-session-id`` tether answers is read with ``with_raw_response``.
"""

import tether_sdk

args = tether_sdk.arguments()
client = tether_sdk.client(f"{args.base_url}/v1", args.api_key, default_headers={"X-Session-Id": args.session})

messages = [{"role": "system", "content": "Answer in one line."}]
replies = []
for turn, chunks in enumerate((2, 3, 4)):
    messages.append({"role": "user", "content": f"plain question {turn}"})
    raw = client.chat.completions.with_raw_response.create(
        model="mock-model",
        messages=messages,
        extra_headers={"x-mock-chunks": str(chunks)},
    )
    completion = raw.parse()
    message = completion.choices[0].message
    messages.append(tether_sdk.assistant(message.content, tether_sdk.chat_tool_calls(message.tool_calls)))
    replies.append(
        {
            "model": completion.model,
            "x_session_id": raw.headers.get("x-session-id"),
            "finish_reason": completion.choices[0].finish_reason,
            "usage": completion.usage.model_dump(exclude_unset=True) if completion.usage else None,
        }
    )

tether_sdk.emit(messages, replies)
