"""A fake OpenAI-compatible provider for the aiproxy-local tests.

Behaviour is picked by a *scenario* prefix in the URL path, so each channel's base_url chooses it
without any shared state: a channel with base_url ``http://127.0.0.1:PORT/status-500+delay-200/v1``
gets ``/status-500+delay-200/v1/chat/completions`` calls. ``/v1/...`` (no prefix) means ``ok``.

Scenario segments, joined with ``+``:
    ok          no-op
    status-N    answer every endpoint with an OpenAI-shaped error and HTTP status N
    delay-N     wait N ms before answering (before the error, or before the stream headers)
    chunks-N    N content chunks in a stream, and N completion tokens (default 3)
    gap-N       wait N ms between stream chunks
    cut-N       stream only: send N content chunks, then drop the connection (no [DONE])
    nousage     no ``usage`` in JSON answers nor in streams

Usage is deterministic: ``prompt_tokens`` = whitespace words in the input text + 1 (see
``count_prompt_tokens``), ``completion_tokens`` = chunk count. The reply text is ``reply_text(n)``.
When ``stream_options.include_usage`` is true, chunks carry ``"usage": null`` as OpenAI does, and a final
``choices: []`` chunk carries the usage (unless ``nousage``).

Every request (except ``/_requests``) is recorded; ``GET /_requests`` lists them, ``DELETE /_requests`` clears.

Run standalone: ``python tests/fake_upstream.py --port 9999``; in tests use ``FakeUpstream``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

WORDS = ["Hello", "from", "the", "fake", "upstream", "model", "with", "some", "extra", "words"]
MODEL_IDS = ["gpt-4o-mini", "gpt-3.5-turbo", "text-embedding-3-small", "whisper-1", "tts-1", "dall-e-3"]
EMBEDDING_DIM = 8
SPEECH_PREFIX = b"ID3FAKEMP3"

_ERROR_KINDS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "permission_denied"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


# --------------------------------------------------------------------------------------------------------------
# Scenario parsing and deterministic helpers (importable by tests for assertions)
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    status: int = 200
    delay_ms: int = 0
    chunks: int = 3
    gap_ms: int = 0
    cut: int | None = None
    usage: bool = True


def parse_scenario(text: str) -> Scenario:
    """Parse ``ok+delay-200+chunks-4``; unknown segments raise ValueError so typos fail loudly."""
    fields: dict[str, Any] = {}
    numeric = {"status": "status", "delay": "delay_ms", "chunks": "chunks", "gap": "gap_ms", "cut": "cut"}
    for seg in filter(None, text.split("+")):
        if seg == "ok":
            continue
        if seg == "nousage":
            fields["usage"] = False
            continue
        name, _, value = seg.partition("-")
        if name not in numeric or not value.isdigit():
            raise ValueError(f"unknown scenario segment {seg!r}")
        fields[numeric[name]] = int(value)
    return Scenario(**fields)


def reply_text(chunks: int = 3) -> str:
    """The full assistant text for ``chunks`` chunks: the stream's content pieces concatenated."""
    return "".join(_chunk_word(i) for i in range(chunks))


def _chunk_word(i: int) -> str:
    word = WORDS[i % len(WORDS)]
    return word if i == 0 else " " + word


