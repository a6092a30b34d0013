"""A fake model provider for the aiproxy-local tests, speaking several providers' wire formats.

It dispatches by the shape of the path, the way each real provider is called:

    /<scenario>/v1/<endpoint>                          OpenAI: chat/completions, responses, embeddings, ...
    /<scenario>/v1/messages, /v1/messages/count_tokens  Anthropic Messages (base URL .../v1, as api.anthropic.com/v1)
    /<scenario>/openai/deployments/<name>/<endpoint>   Azure OpenAI: OpenAI bodies, `api-key` header, ?api-version=
    /<scenario>/v1beta/models/<model>:<method>         Gemini: generateContent, streamGenerateContent (alt=sse),
                                                       countTokens, embedContent, batchEmbedContents;
    /<scenario>/v1beta/models                          and GET, its model list

Behaviour is picked by the *scenario* prefix, so each channel's base_url chooses it without any shared state: a
channel with base_url ``http://127.0.0.1:PORT/status-500+delay-200/v1`` gets ``/status-500+delay-200/v1/...``
calls. No prefix means ``ok``.

Scenario segments, joined with ``+``:
    ok            no-op
    status-N      answer every endpoint with the format's error shape and HTTP status N
    delay-N       wait N ms before answering (before the error, or before the stream headers)
    chunks-N      N content chunks in a stream, and N completion tokens (default 3)
    gap-N         wait N ms between stream chunks
    cut-N         stream only: send N content chunks, then drop the connection (no closing event)
    error-N       stream only: send N content chunks, then an in-band error event (Anthropic's ``overloaded_error``,
                  Gemini's UNAVAILABLE, the Responses ``error`` event)
    nousage       no usage in JSON answers nor in streams
    tool          answer with a call of the request's first tool (unless the last turn is that tool's result)
    thinking      OpenAI format: a ``reasoning_content`` before the answer, as DeepSeek's reasoner sends it;
                  Responses: a reasoning item; Gemini: a thought part (also whenever the request sets
                  ``thinkingConfig.includeThoughts``; the Anthropic format thinks whenever the request enables
                  ``thinking``, as Claude does)
    cacheread-N   report N prompt tokens read from the cache (OpenAI ``cached_tokens``, Anthropic cache reads,
                  Gemini ``cachedContentTokenCount``)
    cachewrite-N  Anthropic only: report N prompt tokens written to the cache

Usage is deterministic: the prompt count is the whitespace words of the input text + 1 (``count_prompt_tokens``),
the completion count is the chunk count, and the reply text is ``reply_text(n)``. In the OpenAI format, when
``stream_options.include_usage`` is true, chunks carry ``"usage": null`` and a final ``choices: []`` chunk carries
the usage. Anthropic's input_tokens excludes cached tokens, as the real API's does. Gemini counts the words of the
text parts (``gemini_prompt_tokens``), Responses those of the instructions, earlier turns and input
(``responses_prompt_tokens``).

Each format validates what its real API rejects (Anthropic: the x-api-key and anthropic-version headers,
max_tokens, user/assistant turns that alternate, tool results that answer the tool calls before them; OpenAI: tool
messages that answer a tool call; Azure: the api-key header and api-version; Gemini: the x-goog-api-key header,
user/model roles, function responses that answer the turn's calls, a thought signature on a gemini-3 model's calls,
the Schema keywords it knows; Responses: flat function tools, function outputs that answer a call, a
previous_response_id it stored, reasoning item ids it gave out), so a wrong conversion fails loudly.

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
GEMINI_MODEL_IDS = ["gemini-2.5-flash", "gemini-2.5-pro", "gemini-embedding-001"]  # GET /v1beta/models
EMBEDDING_DIM = 8
SPEECH_PREFIX = b"ID3FAKEMP3"
TOOL_INPUT = {"location": "San Francisco, CA"}  # the tool call of Anthropic's get_weather example
TOOL_INPUT_PIECES = ['{"location": ', '"San Francisco, CA"}']  # streamed arguments, as partial JSON
THINKING_PIECES = ["Let me think", " step by step."]
THINKING_SIGNATURE = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"

_ERROR_KINDS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "permission_denied"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}
_ANTHROPIC_ERRORS = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                     404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                     500: "api_error", 529: "overloaded_error"}
_ANTHROPIC_BLOCKS = {"text", "image", "tool_use", "tool_result", "thinking", "redacted_thinking", "document"}


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
    error: int | None = None
    usage: bool = True
    tool: bool = False
    thinking: bool = False
    cache_read: int = 0
    cache_write: int = 0


def parse_scenario(text: str) -> Scenario:
    """Parse ``ok+delay-200+chunks-4``; unknown segments raise ValueError so typos fail loudly."""
    fields: dict[str, Any] = {}
    numeric = {"status": "status", "delay": "delay_ms", "chunks": "chunks", "gap": "gap_ms", "cut": "cut",
               "error": "error", "cacheread": "cache_read", "cachewrite": "cache_write"}
    flags = {"nousage": ("usage", False), "tool": ("tool", True), "thinking": ("thinking", True)}
    for seg in filter(None, text.split("+")):
        if seg == "ok":
            continue
        if seg in flags:
            name, value = flags[seg]
            fields[name] = value
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
    """The prompt count the fake reports: words in system/messages/prompt/input (+query/documents) + 1."""
    if "messages" in body:
        n = _words(body["messages"]) + _words(body.get("system"))
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
# Paths: which provider format a request is in
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    scenario: str
    format: str  # "openai", "anthropic", "azure" or "gemini"
    endpoint: str  # e.g. "chat/completions", "messages", "messages/count_tokens", "gemini-2.5-flash:generateContent"
    deployment: str | None = None  # Azure only


def split_path(path: str) -> Route | None:
    parts = path.strip("/").split("/")
    scenario = "ok"
    if parts and parts[0] not in ("v1", "openai", "v1beta"):
        scenario, parts = parts[0], parts[1:]
    if parts[:1] == ["v1"]:
        endpoint = "/".join(parts[1:])
        return Route(scenario, "anthropic" if endpoint.startswith("messages") else "openai", endpoint)
    if parts[:2] == ["openai", "deployments"] and len(parts) >= 4:
        return Route(scenario, "azure", "/".join(parts[3:]), parts[2])
    if parts[:2] == ["v1beta", "models"] and len(parts) <= 3:
        return Route(scenario, "gemini", parts[2] if len(parts) == 3 else "models")
    return None


def _error(status: int, message: str, fmt: str = "openai") -> JSONResponse:
    if fmt == "gemini":
        return _gemini_error(status, message)
    if fmt == "anthropic":
        kind = _ANTHROPIC_ERRORS.get(status, "api_error" if status >= 500 else "invalid_request_error")
        return JSONResponse({"type": "error", "error": {"type": kind, "message": message}}, status_code=status)
    err_type, code = _ERROR_KINDS.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
    return JSONResponse({"error": {"message": message, "type": err_type, "code": code}}, status_code=status)


class _BadRequest(Exception):
    """What the real API would refuse: answered as a 400 in the format's error shape."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


