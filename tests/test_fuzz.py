"""Relay contract; Relay pipeline: wrong types at every field every client door reads, over every channel format,
never get a 5xx (issue 18 part 1).

For each client door (OpenAI chat/completions/embeddings, Anthropic messages and count_tokens, Gemini
generateContent/streamGenerateContent/countTokens/embedContent/batchEmbedContents, OpenAI Responses) a rich valid
body is taken apart into every path it holds (each key, each list item, at every depth); Hypothesis then puts a
value of a wrong type at one path and posts the body, streamed or not, to a channel of each format (OpenAI,
Anthropic, Gemini). A refusal must be a 4xx in the door's own error shape; a 200 is fine; a 5xx never is. The
number of examples is bounded (FUZZ_EXAMPLES) so the test stays well under a minute on CI.

Bodies go out with httpx, not the SDKs: the SDKs check types before sending, and this is about what others send.
"""

from __future__ import annotations

import copy
import json
import os
import time
from typing import Any, Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import launch_app

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "600"))

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}}
GEMINI_SCHEMA = {"type": "OBJECT", "properties": {"a": {"type": "INTEGER"}}}

CHAT = {
    "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "hi"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
        {"role": "assistant", "content": "ok", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\": 1}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
        {"role": "user", "content": "again"},
    ],
    "tools": [{"type": "function", "function": {"name": "f", "description": "d", "parameters": SCHEMA}}],
    "tool_choice": "auto", "temperature": 0.5, "top_p": 1, "max_tokens": 16, "stop": ["x"], "n": 1, "seed": 1,
    "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": SCHEMA}},
    "reasoning_effort": "low", "presence_penalty": 0, "frequency_penalty": 0,
    "stream_options": {"include_usage": True},
}
MESSAGES = {
    "max_tokens": 16, "system": [{"type": "text", "text": "be brief"}],
    "messages": [
        {"role": "user", "content": [
            {"type": "text", "text": "hi"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "doc"}, "title": "n"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "ok"},
                                          {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": [
                {"type": "text", "text": "42"},
                {"type": "search_result", "source": "https://example.com/r", "title": "A result",
                 "content": [{"type": "text", "text": "result text"}]}]},
            {"type": "text", "text": "again"}]},
    ],
    "tools": [{"name": "f", "description": "d", "input_schema": SCHEMA}],
    "tool_choice": {"type": "auto"}, "temperature": 0.5, "top_p": 1, "top_k": 5, "stop_sequences": ["x"],
    "metadata": {"user_id": "u"},
}
GENERATE = {
    "contents": [
        {"role": "user", "parts": [{"text": "hi"}, {"inlineData": {"mimeType": "image/png", "data": "AAAA"}}]},
        {"role": "model", "parts": [{"text": "ok"}, {"functionCall": {"name": "f", "args": {"a": 1}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"r": 42}}}, {"text": "again"}]},
    ],
    "systemInstruction": {"parts": [{"text": "be brief"}]},
    "generationConfig": {"temperature": 0.5, "topP": 1, "maxOutputTokens": 16, "stopSequences": ["x"],
                         "candidateCount": 1, "responseMimeType": "application/json",
                         "responseSchema": GEMINI_SCHEMA, "thinkingConfig": {"thinkingBudget": 1024}},
    "tools": [{"functionDeclarations": [{"name": "f", "description": "d", "parameters": GEMINI_SCHEMA}]}],
    "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}},
}
RESPONSES = {
    "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "hi"},
                                     {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}]},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "42"},
        {"role": "user", "content": "again"},
    ],
    "instructions": "be brief",
    "tools": [{"type": "function", "name": "f", "description": "d", "parameters": SCHEMA}],
    "tool_choice": "auto", "temperature": 0.5, "top_p": 1, "max_output_tokens": 16, "reasoning": {"effort": "low"},
    "text": {"format": {"type": "json_schema", "name": "r", "schema": SCHEMA}}, "metadata": {"k": "v"},
    "user": "u", "parallel_tool_calls": True,
}

