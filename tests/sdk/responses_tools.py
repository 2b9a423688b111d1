"""A function-call round trip with the Responses API through tether.

Turn 1 streams (``responses.create(stream=True)``) a real OpenAI recording
with one ``function_call`` item (``openai-responses-function_call-1.sse``).
The script sends the SDK's output items back as input with a
``function_call_output`` and turn 2 gets a non-streamed text answer. The
session rides in an ``X-Session-Id`` header.
"""

import json

import tether_sdk

args = tether_sdk.arguments()
client = tether_sdk.client(f"{args.base_url}/v1", args.api_key, default_headers={"X-Session-Id": args.session})

TOOLS = [
    {
        "type": "function",
        "name": "get_capital",
        "parameters": {"type": "object", "properties": {"country": {"type": "string"}}, "required": ["country"]},
        "strict": False,
    }
]
question = "What is the capital of France? Use the tool."
items = [{"role": "user", "content": question}]
messages = [{"role": "user", "content": question}]

raw = client.responses.with_raw_response.create(
    model="gpt-4o",
    input=items,
    tools=TOOLS,
    stream=True,
    extra_headers={"x-mock-replay": "openai-responses-function_call-1.sse"},
)
deltas, first = tether_sdk.stream_response(raw)
messages.append(tether_sdk.responses_assistant(first))
replies = [{"model": first.model, "x_session_id": raw.headers.get("x-session-id"), "deltas": deltas}]

items += [item.model_dump(mode="json", exclude_none=True) for item in first.output]
for call in (item for item in first.output if item.type == "function_call"):
    output = json.dumps({"capital": "Paris", "asked": json.loads(call.arguments)})
    items.append({"type": "function_call_output", "call_id": call.call_id, "output": output})
    messages.append({"role": "tool", "tool_call_id": call.call_id, "content": output})

raw = client.responses.with_raw_response.create(
    model="mock-model", input=items, tools=TOOLS, extra_headers={"x-mock-chunks": "3"}
)
second = raw.parse()
messages.append(tether_sdk.responses_assistant(second))
replies.append({"model": second.model, "x_session_id": raw.headers.get("x-session-id"), "status": second.status})

tether_sdk.emit(messages, replies)