# --------------------------------------------------------------------------------------------------------------
# The ASGI app. Plain ASGI rather than a Starlette router: routing is by our own path convention, and
# streaming by hand lets ``cut-N`` abort the connection without framework middleware in the way.
# --------------------------------------------------------------------------------------------------------------


class FakeUpstreamApp:
    def __init__(self, recorder: Recorder | None = None) -> None:
        self.recorder = recorder or Recorder()
        self.responses = ResponsesMemory()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        scope["fake_upstream"] = self
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
        route = split_path(request.url.path)
        body, form = await self._read_body(request)
        self.recorder.add(
            {
                "path": request.url.path,
                "query": str(request.url.query),
                "scenario": route.scenario if route else None,
                "format": route.format if route else None,
                "endpoint": route.endpoint if route else None,
                "deployment": route.deployment if route else None,
                "method": request.method,
                "headers": dict(request.headers),
                "json": body,
                "form": form,
                "received_at": time.time(),
            }
        )
        if route is None:
            return _error(404, f"fake upstream: no route for {request.url.path}")
        try:
            sc = parse_scenario(route.scenario)
        except ValueError as exc:
            return _error(404, f"fake upstream: {exc}", route.format)
        if sc.delay_ms:
            await asyncio.sleep(sc.delay_ms / 1000)
        if sc.status != 200:
            return _error(sc.status, f"fake upstream error {sc.status}", route.format)
        handler = {"openai": _openai, "azure": _azure, "anthropic": _anthropic, "gemini": _gemini}[route.format]
        try:
            return await handler(request, route, sc, body, form, send)
        except _BadRequest as exc:
            return _error(exc.status, str(exc), route.format)
        except (AttributeError, TypeError, KeyError, IndexError, ValueError) as exc:
            # a body of the wrong shape (`messages: [null]`): every real API answers it with a 400, never a 500
            return _error(400, f"fake upstream: invalid request body ({type(exc).__name__}: {exc})", route.format)

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


