"""A switchable fake provider for the channel-health tests: an OpenAI-style upstream whose behaviour the test
changes while the app runs, and that notices when the gateway goes away.

Each channel gets its own *name*, the first path segment of its base URL (``upstream.url("a")`` is
``http://127.0.0.1:PORT/a/v1``); any path below it is answered (OpenAI and Azure paths alike). The test sets what a
name answers with ``upstream.set("a", status=401, message="Incorrect API key provided: {key}")``; ``{key}`` is the
key the gateway sent (``Authorization: Bearer``, ``x-api-key`` or Azure's ``api-key``), as some providers quote it.

Behaviour fields (see ``Behaviour``): an error status with a message and a ``Retry-After``; a raw 200 body (garbage
or cut short JSON); a delay before answering (``hang``, which ends early when the gateway disconnects); streams of
``events`` chunks ``gap`` seconds apart, optionally with an in-band error event after ``error_after`` chunks.

Records per name: the requests (``requests(name)``), and the moments the gateway hung up on a request still under
way (``disconnects(name)``, ``time.time()`` values), observed through ASGI's ``http.disconnect``.
"""

from __future__ import annotations

import asyncio
import collections
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from fake_upstream import read_body


@dataclass
class Behaviour:
    status: int = 200
    message: str = "upstream error"  # of an error answer; "{key}" becomes the key the gateway sent
    code: str | None = None  # the OpenAI error code of an error answer
    retry_after: str = ""  # a Retry-After header on an error answer
    body: bytes | None = None  # a raw 200 body instead of a chat completion
    content_type: str = "application/json"
    hang: float = 0.0  # seconds before answering; a disconnect ends the wait
    events: int = 3  # content chunks of a stream
    gap: float = 0.0  # seconds between stream chunks
    error_after: int | None = None  # stream: an in-band error event (with `message`) after this many chunks


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    json: Any
    at: float = field(default_factory=time.time)

    @property
    def key(self) -> str:
        auth = self.headers.get("authorization", "")
        return auth[7:] if auth.lower().startswith("bearer ") else (
            self.headers.get("x-api-key") or self.headers.get("api-key") or "")


class HealthUpstream:
    def __init__(self) -> None:
        self.behaviours: dict[str, Behaviour] = {}
        self._requests: dict[str, list[Seen]] = collections.defaultdict(list)
        self._disconnects: dict[str, list[float]] = collections.defaultdict(list)
        self._lock = threading.Lock()
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # ---- the test's side ----

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}/v1"

    def host_url(self, name: str) -> str:
        """For channels whose adaptor adds the whole path (Azure)."""
        return f"http://127.0.0.1:{self.port}/{name}"

    def set(self, name: str, **behaviour: Any) -> None:
        self.behaviours[name] = Behaviour(**behaviour)

    def requests(self, name: str) -> list[Seen]:
        with self._lock:
            return list(self._requests[name])

    def disconnects(self, name: str) -> list[float]:
        with self._lock:
            return list(self._disconnects[name])

    def start(self) -> HealthUpstream:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self, log_config=None, log_level="warning", access_log=False, http="h11",
                                lifespan="off", timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("health upstream did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(timeout=5)

    # ---- the ASGI app ----

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        name = scope["path"].strip("/").split("/", 1)[0]
        raw = await read_body(receive)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        seen = Seen(scope["path"], {k.decode(): v.decode() for k, v in scope["headers"]}, body)
        with self._lock:
            self._requests[name].append(seen)
        gone = asyncio.Event()
        watcher = asyncio.create_task(self._watch(receive, gone, name))
        try:
            await self._answer(self.behaviours.get(name, Behaviour()), seen, body, send, gone)
        finally:
            watcher.cancel()

    async def _watch(self, receive: Any, gone: asyncio.Event, name: str) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        with self._lock:
            self._disconnects[name].append(time.time())
        gone.set()

    async def _answer(self, b: Behaviour, seen: Seen, body: Any, send: Any, gone: asyncio.Event) -> None:
        if b.hang:
            try:
                await asyncio.wait_for(gone.wait(), b.hang)
                return  # the gateway went away
            except asyncio.TimeoutError:
                pass
        model = (body or {}).get("model", "m") if isinstance(body, dict) else "m"
        if b.status != 200:
            error = {"error": {"message": b.message.replace("{key}", seen.key), "type": "invalid_request_error",
                               "code": b.code}}
            headers = [(b"retry-after", b.retry_after.encode())] if b.retry_after else []
            return await _send(send, b.status, json.dumps(error).encode(), "application/json", headers)
        if b.body is not None:
            return await _send(send, 200, b.body, b.content_type)
        if isinstance(body, dict) and body.get("stream"):
            return await self._stream(b, seen, model, send, gone)
        answer = {"id": "chatcmpl-h", "object": "chat.completion", "created": 0, "model": model,
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": "healthy"},
                               "finish_reason": "stop"}],
                  "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}
        await _send(send, 200, json.dumps(answer).encode(), "application/json")

    async def _stream(self, b: Behaviour, seen: Seen, model: str, send: Any, gone: asyncio.Event) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        for i in range(b.events):
            if i and b.gap:
                try:
                    await asyncio.wait_for(gone.wait(), b.gap)
                    return
                except asyncio.TimeoutError:
                    pass
            if b.error_after is not None and i == b.error_after:
                error = {"error": {"message": b.message.replace("{key}", seen.key), "type": "server_error"}}
                await send({"type": "http.response.body", "body": b"data: " + json.dumps(error).encode() + b"\n\n",
                            "more_body": True})
                break
            chunk = {"id": "chatcmpl-h", "object": "chat.completion.chunk", "created": 0, "model": model,
                     "choices": [{"index": 0, "delta": {"content": f"w{i} "}, "finish_reason": None}]}
            await send({"type": "http.response.body", "body": b"data: " + json.dumps(chunk).encode() + b"\n\n",
                        "more_body": True})
        else:
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _send(send: Any, status: int, body: bytes, content_type: str,
                headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})
