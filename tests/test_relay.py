"""Relay pipeline: the OpenAI-compatible /v1, over real HTTP, with the official openai SDK as a client.

The app runs as a real process (`app_server`) in front of our fake upstream (`upstream`). Every test uses its own
model names, so the channels of one test never serve another's calls.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.parse
from typing import Any

import httpx
import openai
import pytest

import aiproxy_local as app
from conftest import unique, wait_logs
from fake_upstream import SPEECH_PREFIX, count_prompt_tokens, reply_text

MESSAGES = [{"role": "user", "content": "hello there friend"}]


def keys_seen(upstream: Any, model: str) -> list[str]:
    """The channel keys the upstream saw for this model, in order."""
    return [r["headers"].get("authorization", "")[7:] for r in upstream.requests()
            if (r.get("json") or {}).get("model") == model or (r.get("form") or {}).get("model") == model]


# ---- plain calls ----

def test_chat_non_stream_logs_usage_and_request_id(app_server, upstream):
    model = unique()
    channel = app_server.add_channel(base_url=upstream.url("ok+delay-150"), models=[model])
    client = app_server.openai()
    raw = client.chat.completions.with_raw_response.create(model=model, messages=MESSAGES)
    answer = raw.parse()
    assert answer.model == model
    assert answer.choices[0].message.content == reply_text(3)
    assert answer.usage.prompt_tokens == count_prompt_tokens({"messages": MESSAGES})
    request_id = raw.headers["x-request-id"]
    (row,) = wait_logs(app_server, total=1, model_name=model)
    assert row["request_id"] == request_id
    assert row["channel"] == channel and row["code"] == 200 and row["endpoint"] == "/v1/chat/completions"
    assert row["usage"]["input_tokens"] == answer.usage.prompt_tokens
    assert row["usage"]["output_tokens"] == 3 and row["completion_tokens"] == 3
    assert row["usage_estimated"] is False
    assert 150 <= row["ttfb_milliseconds"] <= row["created_at"] - row["request_at"]  # the upstream's 150 ms count


async def test_async_stream_passes_chunks_and_hides_usage_chunk(app_server, upstream):
    model = unique()
    app_server.add_channel(base_url=upstream.url("ok+chunks-5"), models=[model])
    client = openai.AsyncOpenAI(base_url=f"{app_server.url}/v1", api_key=app_server.admin_key, max_retries=0)
    chunks = [c async for c in await client.chat.completions.create(model=model, messages=MESSAGES, stream=True)]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reply_text(5)
    assert all(c.usage is None for c in chunks), "the client did not ask for usage"
    assert all(c.model == model for c in chunks)
    (row,) = wait_logs(app_server, total=1, model_name=model)
    assert row["usage"]["output_tokens"] == 5 and row["usage_estimated"] is False  # usage was still logged


def test_stream_with_client_usage_keeps_usage_chunk(app_server, upstream):
    model = unique()
    app_server.add_channel(base_url=upstream.url("ok"), models=[model])
    chunks = list(app_server.openai().chat.completions.create(
        model=model, messages=MESSAGES, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3


def test_stream_is_not_buffered(app_server, upstream):
    """Chunks 250 ms apart upstream reach the client about 250 ms apart each, not together at the end."""
    model = unique()
    app_server.add_channel(base_url=upstream.url("ok+chunks-3+gap-250"), models=[model])
    arrivals = []
    start = time.time()
    for chunk in app_server.openai().chat.completions.create(model=model, messages=MESSAGES, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.time() - start)
    assert len(arrivals) == 3
    gaps = [later - earlier for earlier, later in zip(arrivals, arrivals[1:])]
    assert all(gap >= 0.2 for gap in gaps), gaps  # each chunk as it came; a buffered stream arrives all at once


def test_stream_cut_midway_is_reported_and_logged(app_server, upstream):
    model = unique()
    app_server.add_channel(base_url=upstream.url("cut-2"), models=[model])
    received = []
    with pytest.raises(openai.APIError):
        for chunk in app_server.openai().chat.completions.create(model=model, messages=MESSAGES, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
    assert "".join(received) == reply_text(2)  # what came before the cut was delivered
    (row,) = wait_logs(app_server, total=1, model_name=model)
    assert row["code"] == 502 and "broke off" in row["content"]


def test_missing_usage_is_estimated_and_marked(app_server, upstream):
    model = unique()
    app_server.add_channel(base_url=upstream.url("nousage"), models=[model])
    client = app_server.openai()
    client.chat.completions.create(model=model, messages=MESSAGES)
    list(client.chat.completions.create(model=model, messages=MESSAGES, stream=True))
    rows = wait_logs(app_server, total=2, model_name=model)
    for row in rows:
        assert row["usage_estimated"] is True
        assert row["usage"]["input_tokens"] > 0 and row["usage"]["output_tokens"] > 0


# ---- choosing channels ----

def test_priority_order_and_failover_with_retry_count(app_server, upstream):
    model = unique()
    broken = app_server.add_channel(base_url=upstream.url("status-500"), models=[model], priority=100, key="k-broken")
    working = app_server.add_channel(base_url=upstream.url("ok"), models=[model], priority=1, key="k-working")
    answer = app_server.openai().chat.completions.create(model=model, messages=MESSAGES)
    assert answer.choices[0].message.content
    assert keys_seen(upstream, model) == ["k-broken", "k-working"]  # high priority first, then the next level
    (row,) = wait_logs(app_server, total=1, model_name=model)
    assert row["channel"] == working and row["retry_times"] == 1 and row["code"] == 200
    assert [(a["channel_id"], a["code"]) for a in row["attempts"]] == [(broken, 500), (working, 200)]
    assert [r["scenario"] for r in upstream.requests() if (r["json"] or {}).get("model") == model] == ["status-500", "ok"]


@pytest.mark.parametrize("scenario", ["status-429", "status-401", "status-503", "closed-port"])
def test_failover_reasons(app_server, upstream, free_port_url, scenario):
    model = unique()
    base = free_port_url if scenario == "closed-port" else upstream.url(scenario)
    app_server.add_channel(base_url=base, models=[model], priority=10, key="k-first")
    second = app_server.add_channel(base_url=upstream.url("ok"), models=[model], priority=0, key="k-second")
    answer = app_server.openai().chat.completions.create(model=model, messages=MESSAGES)
    assert answer.choices[0].message.content == reply_text(3)
    # the first channel was tried first: the upstream saw its key (a closed port sees nothing), and the log
    # row counts the one failed attempt before the answer
    assert keys_seen(upstream, model) == (["k-second"] if scenario == "closed-port" else ["k-first", "k-second"])
    (row,) = wait_logs(app_server, total=1, model_name=model)
    assert row["channel"] == second and row["retry_times"] == 1 and row["code"] == 200


@pytest.fixture
def free_port_url() -> str:
    from conftest import free_port

    return f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there: a connect error


def test_bad_request_is_never_retried(app_server, upstream):
    model = unique()
    app_server.add_channel(base_url=upstream.url("status-400"), models=[model], priority=10, key="k-400")
    app_server.add_channel(base_url=upstream.url("ok"), models=[model], priority=0, key="k-ok")
    with pytest.raises(openai.BadRequestError) as info:
        app_server.openai().chat.completions.create(model=model, messages=MESSAGES)
    assert "fake upstream error 400" in str(info.value)
    assert keys_seen(upstream, model) == ["k-400"]


def test_all_attempts_failed_returns_last_upstream_error(app_server, upstream):
    model = unique()
    app_server.add_channel(base_url=upstream.url("status-500"), models=[model], priority=10)
    app_server.add_channel(base_url=upstream.url("status-429"), models=[model], priority=0)
    with pytest.raises(openai.RateLimitError):
        app_server.openai().chat.completions.create(model=model, messages=MESSAGES)
    (row,) = wait_logs(app_server, total=1, model_name=model)
    assert row["code"] == 429 and row["retry_times"] == 1
    detail = app_server.api("GET", f"/api/logs/detail/{row['id']}")["data"]
    assert model in detail["request_body"] and "429" in detail["response_body"]


def test_same_priority_spreads_load_and_disabled_channel_is_never_chosen(app_server, upstream):
    model = unique()
    a = app_server.add_channel(base_url=upstream.url("ok"), models=[model], priority=5, key="k-a")
    app_server.add_channel(base_url=upstream.url("ok"), models=[model], priority=5, key="k-b")
    client = app_server.openai()
    for _ in range(30):
        client.embeddings.create(model=model, input="x")
    seen = keys_seen(upstream, model)
    assert {"k-a", "k-b"} <= set(seen) and min(seen.count("k-a"), seen.count("k-b")) >= 3
    assert app_server.api("POST", f"/api/channel/{a}/status", json={"status": 2})["success"]
    upstream.clear()
    for _ in range(10):
        client.embeddings.create(model=model, input="x")
    assert set(keys_seen(upstream, model)) == {"k-b"}


def test_pinning_forces_a_channel_even_disabled(app_server, upstream):
    model = unique()
    app_server.add_channel(base_url=upstream.url("ok"), models=[model], priority=10, key="k-main")
    pinned = app_server.add_channel(base_url=upstream.url("ok"), models=[model], priority=0, key="k-pinned",
                                    status=2)
    client = app_server.openai(default_headers={"Aiproxy-Channel": str(pinned)})
    client.chat.completions.create(model=model, messages=MESSAGES)
    assert keys_seen(upstream, model) == ["k-pinned"]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=unique(), messages=MESSAGES)  # not on that channel
    token = app_server.api("POST", "/api/tokens/", json={"name": unique("tok")})["data"]["key"]
    with pytest.raises(openai.PermissionDeniedError):
        app_server.openai(api_key=token, default_headers={"Aiproxy-Channel": str(pinned)}).chat.completions.create(
            model=model, messages=MESSAGES)


def test_model_mapping_renames_upstream_only(app_server, upstream):
    alias, real = unique("alias"), unique("real")
    app_server.add_channel(base_url=upstream.url("ok"), models=[real], model_mapping={alias: real})
    client = app_server.openai()
    assert client.chat.completions.create(model=alias, messages=MESSAGES).model == alias
    assert all(c.model == alias for c in client.chat.completions.create(model=alias, messages=MESSAGES, stream=True))
    assert keys_seen(upstream, real) and not keys_seen(upstream, alias)
    rows = wait_logs(app_server, total=2, model_name=alias)
    assert {r["actual_model"] for r in rows} == {real}
    assert alias in [m.id for m in client.models.list()]


# ---- refusals ----

def test_error_shapes(app_server, upstream):
    model = unique()
    app_server.add_channel(base_url=upstream.url("ok"), models=[model], status=2)
    headers = {"Authorization": f"Bearer {app_server.admin_key}"}
    url = f"{app_server.url}/v1/chat/completions"
    cases = [
        (httpx.post(url, headers=headers, content=b"{not json"), 400, "invalid_json"),
        (httpx.post(url, headers=headers, json={"messages": MESSAGES}), 400, "missing_model"),
        (httpx.post(url, headers=headers, json={"model": unique(), "messages": MESSAGES}), 404, "model_not_found"),
        (httpx.post(url, headers=headers, json={"model": model, "messages": MESSAGES}), 404, "no_available_channel"),
        (httpx.post(url, json={"model": model}), 401, "missing_api_key"),
        (httpx.post(url, headers={"Authorization": "Bearer wrong"}, json={"model": model}), 401, "invalid_api_key"),
        (httpx.get(f"{app_server.url}/v1/nope", headers=headers), 404, "not_found"),
        (httpx.get(f"{app_server.url}/v1/models/{unique()}", headers=headers), 404, "model_not_found"),
    ]
    for response, status, code in cases:
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert error["code"] == code and error["message"] and error["type"]
        assert response.headers["x-request-id"]
    # FastGPT's newer client names "no channel for this model" only for a 404 whose text matches its pattern
    fastgpt_no_channel = re.compile(r"no available channel|无可用渠道|channel not found|channel_not_found", re.I)
    assert all(fastgpt_no_channel.search(r.json()["error"]["message"]) for r, _, _ in cases[2:4])


def test_x_api_key_header_and_sk_prefix_work(app_server, upstream):
    model = unique()
    app_server.add_channel(base_url=upstream.url("ok"), models=[model])
    for headers in ({"x-api-key": app_server.admin_key}, {"Authorization": f"Bearer sk-{app_server.admin_key}"}):
        response = httpx.get(f"{app_server.url}/v1/models", headers=headers)
        assert response.status_code == 200 and model in [m["id"] for m in response.json()["data"]]


def test_token_allow_list_and_disabled_token(app_server, upstream):
    allowed, other = unique(), unique()
    app_server.add_channel(base_url=upstream.url("ok"), models=[allowed, other])
    token = app_server.api("POST", "/api/tokens/", json={"name": unique("tok"), "models": [allowed]})["data"]
    client = app_server.openai(api_key=token["key"])
    assert client.chat.completions.create(model=allowed, messages=MESSAGES).choices
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model=other, messages=MESSAGES)
    assert [m.id for m in client.models.list()] == [allowed]
    (row,) = wait_logs(app_server, total=1, model_name=allowed)
    assert row["token_name"] == token["name"] and row["token_id"] == token["id"]
    app_server.api("POST", f"/api/tokens/{token['id']}/status", json={"status": 2})
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model=allowed, messages=MESSAGES)


# ---- every endpoint ----

def test_other_endpoints(app_server, upstream):
    model = unique()
    app_server.add_channel(base_url=upstream.url("ok"), models=[model])
    client = app_server.openai()
    assert client.completions.create(model=model, prompt="say hi").choices
    assert len(client.embeddings.create(model=model, input=["a", "b"]).data) == 2
    assert [r.flagged for r in client.moderations.create(model=model, input="hi").results] == [False]
    assert client.images.generate(model=model, prompt="a cat").data[0].url
    speech = client.audio.speech.create(model=model, voice="alloy", input="hello")
    assert speech.content.startswith(SPEECH_PREFIX)
    transcript = client.audio.transcriptions.create(model=model, file=("a.wav", b"RIFF" + b"\0" * 100))
    assert "104 bytes" in transcript.text
    translation = httpx.post(f"{app_server.url}/v1/audio/translations", headers={"Authorization": f"Bearer {app_server.admin_key}"},
                             data={"model": model}, files={"file": ("a.wav", b"RIFF" + b"\0" * 10)})
    assert translation.status_code == 200 and translation.json()["text"]
    rerank = httpx.post(f"{app_server.url}/v1/rerank", headers={"Authorization": f"Bearer {app_server.admin_key}"},
                        json={"model": model, "query": "q", "documents": ["a", "b", "c"]})
    assert rerank.status_code == 200 and len(rerank.json()["results"]) == 3
    rows = wait_logs(app_server, total=8, model_name=model)
    assert {r["endpoint"] for r in rows} == {
        "/v1/completions", "/v1/embeddings", "/v1/moderations", "/v1/images/generations", "/v1/audio/speech",
        "/v1/audio/transcriptions", "/v1/audio/translations", "/v1/rerank"}
    assert all(r["code"] == 200 for r in rows)


def test_multipart_model_mapping(app_server, upstream):
    alias, real = unique("alias"), unique("whisper")
    app_server.add_channel(base_url=upstream.url("ok"), models=[real], model_mapping={alias: real})
    app_server.openai().audio.transcriptions.create(model=alias, file=("a.wav", b"RIFF1234"))
    (request,) = [r for r in upstream.requests() if (r.get("form") or {}).get("model") == real]
    assert request["form"]["file_size"] == 8


async def test_hundred_concurrent_calls_give_hundred_log_rows(app_server, upstream):
    model = unique()
    app_server.add_channel(base_url=upstream.url("ok+delay-20"), models=[model])
    client = openai.AsyncOpenAI(base_url=f"{app_server.url}/v1", api_key=app_server.admin_key, max_retries=0)

    async def one(i: int) -> bool:
        if i % 2:
            stream = await client.chat.completions.create(model=model, messages=MESSAGES, stream=True)
            return bool([c async for c in stream])
        return bool((await client.chat.completions.create(model=model, messages=MESSAGES)).choices)

    assert all(await asyncio.gather(*(one(i) for i in range(100))))
    rows = wait_logs(app_server, total=100, model_name=model)
    assert len({r["request_id"] for r in rows}) == 100
    assert all(r["code"] == 200 for r in rows)


# ---- channel types: Azure, and the ones without a native adaptor yet ----

def test_azure_channel_with_the_openai_sdk(app_server, upstream):
    model = unique("gpt-4.1")
    app_server.add_channel(type=3, base_url=upstream.host_url("ok"), key="az-key|2024-10-21", models=[model])
    tools_model = unique("gpt-4.1")
    app_server.add_channel(type=4, base_url=upstream.host_url("tool"), key="az-key", models=[tools_model])
    client = app_server.openai()
    answer = client.chat.completions.create(model=model, messages=MESSAGES)
    assert answer.model == model and answer.choices[0].message.content == reply_text(3)
    chunks = list(client.chat.completions.create(model=model, messages=MESSAGES, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == reply_text(3)
    assert len(client.embeddings.create(model=model, input=["a", "b"]).data) == 2
    tool_call = client.chat.completions.create(model=tools_model, messages=MESSAGES, tools=[WEATHER_TOOL])
    assert tool_call.choices[0].message.tool_calls[0].function.name == "get_weather"
    seen = [r for r in upstream.requests() if r["format"] == "azure" and r["deployment"] in (
        model.replace(".", ""), tools_model)]  # type 3 drops the dots of a deployment name, type 4 keeps them
    assert [r["endpoint"] for r in seen] == ["chat/completions", "chat/completions", "embeddings", "chat/completions"]
    assert [r["query"] for r in seen] == ["api-version=2024-10-21"] * 3 + ["api-version=2025-04-01-preview"]
    assert all(r["headers"]["api-key"] == "az-key" and "authorization" not in r["headers"] for r in seen)
    rows = wait_logs(app_server, total=3, model_name=model)
    assert all(r["code"] == 200 and not r["usage_estimated"] for r in rows)
    channel = next(c["id"] for c in app_server.channels() if model in c["models"])
    test = app_server.api("GET", f"/api/channel/{channel}/test/{model}")["data"]
    assert test["success"] is True and test["code"] == 200


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a given location",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}


def test_a_type_without_its_adaptor_is_refused_clearly_then_fails_over(app_server, upstream):
    model = unique()
    coze = app_server.add_channel(type=34, key="pat_fake|user-1", models=[model], priority=10)
    client = app_server.openai()
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model=model, messages=MESSAGES)
    assert info.value.status_code == 501
    assert info.value.body["message"] == "Coze channels are not supported yet."
    test = app_server.api("GET", f"/api/channel/{coze}/test/{model}")["data"]
    assert test["success"] is False and test["code"] == 501
    assert "Coze channels are not supported yet." in test["response"]
    assert not keys_seen(upstream, model)  # never a silent OpenAI request
    app_server.add_channel(base_url=upstream.url("ok"), models=[model], priority=0)
    assert client.chat.completions.create(model=model, messages=MESSAGES).choices[0].message.content
    rows = wait_logs(app_server, total=2, model_name=model, is_test="false")
    assert sorted((r["code"], r["retry_times"]) for r in rows) == [(200, 1), (501, 0)]


def test_connect_errors_name_the_host_and_the_reason_never_the_key(app_server, free_port_url):
    model = unique()
    app_server.add_channel(base_url=free_port_url, models=[model], key="sk-secret-never-shown")
    with pytest.raises(openai.APIStatusError) as info:
        app_server.openai().chat.completions.create(model=model, messages=MESSAGES)
    port = urllib.parse.urlsplit(free_port_url).port
    assert info.value.status_code == 502
    assert info.value.body["message"] == f"Could not connect to 127.0.0.1:{port} (connection refused)"
    (row,) = wait_logs(app_server, total=1, model_name=model)
    assert f"127.0.0.1:{port} (connection refused)" in row["content"] and "sk-secret" not in row["content"]


@pytest.mark.parametrize("path", ["/v1", "/v1beta", "/v1beta/nothing/here", "/v1/messages/nope", "/v1/no/such"])
def test_unknown_relay_paths_answer_json_errors(app_server, path):
    response = httpx.post(app_server.url + path, headers={"Authorization": f"Bearer {app_server.admin_key}"}, json={})
    assert response.status_code == 404 and response.headers["content-type"] == "application/json"
    assert response.json()["error"]["message"].startswith("Unknown API route")


# ---- the ASGI entry itself, in-process ----

async def _drive(gateway, path: str) -> list[dict]:
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    await gateway({"type": "http", "path": path, "method": "POST", "headers": []}, receive, send)
    return sent


async def test_a_relay_bug_answers_500_only_while_no_answer_has_started(monkeypatch):
    import aiproxy_local as app

    async def broken(state, scope, receive, send):
        raise RuntimeError("a bug")

    async def broken_midway(state, scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("a bug")

    gateway = app.Gateway(api=None, state=app.AppState(settings=app.Settings(), engine=None, catalog={}, admin_key="k",
                                                       admin_key_created=False))
    monkeypatch.setattr(app, "relay", broken)
    start, body = await _drive(gateway, "/v1/chat/completions")
    assert start["status"] == 500 and json.loads(body["body"])["error"]["code"] == "internal_error"
    _, body = await _drive(gateway, "/v1/messages")
    assert json.loads(body["body"])["error"]["type"] == "api_error"  # in the client's own shape
    monkeypatch.setattr(app, "relay", broken_midway)
    assert [m.get("status") for m in await _drive(gateway, "/v1/chat/completions")] == [200]


# ---- wildcard mapping rows, request fitting, and the small doors real clients knock on ----

def bodies_for(upstream: Any, model: str) -> list[dict[str, Any]]:
    return [r["json"] for r in upstream.requests() if (r.get("json") or {}).get("model") == model]


def test_wildcard_rows_exact_beats_pattern_and_longest_pattern_wins():
    route = app.channel_route({"id": 1, "name": "c", "type": 1, "key": "k", "base_url": "http://x", "status": 1,
                               "models": ["claude-own"], "model_mapping": {
                                   "claude-*": "short", "claude-opus-*": "long", "claude-opus-4-8": "exact"}},
                              app.load_catalog())
    assert route.upstream_model("claude-opus-4-8") == "exact"
    assert route.upstream_model("claude-opus-5") == "long" and route.upstream_model("claude-haiku") == "short"
    assert route.upstream_model("claude-own") == "claude-own"  # a name the channel offers itself is no pattern's
    assert route.serves("claude-x") and not route.serves("gpt-5") and "claude-*" not in route.offered


def test_a_wildcard_row_serves_names_no_channel_lists_and_models_list_only_exact_names(app_server, upstream):
    prefix, real, exact_real = unique("wc"), unique("real"), unique("exact")
    wide = app_server.add_channel(base_url=upstream.url("ok"), models=[real], model_mapping={f"{prefix}-*": real})
    exact = app_server.add_channel(base_url=upstream.url("ok"), models=[f"{prefix}-listed"],
                                   model_mapping={f"{prefix}-listed": exact_real})
    client = app_server.openai()
    assert client.chat.completions.create(model=f"{prefix}-any", messages=MESSAGES).model == f"{prefix}-any"
    assert bodies_for(upstream, real)
    client.chat.completions.create(model=f"{prefix}-listed", messages=MESSAGES)  # exact, on the other channel
    assert bodies_for(upstream, exact_real)
    assert wait_logs(app_server, 1, model_name=f"{prefix}-any")[0]["channel"] == wide
    assert wait_logs(app_server, 1, model_name=f"{prefix}-listed")[0]["channel"] == exact
    assert not [m.id for m in client.models.list() if "*" in m.id]
    app_server.api("POST", f"/api/channel/{wide}/status", json={"status": 2})
    refused = httpx.post(f"{app_server.url}/v1/chat/completions", headers=app_server.headers,
                         json={"model": f"{prefix}-gone", "messages": MESSAGES})
    assert refused.status_code == 404 and "No available channel" in refused.json()["error"]["message"]


def test_param_override_and_the_openai_reasoning_rules(app_server, upstream):
    reasoning, plain = f"gpt-5-{unique('r')}", f"gpt-4.1-{unique('p')}"
    channel = app_server.add_channel(base_url=upstream.url("ok"), models=[reasoning, plain], config={
        "param_override": {"seed": 7, "metadata": {"team": "a"}, "user": None}})
    client = app_server.openai()
    client.chat.completions.create(model=reasoning, messages=MESSAGES, max_tokens=50, temperature=0.3, user="u")
    client.chat.completions.create(model=plain, messages=MESSAGES, reasoning_effort="high", max_tokens=50)
    (first,), (second,) = bodies_for(upstream, reasoning), bodies_for(upstream, plain)
    assert first["max_completion_tokens"] == 50 and not {"max_tokens", "temperature", "user"} & set(first)
    assert (first["seed"], first["metadata"]) == (7, {"team": "a"})
    assert "reasoning_effort" not in second and second["max_tokens"] == 50 and second["seed"] == 7
    row = wait_logs(app_server, 1, model_name=reasoning)[0]
    assert row["attempts"][0]["adjusted"] == ("max_tokens → max_completion_tokens; temperature 0.3 dropped (a "
                                              "reasoning model takes only 1); param_override applied")
    shown = app_server.api("GET", f"/api/channel/{channel}")["data"]["config"]
    assert shown["param_override"] == {"seed": 7, "metadata": {"team": "a"}, "user": None}
    bad = app_server.api("PUT", f"/api/channel/{channel}", json={"config": {"param_override": "[1]"}})
    assert bad["success"] is False and "param_override must be a JSON object" in bad["message"]


def test_a_request_the_gateway_cannot_convert_has_a_trail_that_says_so(app_server, upstream):
    model = unique()
    channel = app_server.add_channel(base_url=upstream.url("ok"), models=[model])
    response = httpx.post(f"{app_server.url}/v1/messages", headers={"x-api-key": app_server.admin_key},
                          json={"model": model, "max_tokens": 10, "messages": [{"role": "tool", "content": "x"}]})
    assert response.status_code == 400 and response.json()["type"] == "error"
    assert not bodies_for(upstream, model)
    row = wait_logs(app_server, 1, model_name=model)[0]
    assert row["code"] == 400 and row["channel"] == 0
    assert row["attempts"] == [{"channel_id": channel, "code": 400, "ms": 0, "skipped": "refused",
                                "error": response.json()["error"]["message"]}]


def test_websocket_upgrade_on_responses_gets_426_and_head_slash_200(start_app):
    server = start_app(args=["--no-ui"])
    upgrade = httpx.get(f"{server.url}/v1/responses", headers={
        "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", **server.headers})
    assert upgrade.status_code == 426 and upgrade.json()["error"]["code"] == "upgrade_required"
    assert httpx.head(f"{server.url}/").status_code == 200  # Claude Code's check before each run, UI off
