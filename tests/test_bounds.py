"""Relay pipeline: bounds on what an upstream sends (issue 18, part 5). UPSTREAM_MAX_BODY_MIB caps a whole
answer and one event of a stream. A larger answer fails over to the next channel, else the client gets a 502 in its
own shape; one huge stream event ends the stream with an error event; the gateway answers other calls while such an
answer arrives.

The upstream here speaks OpenAI's chat format (platform.openai.com/docs/api-reference/chat): a chat completion
object, or `text/event-stream` chunks (`data: {chat.completion.chunk}` + blank line, then `data: [DONE]`). Its
first path segment picks what it sends:
    ok            a small chat completion (or stream)
    big-N         a chat completion whose content is N MiB, with a Content-Length
    chunked-N     the same without Content-Length (chunked), sent in 64 KiB pieces
    event-N       a stream whose second event is one `data:` line of N MiB, sent in 64 KiB pieces with no blank
                  line until its end
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anthropic
import httpx
import openai
import pytest
import uvicorn

from conftest import unique, wait_logs
from fake_upstream import read_body

MIB = 1024 * 1024
PIECE = 64 * 1024


def completion(model: str, content: str) -> bytes:
    return json.dumps({
        "id": "chatcmpl-big", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()


def chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    return b"data: " + json.dumps({"id": "chatcmpl-big", "object": "chat.completion.chunk", "created": 1,
                                   "model": model, "choices": [{"index": 0, "delta": delta,
                                                                "finish_reason": finish}]}).encode() + b"\n\n"


class BigUpstream:
    """An OpenAI-format upstream on a free port, in a thread of the test process."""

    def __init__(self) -> None:
        self.port = 0
        self.calls: dict[str, int] = {}

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}/v1"

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        raw = await read_body(receive)
        body = json.loads(raw or b"{}")
        name = scope["path"].strip("/").split("/", 1)[0]
        self.calls[name] = self.calls.get(name, 0) + 1
        kind, _, size = name.partition("-")
        model = body.get("model", "")
        if kind == "event":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream")]})
            await send({"type": "http.response.body", "body": chunk(model, {"role": "assistant", "content": ""}),
                        "more_body": True})
            head = b'data: {"id":"chatcmpl-big","object":"chat.completion.chunk","created":1,"model":"m",' \
                   b'"choices":[{"index":0,"delta":{"content":"'
            await send({"type": "http.response.body", "body": head, "more_body": True})
            # paced as a network delivers it (40 MiB take over a second): unpaced, this thread took the test
            # process's GIL from the client counting the calls answered meanwhile (3 to 23 of them, by load)
            for _ in range(int(size) * MIB // PIECE):
                await send({"type": "http.response.body", "body": b"x" * PIECE, "more_body": True})
                await asyncio.sleep(0.002)
            await send({"type": "http.response.body", "body": b'"},"finish_reason":null}]}\n\n', "more_body": True})
            await send({"type": "http.response.body", "body": chunk(model, {}, "stop") + b"data: [DONE]\n\n"})
            return
        if kind in ("big", "chunked"):
            answer = completion(model, "x" * (int(size) * MIB))
        elif body.get("stream"):
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream")]})
            await send({"type": "http.response.body", "body": chunk(model, {"role": "assistant", "content": "ok"})
                        + chunk(model, {}, "stop") + b"data: [DONE]\n\n"})
            return
        else:
            answer = completion(model, "small answer")
        headers = [(b"content-type", b"application/json")]
        if kind != "chunked":
            headers.append((b"content-length", str(len(answer)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for start in range(0, len(answer), PIECE):
            await send({"type": "http.response.body", "body": answer[start:start + PIECE], "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    def start(self) -> BigUpstream:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._server = uvicorn.Server(uvicorn.Config(self, log_config=None, log_level="warning", access_log=False,
                                                     lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        while not self._server.started:
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)


@pytest.fixture(scope="module")
def big() -> Iterator[BigUpstream]:
    server = BigUpstream().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from conftest import launch_app

    server = launch_app(tmp_path_factory.mktemp("bounds"), env={"UPSTREAM_MAX_BODY_MIB": "2"})
    yield server
    server.stop()


def test_a_larger_answer_fails_over_to_the_next_channel(app: Any, big: BigUpstream) -> None:
    model = unique("m")
    first = app.add_channel(name=unique("big"), base_url=big.url("big-3"), models=[model], priority=10)
    second = app.add_channel(name=unique("ok"), base_url=big.url("ok"), models=[model], priority=1)
    answer = app.openai().chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == "small answer"
    [row] = wait_logs(app, 1, model_name=model)
    assert row["code"] == 200 and row["channel"] == second
    trail = row["attempts"]
    assert trail[0]["channel_id"] == first and trail[0]["code"] == 502
    assert "UPSTREAM_MAX_BODY_MIB" in trail[0]["error"]
    # the size is this call's, not the channel's health: the next call tries the big channel first again
    app.openai().chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    assert big.calls["big-3"] == 2


@pytest.mark.parametrize("name", ["big-3", "chunked-3"])
def test_alone_a_larger_answer_is_a_502_in_the_clients_shape(app: Any, big: BigUpstream, name: str) -> None:
    model = unique("m")
    app.add_channel(name=unique("big"), base_url=big.url(name), models=[model])
    with pytest.raises(openai.APIStatusError) as raised:
        app.openai().chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    assert raised.value.status_code == 502
    assert "UPSTREAM_MAX_BODY_MIB" in raised.value.body["message"]
    client = anthropic.Anthropic(base_url=app.url, api_key=app.admin_key, max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as raised_too:
        client.messages.create(model=model, max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert raised_too.value.status_code == 502
    assert raised_too.value.body["type"] == "error" and "UPSTREAM_MAX_BODY_MIB" in raised_too.value.body["error"][
        "message"]
    rows = wait_logs(app, 2, model_name=model)
    assert {r["code"] for r in rows} == {502}
    # a answer within the bound still passes: the same path with a 1 MiB answer
    small = unique("m")
    app.add_channel(name=unique("ok"), base_url=big.url(name.replace("3", "1")), models=[small])
    answer = app.openai().chat.completions.create(model=small, messages=[{"role": "user", "content": "hi"}])
    assert len(answer.choices[0].message.content) == MIB


def test_one_huge_stream_event_ends_the_stream_with_an_error_event(app: Any, big: BigUpstream) -> None:
    model = unique("m")
    app.add_channel(name=unique("event"), base_url=big.url("event-3"), models=[model])
    events = []
    with httpx.stream("POST", f"{app.url}/v1/chat/completions", headers=app.headers, timeout=60,
                      json={"model": model, "stream": True, "messages": [{"role": "user", "content": "hi"}]}) as r:
        assert r.status_code == 200
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"  # what came before the big event
    assert "UPSTREAM_MAX_BODY_MIB" in events[-1]["error"]["message"]  # then OpenAI's error shape, in-band
    [row] = wait_logs(app, 1, model_name=model)
    assert row["code"] == 502


def test_other_calls_are_answered_while_a_huge_event_arrives(tmp_path: Any, big: BigUpstream) -> None:
    """With the default bound (32 MiB), a 40 MiB event is read to the bound and refused; meanwhile, calls of
    another model keep being answered by the same gateway."""
    from conftest import launch_app

    server = launch_app(tmp_path)
    try:
        huge, small = unique("m"), unique("m")
        server.add_channel(name=unique("event"), base_url=big.url("event-40"), models=[huge])
        server.add_channel(name=unique("ok"), base_url=big.url("ok"), models=[small])
        done = threading.Event()
        answered_meanwhile = []

        def stream_huge() -> list[str]:
            with httpx.stream("POST", f"{server.url}/v1/chat/completions", headers=server.headers, timeout=120,
                              json={"model": huge, "stream": True,
                                    "messages": [{"role": "user", "content": "hi"}]}) as r:
                lines = [line for line in r.iter_lines() if line.startswith("data: {")]
            done.set()
            return lines

        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(stream_huge)
            with httpx.Client(headers=server.headers, timeout=30) as http:
                while not done.is_set():
                    r = http.post(f"{server.url}/v1/chat/completions",
                                  json={"model": small, "messages": [{"role": "user", "content": "hi"}]})
                    assert r.status_code == 200
                    if not done.is_set():
                        answered_meanwhile.append(r.headers["x-request-id"])
            lines = future.result()
        assert "UPSTREAM_MAX_BODY_MIB" in lines[-1]
        # over a second of arrival: a loop that stalls on the event answers a handful, a free one hundreds
        assert len(answered_meanwhile) >= 50, len(answered_meanwhile)
    finally:
        server.stop()


def test_the_setting_is_read_from_env_and_flag() -> None:
    import aiproxy_local as app_module

    assert app_module.Settings().upstream_max_body_mib == 32
    assert app_module.load_settings({"UPSTREAM_MAX_BODY_MIB": "5"}).upstream_max_body_mib == 5
    assert app_module.load_settings({}, ["--upstream-max-body-mib", "7"]).upstream_max_body_mib == 7