#: door -> (path with {model}, the valid body, whether the body names the model, whether it may stream, shape)
DOORS: dict[str, tuple[str, dict[str, Any], bool, bool, str]] = {
    "chat": ("/v1/chat/completions", CHAT, True, True, "openai"),
    "completions": ("/v1/completions", {"prompt": "hi", "max_tokens": 5, "stop": ["x"]}, True, True, "openai"),
    "embeddings": ("/v1/embeddings", {"input": ["hi", "there"]}, True, False, "openai"),
    "messages": ("/v1/messages", MESSAGES, True, True, "anthropic"),
    "count_tokens": ("/v1/messages/count_tokens", {k: v for k, v in MESSAGES.items() if k != "max_tokens"}, True,
                     False, "anthropic"),
    "generate": ("/v1beta/models/{model}:generateContent", GENERATE, False, False, "gemini"),
    "generate_v1": ("/v1/models/{model}:generateContent", GENERATE, False, False, "gemini"),
    "stream_generate": ("/v1beta/models/{model}:streamGenerateContent?alt=sse", GENERATE, False, False, "gemini"),
    "count": ("/v1beta/models/{model}:countTokens", {"contents": GENERATE["contents"]}, False, False, "gemini"),
    "embed": ("/v1beta/models/{model}:embedContent",
              {"content": {"parts": [{"text": "hi"}]}, "outputDimensionality": 8}, False, False, "gemini"),
    "batch_embed": ("/v1beta/models/{model}:batchEmbedContents",
                    {"requests": [{"model": "models/{model}", "content": {"parts": [{"text": "hi"}]}}]}, False, False,
                    "gemini"),
    "responses": ("/v1/responses", RESPONSES, True, True, "responses"),
}
CHANNELS = {"openai": 1, "anthropic": 14, "gemini": 24}


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path inside a JSON value: each key of an object, each item of a list, at every depth."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield prefix + (key,)
            yield from paths(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield prefix + (index,)
            yield from paths(item, prefix + (index,))


def put(body: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(body)
    target = out
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return out


#: (door, path) for every path of every door's body, plus the door's body itself as a whole (a wrong-typed list
#: item where the body has none, e.g. `messages: [null]`, comes from replacing a list's item)
CASES = [(door, path) for door, (_, body, _, _, _) in DOORS.items() for path in paths(body)]

junk = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False),
              st.text(max_size=4)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=5)


def error_shape_ok(shape: str, body: Any) -> bool:
    if shape == "anthropic":
        return body.get("type") == "error" and isinstance(body.get("error", {}).get("message"), str)
    if shape == "gemini":
        error = body.get("error") or {}
        return isinstance(error.get("code"), int) and isinstance(error.get("status"), str)
    return isinstance((body.get("error") or {}).get("message"), str)


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory, upstream):
    server = launch_app(tmp_path_factory.mktemp("fuzz"))
    for fmt, type_id in CHANNELS.items():
        base = upstream.host_url("ok") if fmt == "gemini" else upstream.url("ok")
        server.add_channel(type=type_id, base_url=base, models=[f"fz-{fmt}"], name=f"fuzz-{fmt}")
    yield server
    server.stop()


def post(server, door: str, channel: str, body: dict[str, Any], stream: bool,
         http: httpx.Client) -> httpx.Response:
    path, _, in_body, _, _ = DOORS[door]
    model = f"fz-{channel}"
    body = dict(body)
    if in_body:
        body.setdefault("model", model)
    if stream:
        body["stream"] = True
    content = json.dumps(body).replace("models/{model}", f"models/{model}")
    return http.post(server.url + path.format(model=model), content=content,
                     headers={**server.headers, "Content-Type": "application/json"})


#: the doors a channel format cannot serve at all (an honest 501, whatever the body)
REFUSED = {("completions", "anthropic"), ("completions", "gemini"), ("embeddings", "anthropic"),
           ("embed", "anthropic"), ("batch_embed", "anthropic")}


def test_the_valid_bodies_are_answered(fuzz_app):
    """The base of every mutation is a good call on every channel that serves its door: so the mutations reach
    the converters instead of stopping at some unrelated check."""
    with httpx.Client(timeout=30) as http:
        for door, (_, body, _, streams, _) in DOORS.items():
            for channel in CHANNELS:
                for stream in (False, True) if streams else (False,):
                    r = post(fuzz_app, door, channel, body, stream, http)
                    expected = 501 if (door, channel) in REFUSED else 200
                    assert r.status_code == expected, (door, channel, stream, r.text[:300])


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=st.sampled_from(CASES), value=junk, channel=st.sampled_from(list(CHANNELS)), stream=st.booleans())
def test_wrong_types_never_get_a_5xx(fuzz_app, case, value, channel, stream):
    door, path = case
    _, body, _, streams, shape = DOORS[door]
    with httpx.Client(timeout=30) as http:
        r = post(fuzz_app, door, channel, put(body, path, value), stream and streams, http)
    status = r.status_code
    assert status < 500 or ((door, channel) in REFUSED and status == 501), (door, path, value, channel, status, r.text[:400])
    if status >= 400:
        assert error_shape_ok(shape, r.json()), (door, path, value, r.text[:400])


