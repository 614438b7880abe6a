"""Checks that the official OpenAI Python SDK reads chatstack-mock's replies and errors.

Usage: python3 tests/python_sdk.py BASE_URL     (BASE_URL like http://127.0.0.1:PORT/v1)

The server must run with api_key "sk-mock-python". Prints one "ok NAME" line per check and
exits 0 when all pass; exits 1 at the first failure, 2 when the `openai` module is missing.
Retries are off (max_retries=0), so every error surfaces at once.
"""

import json
import sys

try:
    import openai
    from openai import OpenAI
except ImportError:
    print("the `openai` module is missing: pip install openai", file=sys.stderr)
    sys.exit(2)

KEY = "sk-mock-python"
MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Tell me about the mock."},
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city"],
            },
        },
    }
]

passed = 0


def check(name, condition, detail=""):
    global passed
    if not condition:
        print(f"FAILED {name} {detail}", flush=True)
        sys.exit(1)
    passed += 1
    print(f"ok {name}", flush=True)


def expect_error(name, error_type, call, status=None, code=None):
    try:
        call()
    except error_type as error:
        if status is not None:
            check(f"{name} status", getattr(error, "status_code", None) == status, repr(error))
        if code is not None:
            check(f"{name} code", getattr(error, "code", None) == code, repr(error))
        check(name, True)
        return error
    except Exception as error:  # noqa: BLE001 - the wrong error is a failed check
        check(name, False, f"raised {type(error).__name__}: {error}")
    check(name, False, "raised nothing")


def main():
    base_url = sys.argv[1]
    client = OpenAI(base_url=base_url, api_key=KEY, max_retries=0, timeout=30)

    def create(**kwargs):
        kwargs.setdefault("model", "gpt-4o-mini")
        kwargs.setdefault("messages", MESSAGES)
        return client.chat.completions.create(**kwargs)

    # Unary.
    reply = create(extra_headers={"x-mock-reply-tokens": "8"})
    text = reply.choices[0].message.content
    check("unary object", reply.object == "chat.completion", reply.object)
    check("unary text", isinstance(text, str) and len(text.split(" ")) == 8, repr(text))
    check("unary finish_reason", reply.choices[0].finish_reason == "stop")
    check("unary usage", reply.usage.completion_tokens == 8
          and reply.usage.total_tokens == reply.usage.prompt_tokens + 8, repr(reply.usage))
    check("unary request id", bool(reply._request_id), repr(reply._request_id))

    capped = create(max_tokens=3)
    check("max_tokens cut", capped.choices[0].finish_reason == "length"
          and capped.usage.completion_tokens == 3)
    several = create(n=3)
    check("n choices", [c.index for c in several.choices] == [0, 1, 2])

    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    check("rate-limit headers", raw.headers.get("x-ratelimit-remaining-requests") is not None)
    check("raw parse", raw.parse().choices[0].message.content is not None)

    # Streaming with a usage chunk.
    stream = create(
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-mock-reply-tokens": "8"},
    )
    pieces, usage, finish, roles = [], None, None, 0
    for chunk in stream:
        check_chunk = chunk.object == "chat.completion.chunk"
        if not check_chunk:
            check("chunk object", False, chunk.object)
        if chunk.choices:
            delta = chunk.choices[0].delta
            if delta.role:
                roles += 1
            if delta.content:
                pieces.append(delta.content)
            if chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
        if chunk.usage is not None:
            check("usage chunk has no choices", chunk.choices == [])
            usage = chunk.usage
    check("stream role chunk", roles == 1)
    check("stream one chunk per token", len(pieces) == 8, repr(pieces))
    check("stream text equals unary text", "".join(pieces) == text)
    check("stream finish_reason", finish == "stop")
    check("stream usage", usage is not None and usage.completion_tokens == 8, repr(usage))

    # The SDK's stream helper accumulates a tool call from its argument deltas.
    with client.chat.completions.stream(
        model="gpt-4o-mini", messages=MESSAGES, tools=TOOLS
    ) as helper:
        for _ in helper:
            pass
        final = helper.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    arguments = json.loads(call.function.arguments)
    check("streamed tool call", call.function.name == "get_weather" and call.id.startswith("call_"))
    check("streamed tool arguments", arguments["unit"] == "celsius" and isinstance(arguments["city"], str))
    check("tool finish_reason", final.choices[0].finish_reason == "tool_calls")
    unary_call = create(tools=TOOLS).choices[0].message.tool_calls[0]
    check("unary tool call equals streamed", unary_call.function.arguments == call.function.arguments)

    # Structured output and usage details.
    structured = create(response_format={"type": "json_schema", "json_schema": {
        "name": "answer", "strict": True,
        "schema": {"type": "object", "properties": {"ok": {"type": "boolean"}}},
    }})
    check("json_schema content", isinstance(json.loads(structured.choices[0].message.content)["ok"], bool))
    detailed = create(extra_headers={"x-mock-usage": '{"cached_tokens":40,"reasoning_tokens":9}'})
    check("cached tokens", detailed.usage.prompt_tokens_details.cached_tokens == 40)
    check("reasoning tokens", detailed.usage.completion_tokens_details.reasoning_tokens == 9)

    # Models.
    models = [model.id for model in client.models.list()]
    check("models list", "gpt-4o-mini" in models, repr(models))

    # Errors map onto the SDK's exception types.
    fault = lambda name, **kw: (lambda: create(extra_headers={"x-mock-fault": name}, **kw))  # noqa: E731
    error = expect_error("429 -> RateLimitError", openai.RateLimitError, fault("rate_limit"),
                         status=429, code="rate_limit_exceeded")
    check("429 retry-after", error.response.headers.get("retry-after") == "1")
    expect_error("insufficient_quota -> RateLimitError", openai.RateLimitError,
                 fault("insufficient_quota"), status=429, code="insufficient_quota")
    expect_error("500 -> InternalServerError", openai.InternalServerError, fault("server_error"), status=500)
    expect_error("502 html -> InternalServerError", openai.InternalServerError, fault("bad_gateway"), status=502)
    expect_error("503 -> InternalServerError", openai.InternalServerError, fault("unavailable"), status=503)
    expect_error("529 -> InternalServerError", openai.InternalServerError, fault("overloaded"), status=529)
    expect_error("context length -> BadRequestError", openai.BadRequestError,
                 fault("context_length_exceeded"), status=400, code="context_length_exceeded")
    expect_error("429 on a stream -> RateLimitError", openai.RateLimitError,
                 fault("rate_limit", stream=True), status=429)
    wrong = OpenAI(base_url=base_url, api_key="sk-not-the-key", max_retries=0, timeout=30)
    expect_error("401 -> AuthenticationError", openai.AuthenticationError,
                 lambda: wrong.chat.completions.create(model="m", messages=MESSAGES),
                 status=401, code="invalid_api_key")
    expect_error("404 -> NotFoundError", openai.NotFoundError,
                 lambda: client.models.retrieve("no-such-model"), status=404)

    def read_failing_stream():
        for _ in create(stream=True, extra_headers={"x-mock-fault": "mid_stream_error:2"}):
            pass
    expect_error("mid-stream error -> APIError", openai.APIError, read_failing_stream)
    expect_error("reset -> APIConnectionError", openai.APIConnectionError, fault("reset"))

    print(f"python_sdk: all {passed} checks passed", flush=True)


if __name__ == "__main__":
    main()
