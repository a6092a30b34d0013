"""Upstream client: the relay's own HTTP/1.1 client (UpstreamPool) against upstreams that answer in the ways HTTP/1.1
allows and in ways it does not: gzip, a body that ends when the connection closes, an interim 100 answer, a
keep-alive connection the upstream closes while idle, an answer cut short, bytes that are not HTTP, an answer larger
than a client reads at once.

The upstream here is a raw socket server (uvicorn always answers the same, well-behaved way), so each test decides the
exact bytes an upstream sends. The gateway runs as a real process and is called with the official openai SDK; the
pool's own bookkeeping is checked in process, over real sockets.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
import time
import zlib
from typing import Any

import openai
import pytest

import aiproxy_local as app
from conftest import unique, wait_logs

MESSAGES = [{"role": "user", "content": "hello"}]


def chat_answer(model: str, text: str = "wire ok") -> bytes:
    return json.dumps({"id": "chatcmpl-wire", "object": "chat.completion", "created": 1, "model": model,
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                    "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4}}).encode()


class WireUpstream:
    """A socket server answering POST /<scenario>/v1/chat/completions with bytes chosen by the scenario. It counts
    connections and requests, and reads requests as HTTP/1.1 keep-alive ones (head, then Content-Length bytes)."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests: list[dict[str, Any]] = []
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    def url(self, scenario: str) -> str:
        return f"http://127.0.0.1:{self.port}/{scenario}/v1"

    def stop(self) -> None:
        async def close() -> None:
            self.server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if line)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                path = lines[0].split(" ")[1]
                self.requests.append({"path": path, "headers": headers, "json": json.loads(body or b"{}")})
                scenario = path.split("/")[1]
                if not await getattr(self, "answer_" + scenario.replace("-", "_"))(writer, self.requests[-1]["json"]):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @staticmethod
    async def send(writer: asyncio.StreamWriter, data: bytes, head: bytes = b"Content-Type: application/json\r\n",
                   length: int | None = None) -> None:
        """A 200 with `head`'s header lines and a Content-Length (of `data` unless `length` says otherwise)."""
        writer.write(b"HTTP/1.1 200 OK\r\n%sContent-Length: %d\r\n\r\n%s"
                     % (head, len(data) if length is None else length, data))
        await writer.drain()

    # each answers one request; True keeps the connection for the next one
    async def answer_ok(self, writer: asyncio.StreamWriter, body: dict) -> bool:
        await self.send(writer, chat_answer(body["model"]))
        return True

    async def answer_gzip(self, writer: asyncio.StreamWriter, body: dict) -> bool:
        data = gzip.compress(chat_answer(body["model"], "wire gzip"))
        await self.send(writer, data, b"Content-Type: application/json\r\nContent-Encoding: gzip\r\n")
        return True

    async def answer_deflate(self, writer: asyncio.StreamWriter, body: dict) -> bool:  # zlib-wrapped (RFC 9110)
        data = zlib.compress(chat_answer(body["model"], "wire deflate"))
        await self.send(writer, data, b"Content-Type: application/json\r\nContent-Encoding: deflate\r\n")
        return True

    async def answer_raw_deflate(self, writer: asyncio.StreamWriter, body: dict) -> bool:  # as some servers send it
        packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        data = packer.compress(chat_answer(body["model"], "wire raw deflate")) + packer.flush()
        await self.send(writer, data, b"Content-Type: application/json\r\nContent-Encoding: deflate\r\n")
        return True

    async def answer_empty_gzip(self, writer: asyncio.StreamWriter, body: dict) -> bool:  # no byte to inflate
        await self.send(writer, b"", b"Content-Encoding: gzip\r\n")
        return True

    async def answer_until_close(self, writer: asyncio.StreamWriter, body: dict) -> bool:
        data = chat_answer(body["model"], "wire until close")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n" + data[:20])
        await writer.drain()
        await asyncio.sleep(0.05)  # the body arrives in two parts, then the close ends it
        writer.write(data[20:])
        await writer.drain()
        return False

    async def answer_interim(self, writer: asyncio.StreamWriter, body: dict) -> bool:
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.02)
        return await self.answer_ok(writer, body)

    async def answer_idle_close(self, writer: asyncio.StreamWriter, body: dict) -> bool:
        await self.answer_ok(writer, body)
        await asyncio.sleep(0.05)  # a keep-alive answer, then the upstream's idle timeout closes the connection
        return False

    async def answer_cut(self, writer: asyncio.StreamWriter, body: dict) -> bool:
        data = chat_answer(body["model"])
        await self.send(writer, data[:len(data) // 2], length=len(data))
        return False

    async def answer_garbage(self, writer: asyncio.StreamWriter, body: dict) -> bool:
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\nthis is not http at all\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.2)
        return False

    async def answer_large(self, writer: asyncio.StreamWriter, body: dict) -> bool:
        await self.send(writer, bytes(range(256)) * (8 * 1024), b"Content-Type: application/octet-stream\r\n")  # 2 MiB
        return True


@pytest.fixture(scope="module")
def wire():
    server = WireUpstream()
    yield server
    server.stop()


@pytest.fixture
async def pool():
    """The relay's upstream client, in this test's event loop, over real sockets."""
    pool = app.UpstreamPool(5, 5)
    yield pool
    pool.close()


def ask(app_server, model: str) -> str:
    return app_server.openai().chat.completions.create(model=model, messages=MESSAGES).choices[0].message.content


def test_calls_reuse_one_connection(app_server, wire):
    model = unique("wire-ok")
    app_server.add_channel(base_url=wire.url("ok"), models=[model])
    ask(app_server, model)
    before = wire.connections
    assert [ask(app_server, model) for _ in range(5)] == ["wire ok"] * 5
    assert wire.connections == before, "five calls in a row go over the connection the first one opened"
    sent = wire.requests[-1]["headers"]
    assert sent["authorization"] == "Bearer sk-fake" and sent["content-type"] == "application/json"
    assert sent["host"] == f"127.0.0.1:{wire.port}" and sent["content-length"].isdigit()


@pytest.mark.parametrize("scenario, text", [("gzip", "wire gzip"), ("deflate", "wire deflate"),
                                            ("raw-deflate", "wire raw deflate"),
                                            ("until-close", "wire until close"), ("interim", "wire ok")])
def test_answers_http_allows_reach_the_client_whole(app_server, wire, scenario, text):
    """A gzip or deflate body (zlib-wrapped or raw) is inflated, a body without a length ends at the close, an
    interim 100 is skipped."""
    model = unique(f"wire-{scenario}")
    app_server.add_channel(base_url=wire.url(scenario), models=[model])
    assert ask(app_server, model) == text
    assert ask(app_server, model) == text  # and again: a connection it could not keep was not kept
    rows = wait_logs(app_server, total=2, model_name=model)
    assert all(row["code"] == 200 and row["usage"]["output_tokens"] == 2 for row in rows)


def test_a_connection_the_upstream_closed_while_idle_is_not_used_again(app_server, wire):
    model = unique("wire-idle")
    app_server.add_channel(base_url=wire.url("idle-close"), models=[model])
    assert ask(app_server, model) == "wire ok"  # perhaps over a connection an earlier test left open
    time.sleep(0.3)  # the upstream has closed it by now
    before = wire.connections
    for _ in range(2):
        assert ask(app_server, model) == "wire ok"
        time.sleep(0.3)
    assert wire.connections - before == 2, "each call opened a connection: the one closed while idle was not used"
    rows = wait_logs(app_server, total=3, model_name=model)
    assert {row["code"] for row in rows} == {200} and all(row["retry_times"] == 0 for row in rows)


@pytest.mark.parametrize("scenario", ["cut", "garbage"])
def test_a_broken_answer_fails_over_and_is_logged(app_server, wire, scenario):
    """Half an answer, or bytes that are not HTTP: the call fails over to the next channel before the client sees a
    byte, and the trail says why."""
    model = unique(f"wire-{scenario}")
    broken = app_server.add_channel(base_url=wire.url(scenario), models=[model], priority=10)
    app_server.add_channel(base_url=wire.url("ok"), models=[model], priority=1)
    assert ask(app_server, model) == "wire ok"
    (row,) = wait_logs(app_server, total=1, model_name=model)
    assert row["code"] == 200 and row["retry_times"] == 1
    first = row["attempts"][0]
    why = "broke off" if scenario == "cut" else "answered with something that is not HTTP"
    assert first["channel_id"] == broken and first["code"] == 502 and why in first["error"]


def test_one_broken_channel_alone_answers_502_in_openais_shape(app_server, wire):
    model = unique("wire-alone")
    app_server.add_channel(base_url=wire.url("garbage"), models=[model])
    with pytest.raises(openai.APIStatusError) as failed:
        ask(app_server, model)
    assert failed.value.status_code == 502 and "answered with something that is not HTTP" in failed.value.message


async def test_reading_pauses_while_an_answer_waits_to_be_read(wire, pool):
    """An upstream that sends faster than the gateway's client reads is held back by TCP, not by memory: the pool
    stops reading past UPSTREAM_HIGH_WATER, reads on once the pipeline takes the bytes, and the answer arrives whole."""
    body = json.dumps({"model": "m"}).encode()
    answer = await pool.post(wire.url("large") + "/chat/completions", body, {"Content-Type": "application/json"},
                             {}, fallback=None)
    await asyncio.sleep(0.3)  # the upstream sent everything; the client has read nothing yet
    # at most one read (256 KiB, the event loop's read size) lands past the mark; of 2 MiB sent
    assert answer.status == 200 and answer.paused and answer.held <= 2 * app.UPSTREAM_HIGH_WATER
    data = await app.read_answer(answer, 64)  # the pipeline's own reader
    assert data == bytes(range(256)) * (8 * 1024)
    answer.release()
    assert len(pool.idle[("http", "127.0.0.1", wire.port, True)]) == 1, "read whole: kept for the next call"


async def test_an_empty_encoded_answer_reads_empty(wire, pool):
    answer = await pool.post(wire.url("empty-gzip") + "/x", b"{}", {}, {}, fallback=None)
    assert answer.status == 200 and await answer.readany() == b""


async def test_an_answer_released_before_its_end_closes_its_connection(wire, pool):
    answer = await pool.post(wire.url("large") + "/chat/completions", b'{"model":"m"}', {}, {}, fallback=None)
    assert await answer.readany()
    answer.release()  # a client that hung up: the upstream must stop sending
    connection = answer.connection
    assert connection.closed and not pool.idle.get(connection.key) and connection not in pool.open


async def test_what_the_client_cannot_send_as_it_is_goes_through_aiohttp(wire, pool):
    """A target that needs quoting, or a header value with a line break, is aiohttp's to send (or refuse)."""
    assert app._upstream_target("http://127.0.0.1:1/v1/models/a b:generateContent") is None
    assert app._upstream_target("http://user:pw@127.0.0.1:1/v1") is None
    target = app._upstream_target("https://example.com/v1/chat?x=1")
    assert target == ("https", "example.com", 443, b"POST /v1/chat?x=1 HTTP/1.1\r\nHost: example.com\r\n")
    assert app._request_head(target, {"Authorization": "Bearer a\r\nX-Injected: 1"}, 2) is None

    class Fallback:
        async def post(self, url, **kw):
            return ("aiohttp", url, kw["headers"])

    url = wire.url("ok") + "/chat/completions"
    bad = {"Authorization": "Bearer a\nb"}
    assert await pool.post(url, b"{}", bad, {}, Fallback()) == ("aiohttp", url, bad)
    assert (await pool.post(url, b"{}", {}, {"proxy": "http://p:1"}, Fallback()))[0] == "aiohttp"
