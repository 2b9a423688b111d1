"""What the SDK scripts share: where tether is, and the JSON they print.

Each script is run as ``python SCRIPT BASE_URL API_KEY SESSION`` (or with
``TETHER_BASE_URL``, ``TETHER_API_KEY`` and ``TETHER_SESSION`` set), where
BASE_URL is tether's root, e.g. ``http://127.0.0.1:8080``. It talks to tether
only through the official ``openai`` package and prints one JSON object:

``messages``
    the conversation exactly as the SDK saw it, in the OpenAI chat message
    shape: what the script sent (system, user, tool messages) and the
    assistant messages the SDK assembled, tool calls as
    ``{"id", "type": "function", "function": {"name", "arguments"}}``;
``replies``
    per assistant message, what else the SDK saw: the model, the
    ``x-session-id`` response header where the script can read it, and the
    text as it streamed in, delta by delta.
"""

import argparse
import json
import os
import sys

import openai


def arguments():
    """BASE_URL, API_KEY and SESSION from argv, else from the environment."""
    parser = argparse.ArgumentParser(description=sys.modules["__main__"].__doc__)
    for name, env in (("base_url", "TETHER_BASE_URL"), ("api_key", "TETHER_API_KEY"), ("session", "TETHER_SESSION")):
        parser.add_argument(name, nargs="?", default=os.environ.get(env))
    args = parser.parse_args()
    missing = [name for name, value in vars(args).items() if not value]
    if missing:
        parser.error(f"missing {', '.join(missing)} (argv or TETHER_BASE_URL/TETHER_API_KEY/TETHER_SESSION)")
    args.base_url = args.base_url.rstrip("/")
    return args


def client(base_url, api_key, **options):
    """An OpenAI client that fails at once instead of retrying."""
    return openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=30, **options)


def chat_tool_calls(calls):
    """The SDK's tool call objects in the chat message shape (None when there are none)."""
    if not calls:
        return None
    return [
        {"id": c.id, "type": "function", "function": {"name": c.function.name, "arguments": c.function.arguments}}
        for c in calls
    ]


def assistant(content, tool_calls=None):
    """An assistant message in the chat shape, `tool_calls` only when there are some."""
    message = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


def emit(messages, replies, **extra):
    """Prints the conversation and what the SDK saw of each reply as one JSON object."""
    json.dump({"messages": messages, "replies": replies, "openai_version": openai.__version__, **extra}, sys.stdout)
    sys.stdout.write("\n")


def responses_assistant(response):
    """The assistant message a Responses API ``Response`` amounts to, in the chat shape:
    its ``output_text`` as content, its ``function_call`` items as tool calls."""
    calls = [
        {"id": item.call_id, "type": "function", "function": {"name": item.name, "arguments": item.arguments}}
        for item in response.output
        if item.type == "function_call"
    ]
    return assistant(response.output_text or None, calls)


def stream_response(raw):
    """Reads a raw streamed ``responses.create`` answer: the text deltas the SDK
    yielded and the final ``Response`` of its ``response.completed`` event."""
    deltas, final = [], None
    for event in raw.parse():
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
        elif event.type == "response.completed":
            final = event.response
    if final is None:
        raise SystemExit("the stream ended without response.completed")
    return deltas, final