def _words(value: Any) -> int:
    """Whitespace words in every string nested in ``value`` (strings, lists of parts, dicts)."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(_words(v) for v in value)
    if isinstance(value, dict):
        # Only text-bearing keys count, so roles and part types do not inflate the number.
        return sum(_words(value.get(k)) for k in ("content", "text") if k in value)
    return 0


def count_prompt_tokens(body: dict[str, Any]) -> int:
    """prompt_tokens the fake reports: words in messages/prompt/input (+query/documents for rerank) + 1."""
    if "messages" in body:
        n = _words(body["messages"])
    elif "query" in body:
        n = _words(body.get("query")) + _words(body.get("documents", []))
    else:
        n = _words(body.get("prompt", body.get("input", "")))
    return n + 1


def embedding_vector(index: int) -> list[float]:
    return [round((index + 1) * 0.1 + j * 0.01, 4) for j in range(EMBEDDING_DIM)]


# --------------------------------------------------------------------------------------------------------------
# Request recording
# --------------------------------------------------------------------------------------------------------------


class Recorder:
    """Thread-safe list of received requests; the server thread appends while the test thread reads."""

    def __init__(self) -> None:
        self._items: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def add(self, item: dict[str, Any]) -> None:
        with self._lock:
            self._items.append(item)

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


class _CutConnection(Exception):
    """Raised after the response started: uvicorn then closes the socket, which is exactly an abrupt cut."""


class _QuietCuts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, _CutConnection)


def _quiet_cuts() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _QuietCuts) for f in logger.filters):
        logger.addFilter(_QuietCuts())


# --------------------------------------------------------------------------------------------------------------
# The ASGI app. Plain ASGI rather than a Starlette router: routing is by our own path convention, and
# streaming by hand lets ``cut-N`` abort the connection without framework middleware in the way.
# --------------------------------------------------------------------------------------------------------------


def _error(status: int, message: str) -> JSONResponse:
    err_type, code = _ERROR_KINDS.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
    return JSONResponse({"error": {"message": message, "type": err_type, "code": code}}, status_code=status)


def _split_path(path: str) -> tuple[str, str] | None:
    """``/<scenario>/v1/<endpoint>`` or ``/v1/<endpoint>`` -> (scenario, endpoint)."""
    parts = path.strip("/").split("/")
    if parts[:1] == ["v1"]:
        return "ok", "/".join(parts[1:])
    if len(parts) >= 2 and parts[1] == "v1":
        return parts[0], "/".join(parts[2:])
    return None


class FakeUpstreamApp:
    def __init__(self, recorder: Recorder | None = None) -> None:
        self.recorder = recorder or Recorder()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        if request.url.path.rstrip("/") == "/_requests":
            if request.method == "DELETE":
                self.recorder.clear()
            await JSONResponse(self.recorder.list())(scope, receive, send)
            return
        response = await self._handle(request, send)
        if response is not None:
            await response(scope, receive, send)

    async def _handle(self, request: Request, send: Send) -> Response | None:
        split = _split_path(request.url.path)
        body, form = await self._read_body(request)
        self.recorder.add(
            {
                "path": request.url.path,
                "query": str(request.url.query),
                "scenario": split[0] if split else None,
                "endpoint": split[1] if split else None,
                "method": request.method,
                "headers": dict(request.headers),
                "json": body,
                "form": form,
                "received_at": time.time(),
            }
        )
        if split is None:
            return _error(404, f"fake upstream: no route for {request.url.path}")
        try:
            sc = parse_scenario(split[0])
        except ValueError as exc:
            return _error(404, f"fake upstream: {exc}")
        if sc.delay_ms:
            await asyncio.sleep(sc.delay_ms / 1000)
        if sc.status != 200:
            return _error(sc.status, f"fake upstream error {sc.status}")
        endpoint = split[1]
        if request.method == "GET":
            if endpoint == "models":
                return JSONResponse({"object": "list", "data": [_model_obj(m) for m in MODEL_IDS]})
            if endpoint.startswith("models/"):
                return JSONResponse(_model_obj(endpoint.removeprefix("models/")))
            return _error(404, f"fake upstream: no GET {endpoint}")
        if endpoint in ("audio/transcriptions", "audio/translations"):
            if form is None or "file_size" not in form:
                return _error(400, "fake upstream: multipart 'file' is required")
            return JSONResponse({"text": f"fake transcript of {form['file_size']} bytes", **form})
        if body is None:
            return _error(400, "fake upstream: JSON body required")
        if body.get("stream") and endpoint in ("chat/completions", "completions"):
            await self._stream(send, sc, body, chat=endpoint == "chat/completions")
            return None
        handler = _JSON_HANDLERS.get(endpoint)
        if handler is None:
            return _error(404, f"fake upstream: unknown endpoint {endpoint}")
        return handler(body, sc)

    @staticmethod
    async def _read_body(request: Request) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        if request.method != "POST":
            return None, None
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            summary: dict[str, Any] = {}
            async with request.form() as form:
                for key, value in form.multi_items():
                    if isinstance(value, UploadFile):
                        summary["file_size"] = len(await value.read())
                        summary["file_name"] = value.filename
                    else:
                        summary[key] = value
            return None, summary
        raw = await request.body()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            return None, None
        return (parsed if isinstance(parsed, dict) else None), None

    @staticmethod
    async def _stream(send: Send, sc: Scenario, body: dict[str, Any], *, chat: bool) -> None:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        model = body.get("model")
        base = {
            "id": "chatcmpl-fake" if chat else "cmpl-fake",
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()),
            "model": model,
        }

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            payload = {**base, "choices": choices, **extra}
            if include_usage and "usage" not in payload:
                payload["usage"] = None
            return b"data: " + json.dumps(payload).encode() + b"\n\n"

        def choice(text: str | None, finish: str | None, first: bool = False) -> dict[str, Any]:
            if not chat:
                return {"index": 0, "text": text or "", "finish_reason": finish}
            delta: dict[str, Any] = {"role": "assistant"} if first else {}
            if text is not None:
                delta["content"] = text
            return {"index": 0, "delta": delta, "finish_reason": finish}

        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
            }
        )
        for i in range(sc.chunks):
            if sc.cut is not None and i >= sc.cut:
                raise _CutConnection
            if i and sc.gap_ms:
                await asyncio.sleep(sc.gap_ms / 1000)
            body_part = chunk([choice(_chunk_word(i), None, first=i == 0)])
            await send({"type": "http.response.body", "body": body_part, "more_body": True})
        if sc.cut is not None:
            raise _CutConnection
        tail = chunk([choice(None if chat else "", "stop")])
        if include_usage and sc.usage:
            tail += chunk([], usage=_usage(body, sc.chunks))
        await send({"type": "http.response.body", "body": tail + b"data: [DONE]\n\n", "more_body": False})


def _model_obj(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 1700000000, "owned_by": "fake-upstream"}


def _usage(body: dict[str, Any], completion: int) -> dict[str, int]:
    prompt = count_prompt_tokens(body)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _with_usage(payload: dict[str, Any], sc: Scenario, usage: dict[str, int]) -> JSONResponse:
    if sc.usage:
        payload["usage"] = usage
    return JSONResponse(payload)


def _inputs(body: dict[str, Any]) -> list[Any]:
    value = body.get("input", "")
    return value if isinstance(value, list) else [value]


def _chat(body: dict[str, Any], sc: Scenario) -> JSONResponse:
    message = {"role": "assistant", "content": reply_text(sc.chunks)}
    payload = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model"),
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
    }
    return _with_usage(payload, sc, _usage(body, sc.chunks))


def _completions(body: dict[str, Any], sc: Scenario) -> JSONResponse:
    payload = {
        "id": "cmpl-fake",
        "object": "text_completion",
        "created": int(time.time()),
        "model": body.get("model"),
        "choices": [{"index": 0, "text": reply_text(sc.chunks), "finish_reason": "stop"}],
    }
    return _with_usage(payload, sc, _usage(body, sc.chunks))


def _embeddings(body: dict[str, Any], sc: Scenario) -> JSONResponse:
    # The openai SDK asks for base64 by default, so both encodings must work.
    as_b64 = body.get("encoding_format") == "base64"
    data = []
    for i, _ in enumerate(_inputs(body)):
        vec = embedding_vector(i)
        emb: Any = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode() if as_b64 else vec
        data.append({"object": "embedding", "index": i, "embedding": emb})
    prompt = count_prompt_tokens(body)
    payload = {"object": "list", "model": body.get("model"), "data": data}
    return _with_usage(payload, sc, {"prompt_tokens": prompt, "total_tokens": prompt})


def _rerank(body: dict[str, Any], sc: Scenario) -> JSONResponse:
    docs = body.get("documents") or []
    results = [{"index": i, "relevance_score": round(1 / (i + 1), 4)} for i in range(len(docs))]
    if body.get("top_n"):
        results = results[: int(body["top_n"])]
    prompt = count_prompt_tokens(body)
    payload = {"id": "rerank-fake", "model": body.get("model"), "results": results}
    return _with_usage(payload, sc, {"prompt_tokens": prompt, "total_tokens": prompt})


def _moderations(body: dict[str, Any], sc: Scenario) -> JSONResponse:
    result = {"flagged": False, "categories": {"violence": False}, "category_scores": {"violence": 0.001}}
    return JSONResponse({"id": "modr-fake", "model": body.get("model"), "results": [result for _ in _inputs(body)]})


def _images(body: dict[str, Any], sc: Scenario) -> JSONResponse:
    n = int(body.get("n") or 1)
    data = [{"url": f"https://fake-upstream.invalid/image-{i}.png"} for i in range(n)]
    return JSONResponse({"created": int(time.time()), "data": data})


def _speech(body: dict[str, Any], sc: Scenario) -> Response:
    return Response(SPEECH_PREFIX + str(body.get("input", "")).encode(), media_type="audio/mpeg")


_JSON_HANDLERS = {
    "chat/completions": _chat,
    "completions": _completions,
    "embeddings": _embeddings,
    "rerank": _rerank,
    "moderations": _moderations,
    "images/generations": _images,
    "audio/speech": _speech,
}


# --------------------------------------------------------------------------------------------------------------
# Running it: in a background thread for tests, or as a script
# --------------------------------------------------------------------------------------------------------------


class FakeUpstream:
    """The fake served by uvicorn in a daemon thread on a free loopback port."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.app = FakeUpstreamApp()
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, scenario: str = "ok") -> str:
        """Base URL for a channel, e.g. ``http://127.0.0.1:PORT/status-500/v1``."""
        return f"{self.base}/{scenario}/v1"

    def start(self, timeout: float = 10.0) -> FakeUpstream:
        _quiet_cuts()
        # Binding the socket ourselves gives the port up front with no pick-then-bind race.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_config=None,
            log_level="warning",
            access_log=False,
            http="h11",
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("fake upstream did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def requests(self, scenario: str | None = None) -> list[dict[str, Any]]:
        """Recorded requests, oldest first; optionally only those for one scenario prefix."""
        items = self.app.recorder.list()
        return [r for r in items if r["scenario"] == scenario] if scenario is not None else items

    def clear(self) -> None:
        self.app.recorder.clear()

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9999)
    args = parser.parse_args()
    _quiet_cuts()
    print(f"fake upstream: http://{args.host}:{args.port}/<scenario>/v1")
    uvicorn.run(FakeUpstreamApp(), host=args.host, port=args.port, http="h11", lifespan="off", log_level="warning")


if __name__ == "__main__":
    main()