async def read_body(receive: Any) -> bytes:
    """A raw ASGI request's whole body (the upstreams that speak ASGI directly, not through Starlette)."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def _start_sse(send: Send) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})


async def _send_event(send: Send, data: bytes, more: bool = True) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": more})


async def _pause(sc: Scenario, i: int) -> None:
    if i and sc.gap_ms:
        await asyncio.sleep(sc.gap_ms / 1000)


# --------------------------------------------------------------------------------------------------------------
# OpenAI (and Azure, which takes the same bodies at deployment URLs)
# --------------------------------------------------------------------------------------------------------------


async def _openai(request: Request, route: Route, sc: Scenario, body: dict[str, Any] | None,
                  form: dict[str, Any] | None, send: Send) -> Response | None:
    endpoint = route.endpoint
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
    if endpoint == "responses":
        return await _responses(request, sc, body, send)
    if endpoint == "chat/completions":
        _check_openai_messages(body)
    if body.get("stream") and endpoint in ("chat/completions", "completions"):
        await _openai_stream(send, sc, body, chat=endpoint == "chat/completions")
        return None
    handler = _JSON_HANDLERS.get(endpoint)
    if handler is None:
        return _error(404, f"fake upstream: unknown endpoint {endpoint}")
    return handler(body, sc)


async def _azure(request: Request, route: Route, sc: Scenario, body: dict[str, Any] | None,
                 form: dict[str, Any] | None, send: Send) -> Response | None:
    if not request.headers.get("api-key"):
        return JSONResponse({"error": {"code": "401", "message": "Access denied due to invalid subscription key. "
                                       "Make sure to provide a valid key for an active subscription."}},
                            status_code=401)
    if not request.query_params.get("api-version"):
        return JSONResponse({"error": {"code": "404", "message": "Resource not found"}}, status_code=404)
    return await _openai(request, route, sc, body, form, send)


def _check_openai_messages(body: dict[str, Any]) -> None:
    open_calls: set[str] = set()
    for i, message in enumerate(body.get("messages") or []):
        role = message.get("role")
        if role not in ("system", "developer", "user", "assistant", "tool"):
            raise _BadRequest(f"messages[{i}].role: invalid value {role!r}")
        if role == "assistant":
            open_calls = {c["id"] for c in message.get("tool_calls") or []}
        elif role == "tool":
            if message.get("tool_call_id") not in open_calls:
                raise _BadRequest("messages with role 'tool' must be a response to a preceeding message with "
                                  "'tool_calls'.")
        else:
            open_calls = set()


def _wants_tool_call(body: dict[str, Any], sc: Scenario, last_role_of_result: str) -> dict[str, Any] | None:
    """The tool to call: the request's first, unless the last turn already carries a tool's result."""
    tools = body.get("tools") or []
    if not (sc.tool and tools):
        return None
    messages = body.get("messages") or []
    last = messages[-1] if messages else {}
    if last.get("role") == last_role_of_result:
        content = last.get("content")
        if last_role_of_result == "tool" or (isinstance(content, list)
                                             and any(b.get("type") == "tool_result" for b in content)):
            return None
    return tools[0]


def _tool_name(tool: dict[str, Any]) -> str:
    return tool.get("name") or (tool.get("function") or {}).get("name") or "tool"


async def _openai_stream(send: Send, sc: Scenario, body: dict[str, Any], *, chat: bool) -> None:
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    base = {
        "id": "chatcmpl-fake" if chat else "cmpl-fake",
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": int(time.time()),
        "model": body.get("model"),
    }

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        payload = {**base, "choices": choices, **extra}
        if include_usage and "usage" not in payload:
            payload["usage"] = None
        return b"data: " + json.dumps(payload).encode() + b"\n\n"

    def choice(finish: str | None = None, **delta: Any) -> dict[str, Any]:
        if not chat:
            return {"index": 0, "text": delta.get("content") or "", "finish_reason": finish}
        return {"index": 0, "delta": delta, "finish_reason": finish}

    await _start_sse(send)
    tool = _wants_tool_call(body, sc, "tool") if chat else None
    if tool is not None:
        call = {"index": 0, "id": "call_fake_1", "type": "function", "function": {"name": _tool_name(tool),
                                                                                 "arguments": ""}}
        await _send_event(send, chunk([choice(role="assistant", content=None, tool_calls=[call])]))
        for i, piece in enumerate(TOOL_INPUT_PIECES):
            await _pause(sc, i + 1)
            await _send_event(send, chunk([choice(tool_calls=[{"index": 0, "function": {"arguments": piece}}])]))
        finish = "tool_calls"
    else:
        first = {"role": "assistant"} if chat else {}
        if sc.thinking and chat:
            for i, piece in enumerate(THINKING_PIECES):
                await _send_event(send, chunk([choice(**({**first, "reasoning_content": piece} if i == 0
                                                         else {"reasoning_content": piece}))]))
            first = {}
        for i in range(sc.chunks):
            if sc.cut is not None and i >= sc.cut:
                raise _CutConnection
            if sc.error is not None and i >= sc.error:
                await _send_event(send, b'data: {"error": {"message": "Overloaded", "type": "server_error"}}\n\n',
                                  more=False)
                return
            await _pause(sc, i)
            await _send_event(send, chunk([choice(**first, content=_chunk_word(i))]))
            first = {}
        if sc.cut is not None:
            raise _CutConnection
        finish = "stop"
    tail = chunk([choice(finish)])
    if include_usage and sc.usage:
        tail += chunk([], usage=_usage(body, sc.chunks, sc))
    await _send_event(send, tail + b"data: [DONE]\n\n", more=False)


def _model_obj(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 1700000000, "owned_by": "fake-upstream"}


def _usage(body: dict[str, Any], completion: int, sc: Scenario | None = None) -> dict[str, Any]:
    prompt = count_prompt_tokens(body)
    usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion,
                             "total_tokens": prompt + completion}
    if sc is not None and sc.cache_read:
        usage["prompt_tokens_details"] = {"cached_tokens": sc.cache_read}
    return usage


def _with_usage(payload: dict[str, Any], sc: Scenario, usage: dict[str, Any]) -> JSONResponse:
    if sc.usage:
        payload["usage"] = usage
    return JSONResponse(payload)


def _inputs(body: dict[str, Any]) -> list[Any]:
    value = body.get("input", "")
    return value if isinstance(value, list) else [value]


def _chat(body: dict[str, Any], sc: Scenario) -> JSONResponse:
    tool = _wants_tool_call(body, sc, "tool")
    if tool is not None:
        call = {"id": "call_fake_1", "type": "function",
                "function": {"name": _tool_name(tool), "arguments": "".join(TOOL_INPUT_PIECES)}}
        message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [call]}
        finish = "tool_calls"
    else:
        message = {"role": "assistant", "content": reply_text(sc.chunks)}
        if sc.thinking:
            message["reasoning_content"] = "".join(THINKING_PIECES)
        finish = "stop"
    payload = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model"),
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
    }
    return _with_usage(payload, sc, _usage(body, sc.chunks, sc))


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
# Anthropic Messages (modelled on the examples of docs.anthropic.com: text, system, images, tool use, thinking)
# --------------------------------------------------------------------------------------------------------------


async def _anthropic(request: Request, route: Route, sc: Scenario, body: dict[str, Any] | None,
                     form: dict[str, Any] | None, send: Send) -> Response | None:
    if not request.headers.get("x-api-key"):
        raise _BadRequest("x-api-key header is required", 401)
    if not request.headers.get("anthropic-version"):
        raise _BadRequest("anthropic-version: header is required")
    if request.method != "POST":
        return _error(405, f"fake upstream: {request.method} {route.endpoint} is not allowed", "anthropic")
    if body is None:
        raise _BadRequest("The request body is not valid JSON.")
    _check_anthropic_request(body, counting=route.endpoint == "messages/count_tokens")
    if route.endpoint == "messages/count_tokens":
        return JSONResponse({"input_tokens": count_prompt_tokens(body)})
    if route.endpoint != "messages":
        return _error(404, f"Not found: {route.endpoint}", "anthropic")
    blocks = _anthropic_blocks(body, sc)
    if body.get("stream"):
        await _anthropic_stream(send, sc, body, blocks)
        return None
    stop = "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"
    return JSONResponse({"id": "msg_fake", "type": "message", "role": "assistant", "model": body["model"],
                         "content": blocks, "stop_reason": stop, "stop_sequence": None,
                         "usage": _anthropic_usage(body, sc) if sc.usage else {"input_tokens": 0, "output_tokens": 0}})


def _check_anthropic_request(body: dict[str, Any], counting: bool) -> None:
    if not isinstance(body.get("model"), str):
        raise _BadRequest("model: Field required")
    if not counting and not isinstance(body.get("max_tokens"), int):
        raise _BadRequest("max_tokens: Field required")
    system = body.get("system")
    if system is not None and not isinstance(system, str) and not (
            isinstance(system, list) and all(b.get("type") == "text" for b in system)):
        raise _BadRequest("system: Input should be a valid string or a list of text blocks")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _BadRequest("messages: Field required")
    tool_ids: set[str] = set()
    for i, message in enumerate(messages):
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise _BadRequest(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        if i and messages[i - 1].get("role") == role:
            raise _BadRequest("messages: roles must alternate between \"user\" and \"assistant\", but found "
                              f"multiple \"{role}\" roles in a row")
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list):
            raise _BadRequest(f"messages.{i}.content: Input should be a valid list")
        results = [b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"]
        if results and (role != "user" or not set(results) <= tool_ids):
            raise _BadRequest(f"messages.{i}.content: unexpected `tool_use_id` found in `tool_result` blocks: each "
                              "`tool_result` block must have a corresponding `tool_use` block in the previous message.")
        tool_ids = {b.get("id") for b in blocks if b.get("type") == "tool_use"}
        for j, block in enumerate(blocks):
            _check_anthropic_block(block, f"messages.{i}.content.{j}")
    for i, tool in enumerate(body.get("tools") or []):
        if not tool.get("name") or (tool.get("input_schema") or {}).get("type") != "object":
            raise _BadRequest(f"tools.{i}: a custom tool needs a name and an input_schema of type object")
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled" and not counting:
        budget = thinking.get("budget_tokens")
        if not isinstance(budget, int) or budget < 1024 or budget >= body["max_tokens"]:
            raise _BadRequest("thinking.budget_tokens: must be >= 1024 and less than max_tokens")


def _check_anthropic_block(block: dict[str, Any], where: str) -> None:
    kind = block.get("type")
    if kind not in _ANTHROPIC_BLOCKS:
        raise _BadRequest(f"{where}.type: Input tag {kind!r} found using 'type' does not match any of the "
                          "expected tags")
    if kind == "image":
        source = block.get("source") or {}
        if not ((source.get("type") == "base64" and source.get("media_type") and source.get("data"))
                or (source.get("type") == "url" and source.get("url"))):
            raise _BadRequest(f"{where}.source: an image needs base64 data with its media_type, or a url")
    if kind == "tool_use" and not (block.get("id") and block.get("name") and isinstance(block.get("input"), dict)):
        raise _BadRequest(f"{where}: a tool_use block needs an id, a name and an input object")
    if kind == "thinking" and not block.get("signature"):
        raise _BadRequest(f"{where}.signature: Field required")


def _anthropic_blocks(body: dict[str, Any], sc: Scenario) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        blocks.append({"type": "thinking", "thinking": "".join(THINKING_PIECES), "signature": THINKING_SIGNATURE})
    tool = _wants_tool_call(body, sc, "user")
    if tool is not None:
        blocks.append({"type": "text", "text": "I'll check that."})
        blocks.append({"type": "tool_use", "id": "toolu_fake_1", "name": _tool_name(tool), "input": TOOL_INPUT})
    else:
        blocks.append({"type": "text", "text": reply_text(sc.chunks)})
    return blocks


def _anthropic_usage(body: dict[str, Any], sc: Scenario) -> dict[str, int]:
    return {"input_tokens": count_prompt_tokens(body), "cache_creation_input_tokens": sc.cache_write,
            "cache_read_input_tokens": sc.cache_read, "output_tokens": sc.chunks}


def _anthropic_event(kind: str, **data: Any) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()


async def _anthropic_stream(send: Send, sc: Scenario, body: dict[str, Any], blocks: list[dict[str, Any]]) -> None:
    """Anthropic's documented event order: message_start, then per block a start, deltas and a stop, then
    message_delta (stop reason, output usage) and message_stop; pings may come anywhere."""
    usage = _anthropic_usage(body, sc) if sc.usage else {"input_tokens": 0, "output_tokens": 0}
    message = {"id": "msg_fake", "type": "message", "role": "assistant", "model": body["model"], "content": [],
               "stop_reason": None, "stop_sequence": None, "usage": {**usage, "output_tokens": 1}}
    await _start_sse(send)
    await _send_event(send, _anthropic_event("message_start", message=message))
    await _send_event(send, _anthropic_event("ping"))
    for index, block in enumerate(blocks):
        kind = block["type"]
        if kind == "thinking":
            await _send_event(send, _anthropic_event("content_block_start", index=index,
                                                     content_block={"type": "thinking", "thinking": "",
                                                                    "signature": ""}))
            for piece in THINKING_PIECES:
                await _send_event(send, _anthropic_event("content_block_delta", index=index,
                                                         delta={"type": "thinking_delta", "thinking": piece}))
            await _send_event(send, _anthropic_event("content_block_delta", index=index, delta={
                "type": "signature_delta", "signature": THINKING_SIGNATURE}))
        elif kind == "tool_use":
            await _send_event(send, _anthropic_event("content_block_start", index=index, content_block={
                "type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}))
            for i, piece in enumerate(TOOL_INPUT_PIECES):
                await _pause(sc, i + 1)
                await _send_event(send, _anthropic_event("content_block_delta", index=index, delta={
                    "type": "input_json_delta", "partial_json": piece}))
        else:
            await _send_event(send, _anthropic_event("content_block_start", index=index,
                                                     content_block={"type": "text", "text": ""}))
            pieces = [_chunk_word(i) for i in range(sc.chunks)] if block["text"] == reply_text(sc.chunks) \
                else [block["text"]]
            for i, piece in enumerate(pieces):
                if sc.cut is not None and i >= sc.cut:
                    raise _CutConnection
                if sc.error is not None and i >= sc.error:
                    await _send_event(send, _anthropic_event("error", error={"type": "overloaded_error",
                                                                             "message": "Overloaded"}), more=False)
                    return
                await _pause(sc, i)
                await _send_event(send, _anthropic_event("content_block_delta", index=index, delta={
                    "type": "text_delta", "text": piece}))
            if sc.cut is not None:
                raise _CutConnection
        await _send_event(send, _anthropic_event("content_block_stop", index=index))
    stop = "tool_use" if blocks[-1]["type"] == "tool_use" else "end_turn"
    await _send_event(send, _anthropic_event("message_delta", delta={"stop_reason": stop, "stop_sequence": None},
                                             usage={"output_tokens": usage["output_tokens"]}))
    await _send_event(send, _anthropic_event("message_stop"), more=False)


# --------------------------------------------------------------------------------------------------------------
# Gemini (modelled on the examples of ai.google.dev/api: text, a system instruction, an image, a function call and
# its response, thought parts, countTokens and the embeddings)
# --------------------------------------------------------------------------------------------------------------

GEMINI_SIGNATURE = base64.b64encode(b"fake thought signature").decode()  # what the fake puts on its calls
_GEMINI_PART_KINDS = ("text", "inlineData", "fileData", "functionCall", "functionResponse")
_GEMINI_SCHEMA_KEYS = {"type", "format", "title", "description", "nullable", "enum", "items", "minItems", "maxItems",
                       "properties", "required", "minProperties", "maxProperties", "minLength", "maxLength",
                       "pattern", "example", "anyOf", "propertyOrdering", "default", "minimum", "maximum"}
_GEMINI_CONFIG_KEYS = {"temperature", "topP", "topK", "maxOutputTokens", "stopSequences", "candidateCount",
                       "presencePenalty", "frequencyPenalty", "seed", "responseMimeType", "responseSchema",
                       "responseJsonSchema", "thinkingConfig"}


def gemini_prompt_tokens(body: dict[str, Any]) -> int:
    """The fake's promptTokenCount: the words of the system instruction's and the contents' text parts, + 1."""
    parts = list((body.get("systemInstruction") or {}).get("parts") or [])
    for content in body.get("contents") or []:
        parts += content.get("parts") or []
    return sum(_words(p.get("text")) for p in parts) + 1


