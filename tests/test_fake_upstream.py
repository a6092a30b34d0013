"""Self-tests for the fake upstream (fake_upstream.py), talking to it with httpx; no app involved."""

from __future__ import annotations

import base64
import json
import struct
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import free_port
from fake_upstream import FakeUpstream, count_prompt_tokens, embedding_vector, parse_scenario, reply_text

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there friend"}]}


@pytest.fixture
def fake(upstream: FakeUpstream) -> FakeUpstream:
    upstream.clear()
    return upstream


def sse_events(resp: httpx.Response) -> list[str]:
    return [line.removeprefix("data: ") for line in resp.iter_lines() if line.startswith("data: ")]


def test_parse_scenario() -> None:
    sc = parse_scenario("ok+delay-200+chunks-4+nousage")
    assert (sc.status, sc.delay_ms, sc.chunks, sc.usage, sc.cut) == (200, 200, 4, False, None)
    with pytest.raises(ValueError):
        parse_scenario("stauts-500")


def test_chat_non_stream(fake: FakeUpstream) -> None:
    resp = httpx.post(fake.url() + "/chat/completions", json=CHAT, headers={"Authorization": "Bearer sk-one"})
    assert resp.status_code == 200
    body = resp.json()
    assert body["model"] == "gpt-4o-mini"
    assert body["choices"][0]["message"]["content"] == reply_text(3)
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}
    [rec] = fake.requests()
    assert rec["scenario"] == "ok" and rec["method"] == "POST" and rec["path"] == "/ok/v1/chat/completions"
    assert rec["headers"]["authorization"] == "Bearer sk-one"
    assert rec["json"] == CHAT


def test_no_scenario_prefix_and_models(fake: FakeUpstream) -> None:
    resp = httpx.get(f"{fake.base}/v1/models")
    assert resp.status_code == 200
    assert "gpt-4o-mini" in [m["id"] for m in resp.json()["data"]]
    assert fake.requests()[0]["scenario"] == "ok"


@pytest.mark.parametrize("status", [400, 401, 429, 500])
def test_status_scenarios(fake: FakeUpstream, status: int) -> None:
    resp = httpx.post(fake.url(f"status-{status}") + "/chat/completions", json=CHAT)
    assert resp.status_code == status
    err = resp.json()["error"]
    assert err["message"] and err["type"]
    assert fake.requests(f"status-{status}")


def test_delay_and_nousage(fake: FakeUpstream) -> None:
    start = time.monotonic()
    resp = httpx.post(fake.url("nousage+delay-200+chunks-5") + "/chat/completions", json=CHAT)
    assert time.monotonic() - start >= 0.2
    assert "usage" not in resp.json()
    assert resp.json()["choices"][0]["message"]["content"] == reply_text(5)


