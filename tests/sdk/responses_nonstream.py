"""A two-turn non-streamed Responses API conversation through tether.

Turn 1 sends ``instructions`` and a string ``input``; turn 2 sends the whole
conversation as input items: the first question, the SDK's own output items
of turn 1, and a new question. The session rides in the base URL.
"""

import tether_sdk

args = tether_sdk.arguments()
client = tether_sdk.client(f"{args.base_url}/s/{args.session}/v1", args.api_key)

instructions = "Answer like a mock."
messages = [{"role": "system", "content": instructions}]
items = []
replies = []
for turn, chunks in enumerate((2, 3)):
    question = f"responses question {turn}"
    messages.append({"role": "user", "content": question})
    items.append({"role": "user", "content": question})
    raw = client.responses.with_raw_response.create(
        model="mock-model",
        instructions=instructions,
        input=question if turn == 0 else items,
        extra_headers={"x-mock-chunks": str(chunks)},
    )
    response = raw.parse()
    messages.append(tether_sdk.responses_assistant(response))
    items += [item.model_dump(mode="json", exclude_none=True) for item in response.output]
    replies.append(
        {
            "model": response.model,
            "x_session_id": raw.headers.get("x-session-id"),
            "output_text": response.output_text,
            "status": response.status,
            "usage": response.usage.model_dump(exclude_unset=True) if response.usage else None,
        }
    )

tether_sdk.emit(messages, replies)