def _gemini_error(status: int, message: str) -> JSONResponse:
    kind = _GEMINI_STATUSES.get(status, "INTERNAL" if status >= 500 else "INVALID_ARGUMENT")
    return JSONResponse({"error": {"code": status, "message": message, "status": kind}}, status_code=status)


_GEMINI_STATUSES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                    429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}


async def _gemini(request: Request, route: Route, sc: Scenario, body: dict[str, Any] | None,
                  form: dict[str, Any] | None, send: Send) -> Response | None:
    if not (request.headers.get("x-goog-api-key") or request.query_params.get("key")):
        raise _BadRequest("Method doesn't allow unregistered callers (callers without established identity). "
                          "Please use API Key or other form of API consumer identity to call this API.", 403)
    if request.method == "GET" and route.endpoint == "models":
        return JSONResponse({"models": [{"name": f"models/{m}", "displayName": m, "supportedGenerationMethods": [
            "embedContent"] if "embedding" in m else ["generateContent", "countTokens"]} for m in GEMINI_MODEL_IDS]})
    model, _, method = route.endpoint.partition(":")
    if request.method != "POST" or body is None:
        raise _BadRequest("Invalid JSON payload received.")
    if method == "countTokens":
        _check_gemini_contents(body.get("contents"), model)
        return JSONResponse({"totalTokens": gemini_prompt_tokens(body)})
    if method == "embedContent":
        if not (body.get("content") or {}).get("parts"):
            raise _BadRequest("* EmbedContentRequest.content: contents is not specified")
        return JSONResponse({"embedding": {"values": embedding_vector(0)}})
    if method == "batchEmbedContents":
        for i, one in enumerate(body.get("requests") or []):
            if one.get("model") != f"models/{model}":
                raise _BadRequest(f"* BatchEmbedContentsRequest.requests[{i}].model: the model must be the one of "
                                  f"the URL, models/{model}")
        return JSONResponse({"embeddings": [{"values": embedding_vector(i)} for i, _ in enumerate(body["requests"])]})
    if method not in ("generateContent", "streamGenerateContent"):
        return _gemini_error(404, f"Method {method} is not found for models/{model}")
    _check_gemini_request(body, model)
    parts = _gemini_answer_parts(body, sc)
    if method == "streamGenerateContent":
        if request.query_params.get("alt") != "sse":  # without alt=sse Gemini streams one JSON array
            return JSONResponse([_gemini_answer(body, model, parts, sc)])
        await _gemini_stream(send, sc, body, model, parts)
        return None
    return JSONResponse(_gemini_answer(body, model, parts, sc))