def test_stream_without_include_usage(fake: FakeUpstream) -> None:
    with httpx.stream("POST", fake.url("chunks-4") + "/chat/completions", json={**CHAT, "stream": True}) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = sse_events(resp)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "gpt-4o-mini" for c in chunks)
    assert all("usage" not in c for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == reply_text(4)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_stream_with_include_usage(fake: FakeUpstream) -> None:
    req = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", fake.url() + "/chat/completions", json=req) as resp:
        events = sse_events(resp)
    assert events[-1] == "[DONE]"
    last = json.loads(events[-2])
    assert last["choices"] == []
    assert last["usage"] == {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}

    with httpx.stream("POST", fake.url("nousage") + "/chat/completions", json=req) as resp:
        events = sse_events(resp)
    assert all(json.loads(e).get("usage") is None for e in events[:-1])


def test_stream_gap(fake: FakeUpstream) -> None:
    start = time.monotonic()
    req = {"model": "m", "prompt": "hi", "stream": True}
    with httpx.stream("POST", fake.url("gap-100+chunks-3") + "/completions", json=req) as resp:
        events = sse_events(resp)
    assert time.monotonic() - start >= 0.2
    assert "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1]) == reply_text(3)


def test_cut_drops_mid_stream(fake: FakeUpstream) -> None:
    received: list[str] = []
    req = {**CHAT, "stream": True}
    with pytest.raises(httpx.RemoteProtocolError):
        with httpx.stream("POST", fake.url("cut-2+chunks-5") + "/chat/completions", json=req) as resp:
            assert resp.status_code == 200
            for line in resp.iter_lines():
                if line.startswith("data: "):
                    received.append(line)
    assert len(received) == 2
    assert "[DONE]" not in "".join(received)


def test_embeddings_float_and_base64(fake: FakeUpstream) -> None:
    req = {"model": "text-embedding-3-small", "input": ["one two", "three"]}
    body = httpx.post(fake.url() + "/embeddings", json=req).json()
    assert [d["embedding"] for d in body["data"]] == [embedding_vector(0), embedding_vector(1)]
    assert body["usage"]["prompt_tokens"] == count_prompt_tokens(req) == 4
    assert body["model"] == "text-embedding-3-small"

    b64 = httpx.post(fake.url() + "/embeddings", json={**req, "encoding_format": "base64"}).json()
    vec = struct.unpack("<8f", base64.b64decode(b64["data"][0]["embedding"]))
    assert vec == pytest.approx(embedding_vector(0))


def test_other_json_endpoints(fake: FakeUpstream) -> None:
    req = {"model": "r", "query": "q", "documents": ["a", "b", "c"], "top_n": 2}
    rerank = httpx.post(fake.url() + "/rerank", json=req).json()
    assert [r["index"] for r in rerank["results"]] == [0, 1] and rerank["model"] == "r"
    assert rerank["usage"]["prompt_tokens"] == 5

    moder = httpx.post(fake.url() + "/moderations", json={"model": "omni-moderation-latest", "input": "hi"}).json()
    assert moder["results"][0]["flagged"] is False

    images = httpx.post(fake.url() + "/images/generations", json={"model": "dall-e-3", "prompt": "cat", "n": 2}).json()
    assert len(images["data"]) == 2 and images["data"][0]["url"]

    speech = httpx.post(fake.url() + "/audio/speech", json={"model": "tts-1", "input": "hi", "voice": "alloy"})
    assert speech.headers["content-type"] == "audio/mpeg" and speech.content.endswith(b"hi")


@pytest.mark.parametrize("endpoint", ["audio/transcriptions", "audio/translations"])
def test_audio_multipart(fake: FakeUpstream, endpoint: str) -> None:
    files = {"file": ("a.mp3", b"x" * 1234, "audio/mpeg")}
    resp = httpx.post(fake.url() + f"/{endpoint}", data={"model": "whisper-1"}, files=files)
    assert resp.status_code == 200
    assert resp.json()["text"] == "fake transcript of 1234 bytes"
    assert fake.requests()[0]["form"] == {"model": "whisper-1", "file_size": 1234, "file_name": "a.mp3"}


def test_requests_endpoint(fake: FakeUpstream) -> None:
    httpx.post(fake.url("status-500") + "/chat/completions", json=CHAT)
    listed = httpx.get(f"{fake.base}/_requests").json()
    assert [r["scenario"] for r in listed] == ["status-500"]
    assert httpx.delete(f"{fake.base}/_requests").json() == []
    assert fake.requests() == []


def test_runs_as_script() -> None:
    port = free_port()
    script = Path(__file__).with_name("fake_upstream.py")
    cmd = [sys.executable, str(script), "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                resp = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=CHAT)
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "script did not start"
                time.sleep(0.1)
        assert resp.json()["model"] == "gpt-4o-mini"
    finally:
        proc.terminate()
        proc.wait(10)


# ---- the other formats: Azure's deployment paths, Anthropic's /messages ----

ANTHROPIC_HEADERS = {"x-api-key": "sk-ant-fake", "anthropic-version": "2023-06-01"}
MESSAGE = {"model": "claude-sonnet-4-5", "max_tokens": 64, "system": "Be brief.",
           "messages": [{"role": "user", "content": "hello there friend"}]}


def test_path_shapes_pick_the_format() -> None:
    from fake_upstream import split_path

    assert split_path("/tool+chunks-2/v1/chat/completions").format == "openai"
    assert split_path("/v1/messages").format == "anthropic"
    assert split_path("/ok/v1/messages/count_tokens").endpoint == "messages/count_tokens"
    azure = split_path("/ok/openai/deployments/gpt-41/chat/completions")
    assert (azure.format, azure.deployment, azure.endpoint) == ("azure", "gpt-41", "chat/completions")
    assert split_path("/ok/v1beta/models/gemini-2.5-flash:generateContent").format == "gemini"
    assert split_path("/ok/elsewhere") is None


def test_azure_needs_its_key_header_and_api_version(fake: FakeUpstream) -> None:
    url = fake.host_url() + "/openai/deployments/gpt-41/chat/completions"
    assert httpx.post(url + "?api-version=2024-10-21", json=CHAT).status_code == 401
    assert httpx.post(url, json=CHAT, headers={"api-key": "k"}).status_code == 404
    answer = httpx.post(url + "?api-version=2024-10-21", json=CHAT, headers={"api-key": "k"})
    assert answer.json()["choices"][0]["message"]["content"] == reply_text(3)
    assert fake.requests()[-1]["deployment"] == "gpt-41"


def test_anthropic_message_usage_and_cache_tokens(fake: FakeUpstream) -> None:
    resp = httpx.post(fake.url("cacheread-7+cachewrite-2") + "/messages", json=MESSAGE, headers=ANTHROPIC_HEADERS)
    body = resp.json()
    assert body["type"] == "message" and body["stop_reason"] == "end_turn"
    assert body["content"] == [{"type": "text", "text": reply_text(3)}]
    assert count_prompt_tokens(MESSAGE) == 6  # "Be brief." + "hello there friend" + 1
    assert body["usage"] == {"input_tokens": 6, "output_tokens": 3, "cache_read_input_tokens": 7,
                             "cache_creation_input_tokens": 2}
    counted = httpx.post(fake.url() + "/messages/count_tokens", json=MESSAGE, headers=ANTHROPIC_HEADERS).json()
    assert counted == {"input_tokens": 6}


@pytest.mark.parametrize("change, status, words", [
    ({"max_tokens": None}, 400, "max_tokens"),
    ({"messages": [{"role": "system", "content": "x"}]}, 400, "'user' or 'assistant'"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}, 400, "alternate"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "x", "content": "1"}]}]},
     400, "tool_use_id"),
    ({"tools": [{"name": "f", "parameters": {"type": "object"}}]}, 400, "input_schema"),
])
def test_anthropic_refuses_what_the_real_api_refuses(fake: FakeUpstream, change, status, words) -> None:
    body = {k: v for k, v in {**MESSAGE, **change}.items() if v is not None}
    resp = httpx.post(fake.url() + "/messages", json=body, headers=ANTHROPIC_HEADERS)
    assert resp.status_code == status and resp.json()["type"] == "error" and words in resp.json()["error"]["message"]
    assert httpx.post(fake.url() + "/messages", json=MESSAGE, headers={"x-api-key": "k"}).status_code == 400
    assert httpx.post(fake.url() + "/messages", json=MESSAGE).status_code == 401


def test_anthropic_stream_with_thinking_and_a_tool_call(fake: FakeUpstream) -> None:
    body = {**MESSAGE, "max_tokens": 4096, "stream": True, "thinking": {"type": "enabled", "budget_tokens": 2048},
            "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}]}
    with httpx.stream("POST", fake.url("tool") + "/messages", json=body, headers=ANTHROPIC_HEADERS) as resp:
        names = [line[7:] for line in resp.iter_lines() if line.startswith("event: ")]
    assert names[:2] == ["message_start", "ping"] and names[-2:] == ["message_delta", "message_stop"]
    assert names.count("content_block_start") == names.count("content_block_stop") == 3  # thinking, text, tool
    status = httpx.post(fake.url("status-529") + "/messages", json=MESSAGE, headers=ANTHROPIC_HEADERS)
    assert status.status_code == 529 and status.json()["error"]["type"] == "overloaded_error"