# ---- what the fuzzing found, pinned: the field named, deep bodies refused first, a row for every refusal ----

def test_a_wrong_type_is_a_400_naming_the_field_in_the_doors_shape(fuzz_app):
    with httpx.Client(timeout=30) as http:
        r = post(fuzz_app, "chat", "anthropic", put(CHAT, ("messages", 1, "content"), 7), False, http)
        assert r.status_code == 400 and "'messages[1].content'" in r.json()["error"]["message"], r.text
        r = post(fuzz_app, "messages", "gemini", put(MESSAGES, ("tools", 0, "input_schema"), "x"), True, http)
        assert r.status_code == 400 and r.json()["type"] == "error", r.text
        assert "'tools[0].input_schema'" in r.json()["error"]["message"]
        r = post(fuzz_app, "generate", "openai", put(GENERATE, ("generationConfig",), "x"), False, http)
        assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT", r.text
        assert "'generationConfig'" in r.json()["error"]["message"]
        r = post(fuzz_app, "responses", "gemini", put(RESPONSES, ("reasoning",), "x"), False, http)
        assert r.status_code == 400 and "'reasoning'" in r.json()["error"]["message"], r.text


def nested(depth: int) -> Any:
    value: Any = "deep"
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize("door,channel,stream", [("responses", "anthropic", True), ("responses", "gemini", False),
                                                 ("chat", "openai", False), ("messages", "anthropic", True)])
def test_a_deeply_nested_body_is_refused_before_any_upstream_call(fuzz_app, upstream, door, channel, stream):
    """orjson writes at most 254 levels: such a body used to reach the upstream (paid for) and then fail when the
    gateway wrote its answer or stored it, cutting the stream; now it is a 400 and the upstream never hears of it."""
    upstream.clear()
    body = put(DOORS[door][1], ("metadata",), nested(300))
    with httpx.Client(timeout=30) as http:
        r = post(fuzz_app, door, channel, body, stream, http)
    assert r.status_code == 400, r.text[:300]
    assert error_shape_ok(DOORS[door][4], r.json()) and "nests deeper" in r.text
    assert not [q for q in upstream.requests() if "fz-" in json.dumps(q.get("json"))]


def test_every_refused_call_has_its_log_row(fuzz_app):
    """Malformed calls (not JSON, a wrong type, too deep) are logged with their status, reason and the start of
    their body, so a client we refuse can be diagnosed from the log."""
    marker = f"refused-{os.urandom(4).hex()}"
    with httpx.Client(timeout=30, base_url=fuzz_app.url, headers=fuzz_app.headers) as http:
        bad_json = http.post("/v1/chat/completions", content=b'{"model": "fz-anthropic", "messages": [' + marker.encode(),
                             headers={"Content-Type": "application/json"})
        wrong = http.post("/v1/chat/completions", json={"model": "fz-anthropic", "messages": 5, "user": marker})
        deep = http.post("/v1/messages", json={"model": "fz-anthropic", "max_tokens": 5, "messages": [],
                                               "metadata": nested(100), "user": marker})
    ids = {r.headers["x-request-id"]: r for r in (bad_json, wrong, deep)}
    assert [r.status_code for r in ids.values()] == [400, 400, 400]
    deadline = time.monotonic() + 10
    while True:
        rows = fuzz_app.api("GET", "/api/logs/", params={"per_page": 100, "code_type": "error"})["data"]["logs"]
        found = {row["request_id"]: row for row in rows if row["request_id"] in ids}
        if len(found) == len(ids) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert set(found) == set(ids)
    for request_id, row in found.items():
        assert row["code"] == 400 and row["content"], row
        detail = fuzz_app.api("GET", f"/api/logs/detail/{row['id']}")["data"]
        assert marker in detail["request_body"], detail
    assert found[wrong.headers["x-request-id"]]["model"] == "fz-anthropic"
    assert "'messages'" in found[wrong.headers["x-request-id"]]["content"]


@pytest.mark.parametrize("path", ["/v1/models/org/m:generateContent", "/v1/models/m:noSuchMethod",
                                  "/v1/models/:generateContent", "/v1/models/m:generateContent/more"])
def test_gemini_doors_always_answer_in_googles_shape(fuzz_app, path):
    with httpx.Client(timeout=30) as http:
        for key in ("wrong-key", fuzz_app.admin_key):
            r = http.post(fuzz_app.url + path, json={"contents": 5}, headers={"x-goog-api-key": key})
            assert 400 <= r.status_code < 500 and error_shape_ok("gemini", r.json()), (path, r.text)
