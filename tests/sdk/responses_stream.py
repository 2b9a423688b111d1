"""A streamed Responses API turn through tether: ``client.responses.create(stream=True)``.

The mock replays a real OpenAI stream (``openai-responses-text-1.sse``,
``event:``/``data:`` pairs, seven ``output_text`` deltas, ``response.completed``).
The script prints the deltas the SDK yielded, the final ``Response`` of its
``response.completed`` event as an assistant message, and its ``output_text``.
The session rides in the base URL.
"""

import tether_sdk

args = tether_sdk.arguments()
client = tether_sdk.client(f"{args.base_url}/s/{args.session}/v1", args.api_key)

question = "What is the capital of France?"
raw = client.responses.with_raw_response.create(
    model="gpt-4o",
    input=question,
    stream=True,
    extra_headers={"x-mock-replay": "openai-responses-text-1.sse"},
)
deltas, response = tether_sdk.stream_response(raw)
tether_sdk.emit(
    [{"role": "user", "content": question}, tether_sdk.responses_assistant(response)],
    [
        {
            "model": response.model,
            "x_session_id": raw.headers.get("x-session-id"),
            "deltas": deltas,
            "output_text": response.output_text,
            "status": response.status,
        }
    ],
)