def _check_gemini_request(body: dict[str, Any], model: str) -> None:
    unknown = set(body) - {"contents", "systemInstruction", "generationConfig", "tools", "toolConfig",
                           "safetySettings", "cachedContent"}
    if unknown:
        raise _BadRequest(f'Invalid JSON payload received. Unknown name "{sorted(unknown)[0]}": Cannot find field.')
    system = body.get("systemInstruction")
    if system is not None and not all(isinstance(p.get("text"), str) for p in system.get("parts") or [None]):
        raise _BadRequest("* GenerateContentRequest.system_instruction: only text parts are allowed")
    config = body.get("generationConfig") or {}
    if set(config) - _GEMINI_CONFIG_KEYS:
        raise _BadRequest(f'Invalid JSON payload received. Unknown name "{sorted(set(config) - _GEMINI_CONFIG_KEYS)[0]}"'
                          " at 'generation_config': Cannot find field.")
    for i, tool in enumerate(body.get("tools") or []):
        for j, declaration in enumerate(tool.get("functionDeclarations") or []):
            _check_gemini_schema(declaration.get("parameters"), f"tools[{i}].function_declarations[{j}].parameters")
    _check_gemini_contents(body.get("contents"), model)


def _check_gemini_schema(schema: Any, where: str) -> None:
    if schema is None:
        return
    unknown = set(schema) - _GEMINI_SCHEMA_KEYS
    if unknown:
        raise _BadRequest(f'Invalid JSON payload received. Unknown name "{sorted(unknown)[0]}" at \'{where}\': '
                          "Cannot find field.")
    if str(schema.get("type", "")).upper() == "OBJECT" and not schema.get("properties"):
        raise _BadRequest(f"* GenerateContentRequest.{where}.properties: should be non-empty for OBJECT type")
    for name, sub in (schema.get("properties") or {}).items():
        _check_gemini_schema(sub, f"{where}.properties[{name}]")
    if isinstance(schema.get("items"), dict):
        _check_gemini_schema(schema["items"], f"{where}.items")


