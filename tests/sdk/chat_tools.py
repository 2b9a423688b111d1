"""A tool-call round trip with streamed chat completions through tether.

Turn 1 replays a real OpenAI stream with two parallel tool calls
(``openai-chat-parallel_tools-1.sse``, arguments in many fragments); the
SDK's own stream helper (``chat.completions.stream``) accumulates them into
the final assistant message. The script answers each call with a ``tool``
message and turn 2 streams the final text answer from the mock.
"""

import json

import tether_sdk

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "GetWeatherArgs",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "country": {"type": "string"}, "units": {"type": "string"}},
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_stock_price",
            "parameters": {
                "type": "object",
                "properties": {"ticker": {"type": "string"}, "exchange": {"type": "string"}},
            },
        },
    },
]

RESULTS = {"GetWeatherArgs": {"temperature": 12, "sky": "drizzle"}, "get_stock_price": {"price": 227.5}}

args = tether_sdk.arguments()
client = tether_sdk.client(f"{args.base_url}/v1", args.api_key, default_headers={"X-Session-Id": args.session})

messages = [{"role": "user", "content": "What's the weather in Edinburgh and the AAPL price?"}]
replies = []
for knobs in ({"x-mock-replay": "openai-chat-parallel_tools-1.sse"}, {"x-mock-chunks": "4"}):
    with client.chat.completions.stream(
        model="gpt-4o", messages=messages, tools=TOOLS, extra_headers=knobs
    ) as stream:
        deltas = [event.delta for event in stream if event.type == "content.delta"]
        completion = stream.get_final_completion()
    message = completion.choices[0].message
    calls = tether_sdk.chat_tool_calls(message.tool_calls)
    messages.append(tether_sdk.assistant(message.content, calls))
    replies.append({"model": completion.model, "deltas": deltas, "finish_reason": completion.choices[0].finish_reason})
    for call in calls or []:
        result = dict(RESULTS[call["function"]["name"]], arguments=json.loads(call["function"]["arguments"]))
        messages.append({"role": "tool", "tool_call_id": call["id"], "content": json.dumps(result)})

tether_sdk.emit(messages, replies)