def _check_gemini_contents(contents: Any, model: str) -> None:
    if not isinstance(contents, list) or not contents:
        raise _BadRequest("* GenerateContentRequest.contents: contents is not specified")
    previous: dict[str, Any] = {}
    for i, content in enumerate(contents):
        role = content.get("role", "user")
        if role not in ("user", "model"):
            raise _BadRequest(f"Please use a valid role: user, model. (contents[{i}].role is {role!r})")
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts:
            raise _BadRequest(f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty.")
        for j, part in enumerate(parts):
            kinds = [k for k in _GEMINI_PART_KINDS if k in part]
            if len(kinds) != 1:
                raise _BadRequest(f"* GenerateContentRequest.contents[{i}].parts[{j}].data: required oneof field "
                                  "'data' must have one initialized field")
            blob = part.get("inlineData")
            if blob is not None and not (blob.get("mimeType") and blob.get("data")):
                raise _BadRequest(f"* GenerateContentRequest.contents[{i}].parts[{j}].inline_data: mime_type and "
                                  "data are required")
        calls = [p["functionCall"] for p in parts if "functionCall" in p]
        if calls and "gemini-3" in model and "thoughtSignature" not in next(p for p in parts if "functionCall" in p):
            raise _BadRequest(f"Function call is missing a thought_signature in functionCall parts. This is required "
                              f"for tools to work correctly, and missing thought_signature may lead to degraded model "
                              f"performance. Additional data, function call `default_api:{calls[0].get('name')}` , "
                              f"position {i + 1}.")
        answers = [p["functionResponse"] for p in parts if "functionResponse" in p]
        if answers:
            asked = [p["functionCall"].get("name") for p in previous.get("parts") or [] if "functionCall" in p]
            if previous.get("role") != "model" or sorted(asked) != sorted(a.get("name") for a in answers):
                raise _BadRequest("Please ensure that the number of function response parts is equal to the number "
                                  "of function call parts of the function call turn.")
            if not all(isinstance(a.get("response"), dict) for a in answers):
                raise _BadRequest(f"* GenerateContentRequest.contents[{i}]: functionResponse.response must be an "
                                  "object")
        previous = content


def _gemini_thinks(body: dict[str, Any], sc: Scenario) -> bool:
    thinking = (body.get("generationConfig") or {}).get("thinkingConfig") or {}
    return sc.thinking or bool(thinking.get("includeThoughts"))


def _gemini_answer_parts(body: dict[str, Any], sc: Scenario) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    if _gemini_thinks(body, sc):
        parts.append({"text": "".join(THINKING_PIECES), "thought": True})
    declarations = [d for t in body.get("tools") or [] for d in t.get("functionDeclarations") or []]
    last = body["contents"][-1]
    answered = any("functionResponse" in p for p in last.get("parts") or [])
    if sc.tool and declarations and not answered:
        parts.append({"functionCall": {"name": declarations[0]["name"], "args": TOOL_INPUT},
                      "thoughtSignature": GEMINI_SIGNATURE})
    else:
        parts.append({"text": reply_text(sc.chunks)})
    return parts


def _gemini_usage(body: dict[str, Any], sc: Scenario, parts: list[dict[str, Any]]) -> dict[str, int]:
    prompt = gemini_prompt_tokens(body)
    thoughts = len(THINKING_PIECES) if any(p.get("thought") for p in parts) else 0
    usage = {"promptTokenCount": prompt, "candidatesTokenCount": sc.chunks,
             "totalTokenCount": prompt + sc.chunks + thoughts}
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    if sc.cache_read:
        usage["cachedContentTokenCount"] = sc.cache_read
    return usage


def _gemini_answer(body: dict[str, Any], model: str, parts: list[dict[str, Any]], sc: Scenario,
                   finish: str | None = "STOP") -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    answer: dict[str, Any] = {"candidates": [candidate], "modelVersion": model, "responseId": "fake-gemini-1"}
    if finish:
        candidate["finishReason"] = finish
        if sc.usage:
            answer["usageMetadata"] = _gemini_usage(body, sc, parts)
    return answer


async def _gemini_stream(send: Send, sc: Scenario, body: dict[str, Any], model: str,
                         parts: list[dict[str, Any]]) -> None:
    """One whole response per event, each holding the new parts; the last also has the finish reason and the
    usage. Events end with CRLF CRLF, as Google's do."""

    def event(answer: dict[str, Any]) -> bytes:
        return b"data: " + json.dumps(answer).encode() + b"\r\n\r\n"

    await _start_sse(send)
    for piece in THINKING_PIECES if parts[0].get("thought") else ():
        await _send_event(send, event(_gemini_answer(body, model, [{"text": piece, "thought": True}], sc, None)))
    last = parts[-1]
    if "functionCall" in last:
        await _pause(sc, 1)
        await _send_event(send, event(_gemini_answer(body, model, [last], sc)), more=False)
        return
    for i in range(sc.chunks):
        if sc.cut is not None and i >= sc.cut:
            raise _CutConnection
        if sc.error is not None and i >= sc.error:
            error = {"error": {"code": 503, "message": "The model is overloaded. Please try again later.",
                               "status": "UNAVAILABLE"}}
            await _send_event(send, b"data: " + json.dumps(error).encode() + b"\r\n\r\n", more=False)
            return
        await _pause(sc, i)
        finish = "STOP" if i == sc.chunks - 1 else None
        await _send_event(send, event(_gemini_answer(body, model, [{"text": _chunk_word(i)}], sc, finish)),
                          more=finish is None)
    if sc.cut is not None:
        raise _CutConnection


# --------------------------------------------------------------------------------------------------------------
# OpenAI Responses (POST /v1/responses; modelled on developers.openai.com: text, instructions, function tools and
# their outputs, previous_response_id, the streaming events in their documented order)
# --------------------------------------------------------------------------------------------------------------


class ResponsesMemory:
    """The responses the fake has answered (unless `store: false`), so `previous_response_id` is checked as
    OpenAI checks it, and the reasoning item ids it gave out."""

    def __init__(self) -> None:
        self.stored: dict[str, list[dict[str, Any]]] = {}  # id → its input items and then its output items
        self.reasoning_ids: set[str] = set()
        self._lock = threading.Lock()
        self._next = 0

    def new_id(self) -> int:
        with self._lock:
            self._next += 1
            return self._next


def responses_prompt_tokens(body: dict[str, Any], earlier: list[dict[str, Any]]) -> int:
    """The fake's input_tokens: the words of the instructions, the earlier turns and the input, + 1."""
    items = earlier + (body["input"] if isinstance(body["input"], list) else [{"content": body["input"]}])
    return _words(body.get("instructions")) + sum(_words(i.get("content")) + _words(i.get("output"))
                                                   for i in items) + 1


def _check_responses_request(body: dict[str, Any], memory: ResponsesMemory) -> list[dict[str, Any]]:
    """What OpenAI refuses; returns the earlier items that previous_response_id brings."""
    if "stream_options" in body and "include_usage" in (body["stream_options"] or {}):
        raise _BadRequest("Unknown parameter: 'stream_options.include_usage'.")
    if not isinstance(body.get("input"), (str, list)):
        raise _BadRequest("Missing required parameter: 'input'.")
    for i, tool in enumerate(body.get("tools") or []):
        if tool.get("type") == "function" and not tool.get("name"):
            raise _BadRequest(f"Missing required parameter: 'tools[{i}].name'.")
    previous = body.get("previous_response_id")
    if previous and previous not in memory.stored:
        raise _BadRequest(f"Previous response with id '{previous}' not found.")
    earlier = memory.stored.get(previous, []) if previous else []
    calls = {i.get("call_id") for i in earlier if i.get("type") == "function_call"}
    for i, item in enumerate(body["input"] if isinstance(body["input"], list) else []):
        kind = item.get("type", "message")
        if kind == "function_call":
            calls.add(item.get("call_id"))
        elif kind == "function_call_output" and item.get("call_id") not in calls:
            raise _BadRequest(f"No tool call found for function call output with call_id {item.get('call_id')}.")
        elif kind == "reasoning" and item.get("id") not in memory.reasoning_ids:
            raise _BadRequest(f"Item with id '{item.get('id')}' not found.")
        elif kind == "message" and item.get("role") not in ("user", "assistant", "system", "developer"):
            raise _BadRequest(f"Invalid value: '{item.get('role')}'. Supported values are: 'assistant', 'system', "
                              f"'developer', and 'user'. (input[{i}].role)")
    return earlier


async def _responses(request: Request, sc: Scenario, body: dict[str, Any], send: Send) -> Response | None:
    memory: ResponsesMemory = request.scope["fake_upstream"].responses
    earlier = _check_responses_request(body, memory)
    number = memory.new_id()
    items = body["input"] if isinstance(body["input"], list) else [{"role": "user", "content": body["input"]}]
    tools = [t for t in body.get("tools") or [] if t.get("type") == "function"]
    answered = bool(items) and items[-1].get("type") == "function_call_output"
    if sc.tool and tools and not answered:
        output = [{"id": f"fc_fake_{number}", "type": "function_call", "status": "completed",
                   "call_id": f"call_fake_{number}", "name": tools[0]["name"],
                   "arguments": "".join(TOOL_INPUT_PIECES)}]
    else:
        output = [{"id": f"msg_fake_{number}", "type": "message", "status": "completed", "role": "assistant",
                   "content": [{"type": "output_text", "text": reply_text(sc.chunks), "annotations": []}]}]
    if sc.thinking:
        memory.reasoning_ids.add(f"rs_fake_{number}")
        output.insert(0, {"id": f"rs_fake_{number}", "type": "reasoning",
                          "summary": [{"type": "summary_text", "text": "".join(THINKING_PIECES)}]})
    prompt = responses_prompt_tokens(body, earlier)
    usage = {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": sc.cache_read},
             "output_tokens": sc.chunks, "output_tokens_details": {"reasoning_tokens": 0},
             "total_tokens": prompt + sc.chunks}
    response = {"id": f"resp_fake_{number}", "object": "response", "created_at": int(time.time()),
                "status": "completed", "error": None, "incomplete_details": None,
                "instructions": body.get("instructions"), "model": body["model"], "output": output,
                "parallel_tool_calls": True, "previous_response_id": body.get("previous_response_id"),
                "temperature": 1.0, "tool_choice": body.get("tool_choice", "auto"), "tools": body.get("tools") or [],
                "top_p": 1.0, "usage": usage if sc.usage else None, "metadata": {}}
    if body.get("store", True):
        memory.stored[response["id"]] = earlier + items + output
    if body.get("stream"):
        await _responses_stream(send, sc, response)
        return None
    return JSONResponse(response)


async def _responses_stream(send: Send, sc: Scenario, response: dict[str, Any]) -> None:
    """The documented order: created, in_progress, then per item added → (content part added → text deltas →
    text done → part done | argument deltas → arguments done) → item done, then completed. No [DONE]."""
    sequence = 0

    def event(kind: str, **data: Any) -> bytes:
        nonlocal sequence
        sequence += 1
        return f"event: {kind}\ndata: {json.dumps({'type': kind, 'sequence_number': sequence - 1, **data})}\n\n".encode()

    await _start_sse(send)
    started = dict(response, status="in_progress", output=[], usage=None)
    await _send_event(send, event("response.created", response=started) + event("response.in_progress",
                                                                                 response=started))
    for index, item in enumerate(response["output"]):
        where = {"item_id": item["id"], "output_index": index}
        if item["type"] == "function_call":
            await _send_event(send, event("response.output_item.added", output_index=index,
                                          item=dict(item, arguments="", status="in_progress")))
            for i, piece in enumerate(TOOL_INPUT_PIECES):
                await _pause(sc, i + 1)
                await _send_event(send, event("response.function_call_arguments.delta", **where, delta=piece))
            await _send_event(send, event("response.function_call_arguments.done", **where,
                                          arguments=item["arguments"]))
        elif item["type"] == "message":
            part = {"type": "output_text", "text": "", "annotations": []}
            await _send_event(send, event("response.output_item.added", output_index=index,
                                          item=dict(item, content=[], status="in_progress"))
                              + event("response.content_part.added", **where, content_index=0, part=part))
            for i in range(sc.chunks):
                if sc.cut is not None and i >= sc.cut:
                    raise _CutConnection
                if sc.error is not None and i >= sc.error:
                    await _send_event(send, event("error", code="server_error", message="Overloaded", param=None),
                                      more=False)
                    return
                await _pause(sc, i)
                await _send_event(send, event("response.output_text.delta", **where, content_index=0,
                                              delta=_chunk_word(i), logprobs=[]))
            if sc.cut is not None:
                raise _CutConnection
            text = item["content"][0]["text"]
            await _send_event(send, event("response.output_text.done", **where, content_index=0, text=text,
                                          logprobs=[])
                              + event("response.content_part.done", **where, content_index=0, part=dict(part, text=text)))
        else:
            await _send_event(send, event("response.output_item.added", output_index=index, item=item))
        await _send_event(send, event("response.output_item.done", output_index=index, item=item))
    await _send_event(send, event("response.completed", response=response), more=False)


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
        """Base URL for an OpenAI or Anthropic channel, e.g. ``http://127.0.0.1:PORT/status-500/v1``."""
        return f"{self.base}/{scenario}/v1"

    def host_url(self, scenario: str = "ok") -> str:
        """Base URL for a channel whose adaptor adds the whole path (Azure, Gemini): no version segment."""
        return f"{self.base}/{scenario}"

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
