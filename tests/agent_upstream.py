"""An upstream for the real coding clients (tests/test_clients.py): four providers, each checking requests the way
its real API does, and answering like a model that runs one shell command when asked for a file listing.

    /openai/v1/chat/completions, /openai/v1/responses   OpenAI (a reasoning model: gpt-5, o-series)
    /deepseek/v1/chat/completions                       DeepSeek-style OpenAI-compatible server
    /anthropic/v1/messages[/count_tokens]               Anthropic Messages
    /gemini/v1beta/models/{model}:{method}              Gemini generateContent, streamGenerateContent?alt=sse,
                                                        countTokens

What each refuses (a 400 in the provider's error shape), from the providers' documentation:
- every format: what tests/fake_upstream.py checks (Anthropic: headers, max_tokens, alternating user/assistant
  turns, a tool_result only for the previous turn's tool_use; Gemini: key header, user/model roles, as many
  function responses as the turn's calls, the Schema keywords `parameters` knows; OpenAI chat: a tool message only
  after its call; Responses: flat function tools, a function_call_output only for a call in the input);
- Anthropic also: empty text blocks ("text content blocks must be non-empty"), a tool_use without its tool_result
  in the next turn, and a `system` message inside `messages` without text (Claude Code sends such messages, under
  the beta `mid-conversation-system-2026-04-07` in 2.1.197 and without it in 2.1.332);
- OpenAI: on a reasoning model, `max_tokens` (it wants `max_completion_tokens`) and a temperature or top_p other
  than 1; on any other model, `reasoning_effort`; a tool call left without its tool message;
- DeepSeek: `max_tokens` outside [1, 8192] (deepseek-chat's limit, the API's own message), and, standing for the
  strict chat templates of vLLM/Ollama-style servers, a system message anywhere but first.

How it answers: when the last turn carries a tool's result, `MOCK-TOOL-DONE (<fmt>) saw: <the result>`; when
tools are offered and the last user turn asks to "list the files", one call of the shell tool on offer (Bash,
exec_command, shell, run_shell_command, ...) with `ls` in its command argument; otherwise
`MOCK-HELLO from <fmt> upstream, model <model>`. Usage is always PROMPT_TOKENS in and COMPLETION_TOKENS out, so a
log row with those numbers has the upstream's own counts, not an estimate. Every request is recorded.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from typing import Any

import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from fake_upstream import (_BadRequest, _check_anthropic_request, _check_gemini_request, _check_openai_messages,
                           _check_responses_request, _error, ResponsesMemory)

PROMPT_TOKENS, COMPLETION_TOKENS = 421, 17
DEEPSEEK_MAX_TOKENS = 8192
SHELL_TOOLS = ("Bash", "exec_command", "shell", "run_shell_command", "shell_command", "local_shell")
_REASONING_MODEL = re.compile(r"^(o\d|gpt-5(?!-chat))")
_ASKS_FOR_FILES = re.compile(r"list\s+the\s+files", re.I)


def hello(fmt: str, model: str) -> str:
    return f"MOCK-HELLO from {fmt} upstream, model {model}"


def _text(value: Any) -> str:
    """Every text inside a content value, whatever the format nests it in."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(_text(v) for v in value)
    if isinstance(value, dict):
        return "\n".join(_text(value[k]) for k in ("text", "content", "output", "response", "result", "stdout")
                         if k in value)
    return ""


def _shell_call(tools: list[dict[str, Any]], name_of: Any, schema_of: Any) -> tuple[str, dict[str, Any]] | None:
    """(name, arguments) of the shell tool on offer, arguments filled from its schema."""
    by_name = {name_of(t): t for t in tools}
    name = next((n for n in SHELL_TOOLS if n in by_name), None)
    if name is None:
        return None
    schema = schema_of(by_name[name]) or {}
    properties = schema.get("properties") or {}
    args: dict[str, Any] = {}
    for prop in set(schema.get("required") or []) | ({"command", "cmd"} & set(properties)):
        kind = (properties.get(prop) or {}).get("type")
        if prop in ("command", "cmd"):
            args[prop] = ["ls"] if kind == "array" else "ls"
        elif kind == "string":
            args[prop] = "List the files"
        elif kind == "boolean":
            args[prop] = False
        elif kind in ("integer", "number"):
            args[prop] = 10000
    return name, args


class Answer:
    """What the model says: text, or one tool call."""

    def __init__(self, text: str = "", call: tuple[str, dict[str, Any]] | None = None) -> None:
        self.text, self.call = text, call

    @property
    def arguments(self) -> str:
        return json.dumps(self.call[1]) if self.call else ""


def sample_of(schema: Any) -> Any:
    """A value that fits a JSON Schema (or Gemini's upper-case Schema): what a model under structured output
    returns."""
    if not isinstance(schema, dict):
        return "MOCK"
    kind = str(schema.get("type", "object")).lower()
    if schema.get("enum"):
        return schema["enum"][0]
    if kind == "object":
        return {name: sample_of(sub) for name, sub in (schema.get("properties") or {}).items()}
    return {"array": [], "integer": 1, "number": 1, "boolean": False, "null": None}.get(kind, "MOCK")


def json_schema_of(fmt: str, body: dict[str, Any]) -> dict[str, Any] | None:
    """The schema a request asks its answer to follow (structured output), per format."""
    if fmt == "gemini":
        config = body.get("generationConfig") or {}
        if config.get("responseMimeType") == "application/json":
            return config.get("responseJsonSchema") or config.get("responseSchema") or {}
    elif fmt == "anthropic":
        output = (body.get("output_config") or {}).get("format") or body.get("output_format") or {}
        return output.get("schema") if output.get("type") == "json_schema" else None
    elif isinstance(body.get("response_format"), dict):  # chat
        response_format = body["response_format"]
        if response_format.get("type") in ("json_schema", "json_object"):
            return (response_format.get("json_schema") or {}).get("schema") or {}
    elif isinstance((body.get("text") or {}).get("format"), dict):  # responses
        text_format = body["text"]["format"]
        if text_format.get("type") in ("json_schema", "json_object"):
            return text_format.get("schema") or {}
    return None


def decide(fmt: str, model: str, result: str | None, user_text: str, call: Any,
           schema: dict[str, Any] | None = None) -> Answer:
    if schema is not None:
        return Answer(json.dumps(sample_of(schema)))
    if result is not None:
        return Answer(f"MOCK-TOOL-DONE ({fmt}) saw: {' '.join(result.split())[:300]}")
    if _ASKS_FOR_FILES.search(user_text) and call is not None:
        return Answer(call=call)
    return Answer(hello(fmt, model))


# ---- OpenAI chat (OpenAI and DeepSeek) ----

def _check_chat(fmt: str, body: dict[str, Any]) -> None:
    _check_openai_messages(body)
    messages = body.get("messages") or []
    if not messages:
        raise _BadRequest("'messages' must contain at least one message.")
    for i, message in enumerate(messages):
        calls = {c.get("id") for c in message.get("tool_calls") or []}
        if calls:
            answered = {m.get("tool_call_id") for m in messages[i + 1:i + 1 + len(calls)] if m.get("role") == "tool"}
            if answered != calls:
                raise _BadRequest("An assistant message with 'tool_calls' must be followed by tool messages "
                                  "responding to each 'tool_call_id'.")
    model = str(body.get("model") or "")
    if fmt == "openai":
        if _REASONING_MODEL.match(model):
            if "max_tokens" in body:
                raise _BadRequest("Unsupported parameter: 'max_tokens' is not supported with this model. Use "
                                  "'max_completion_tokens' instead.")
            for name in ("temperature", "top_p"):
                if body.get(name) not in (None, 1):
                    raise _BadRequest(f"Unsupported value: '{name}' does not support {body[name]} with this model. "
                                      "Only the default (1) value is supported.")
        elif "reasoning_effort" in body:
            raise _BadRequest("Unsupported parameter: 'reasoning_effort' is not supported with this model.")
    else:
        limit = body.get("max_tokens")
        if limit is not None and not 1 <= limit <= DEEPSEEK_MAX_TOKENS:
            raise _BadRequest(f"Invalid max_tokens value, the valid range of max_tokens is [1, {DEEPSEEK_MAX_TOKENS}]")
        if any(m.get("role") == "system" for m in messages[1:]):
            raise _BadRequest("System message must be at the beginning.")


def _chat_answer(fmt: str, body: dict[str, Any]) -> Answer:
    messages = body["messages"]
    last = messages[-1]
    user = next((m for m in reversed(messages) if m.get("role") == "user"), {})
    tools = [t for t in body.get("tools") or [] if t.get("type") == "function"]
    call = _shell_call(tools, lambda t: t["function"].get("name"), lambda t: t["function"].get("parameters"))
    return decide(fmt, body["model"], _text(last.get("content")) if last.get("role") == "tool" else None,
                  _text(user.get("content")), call, json_schema_of("chat", body))


async def _chat(fmt: str, body: dict[str, Any], send: Send) -> Response | None:
    _check_chat(fmt, body)
    answer = _chat_answer(fmt, body)
    usage = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS,
             "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS}
    tool_calls = [{"id": "call_mock_1", "type": "function",
                   "function": {"name": answer.call[0], "arguments": answer.arguments}}] if answer.call else None
    finish = "tool_calls" if tool_calls else "stop"
    base = {"id": "chatcmpl-mock", "created": int(time.time()), "model": body["model"]}
    if not body.get("stream"):
        message = {"role": "assistant", "content": answer.text or None, **({"tool_calls": tool_calls} if tool_calls
                                                                          else {})}
        return JSONResponse({**base, "object": "chat.completion", "usage": usage,
                             "choices": [{"index": 0, "message": message, "finish_reason": finish}]})
    with_usage = bool((body.get("stream_options") or {}).get("include_usage"))

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        obj = {**base, "object": "chat.completion.chunk",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
        return b"data: " + json.dumps(obj).encode() + b"\n\n"

    events = [chunk({"role": "assistant", "content": ""})]
    if tool_calls:
        events.append(chunk({"tool_calls": [dict(tool_calls[0], index=0, function={
            "name": answer.call[0], "arguments": ""})]}))
        events.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": answer.arguments}}]}))
    else:
        middle = len(answer.text) // 2
        events += [chunk({"content": answer.text[:middle]}), chunk({"content": answer.text[middle:]})]
    events.append(chunk({}, finish))
    if with_usage:
        events.append(b"data: " + json.dumps({**base, "object": "chat.completion.chunk", "choices": [],
                                               "usage": usage}).encode() + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return await _sse(send, events)


# ---- OpenAI Responses ----

async def _responses(memory: ResponsesMemory, body: dict[str, Any], send: Send) -> Response | None:
    _check_responses_request(body, memory)
    items = body["input"] if isinstance(body["input"], list) else [{"role": "user", "content": body["input"]}]
    last = items[-1] if items else {}
    user = next((i for i in reversed(items) if i.get("role") == "user"), {})
    tools = [t for t in body.get("tools") or [] if t.get("type") == "function"]
    call = _shell_call(tools, lambda t: t.get("name"), lambda t: t.get("parameters"))
    answer = decide("openai", body["model"], _text(last.get("output")) if last.get("type") == "function_call_output"
                    else None, _text(user.get("content")), call, json_schema_of("responses", body))
    number = memory.new_id()
    if answer.call:
        item = {"id": f"fc_mock_{number}", "type": "function_call", "status": "completed",
                "call_id": f"call_mock_{number}", "name": answer.call[0], "arguments": answer.arguments}
    else:
        item = {"id": f"msg_mock_{number}", "type": "message", "status": "completed", "role": "assistant",
                "content": [{"type": "output_text", "text": answer.text, "annotations": []}]}
    response = {"id": f"resp_mock_{number}", "object": "response", "created_at": int(time.time()),
                "status": "completed", "error": None, "incomplete_details": None, "model": body["model"],
                "output": [item], "parallel_tool_calls": True, "tool_choice": body.get("tool_choice", "auto"),
                "tools": body.get("tools") or [], "previous_response_id": body.get("previous_response_id"),
                "usage": {"input_tokens": PROMPT_TOKENS, "input_tokens_details": {"cached_tokens": 0},
                          "output_tokens": COMPLETION_TOKENS, "output_tokens_details": {"reasoning_tokens": 0},
                          "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS}, "metadata": {}}
    if body.get("store", True):
        memory.stored[response["id"]] = items + [item]
    if not body.get("stream"):
        return JSONResponse(response)
    sequence = iter(range(1000))

    def event(kind: str, **data: Any) -> bytes:
        payload = json.dumps({"type": kind, "sequence_number": next(sequence), **data})
        return f"event: {kind}\ndata: {payload}\n\n".encode()

    started = dict(response, status="in_progress", output=[], usage=None)
    events = [event("response.created", response=started), event("response.in_progress", response=started)]
    where = {"item_id": item["id"], "output_index": 0}
    if answer.call:
        events += [event("response.output_item.added", output_index=0, item=dict(item, arguments="",
                                                                                 status="in_progress")),
                   event("response.function_call_arguments.delta", **where, delta=answer.arguments),
                   event("response.function_call_arguments.done", **where, arguments=answer.arguments)]
    else:
        part = {"type": "output_text", "text": "", "annotations": []}
        events += [event("response.output_item.added", output_index=0, item=dict(item, content=[],
                                                                                 status="in_progress")),
                   event("response.content_part.added", **where, content_index=0, part=part),
                   event("response.output_text.delta", **where, content_index=0, delta=answer.text, logprobs=[]),
                   event("response.output_text.done", **where, content_index=0, text=answer.text, logprobs=[]),
                   event("response.content_part.done", **where, content_index=0, part=dict(part, text=answer.text))]
    events += [event("response.output_item.done", output_index=0, item=item),
               event("response.completed", response=response)]
    return await _sse(send, events)


# ---- Anthropic Messages ----

def _check_messages(body: dict[str, Any], beta: str) -> None:
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise _BadRequest("messages: Field required")
    # Claude Code 2.1.197 sends them under the beta `mid-conversation-system-2026-04-07`, 2.1.332 without a beta:
    # the API takes them, so the mock does (each with its text)
    inner = [m for m in messages if isinstance(m, dict) and m.get("role") == "system"]
    for message in inner:
        if not _text(message.get("content")):
            raise _BadRequest("messages: a system message needs a text content")
    turns = [m for m in messages if m not in inner]
    _check_anthropic_request(dict(body, messages=turns), counting=False)
    if turns[0].get("role") != "user":
        raise _BadRequest("messages: the first message must use the \"user\" role")
    for i, message in enumerate(turns):
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if any(b.get("type") == "text" and not b.get("text") for b in blocks):
            raise _BadRequest(f"messages.{i}: text content blocks must be non-empty")
        uses = {b.get("id") for b in blocks if b.get("type") == "tool_use"}
        if uses:
            following = turns[i + 1].get("content") if i + 1 < len(turns) else []
            results = {b.get("tool_use_id") for b in following if isinstance(following, list)
                       and b.get("type") == "tool_result"}
            if not uses <= results:
                raise _BadRequest(f"messages.{i + 1}: `tool_use` ids were found without `tool_result` blocks "
                                  "immediately after")


async def _messages(body: dict[str, Any], beta: str, send: Send) -> Response | None:
    _check_messages(body, beta)
    turns = [m for m in body["messages"] if m.get("role") != "system"]
    last = turns[-1]
    content = last.get("content")
    results = [b for b in content if b.get("type") == "tool_result"] if isinstance(content, list) else []
    tools = [t for t in body.get("tools") or [] if "input_schema" in t]
    call = _shell_call(tools, lambda t: t.get("name"), lambda t: t.get("input_schema"))
    answer = decide("anthropic", body["model"], _text([r.get("content") for r in results]) if results else None,
                    _text(content), call, json_schema_of("anthropic", body))
    usage = {"input_tokens": PROMPT_TOKENS, "output_tokens": COMPLETION_TOKENS, "cache_read_input_tokens": 0,
             "cache_creation_input_tokens": 0}
    block = ({"type": "tool_use", "id": "toolu_mock_1", "name": answer.call[0], "input": answer.call[1]}
             if answer.call else {"type": "text", "text": answer.text})
    stop = "tool_use" if answer.call else "end_turn"
    message = {"id": "msg_mock", "type": "message", "role": "assistant", "model": body["model"], "content": [block],
               "stop_reason": stop, "stop_sequence": None, "usage": usage}
    if not body.get("stream"):
        return JSONResponse(message)

    def event(kind: str, **data: Any) -> bytes:
        return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()

    start = dict(block, input={}) if answer.call else dict(block, text="")
    delta = ({"type": "input_json_delta", "partial_json": answer.arguments} if answer.call
             else {"type": "text_delta", "text": answer.text})
    events = [event("message_start", message=dict(message, content=[], stop_reason=None,
                                                  usage=dict(usage, output_tokens=1))),
              event("content_block_start", index=0, content_block=start), event("ping"),
              event("content_block_delta", index=0, delta=delta), event("content_block_stop", index=0),
              event("message_delta", delta={"stop_reason": stop, "stop_sequence": None},
                    usage={"output_tokens": COMPLETION_TOKENS}),
              event("message_stop")]
    return await _sse(send, events)


# ---- Gemini ----

async def _gemini(model: str, method: str, body: dict[str, Any], send: Send) -> Response | None:
    if method == "countTokens":
        return JSONResponse({"totalTokens": PROMPT_TOKENS})
    _check_gemini_request(body, model)
    contents = body["contents"]
    last = contents[-1]
    responses = [p["functionResponse"] for p in last.get("parts") or [] if "functionResponse" in p]
    declarations = [d for t in body.get("tools") or [] for d in t.get("functionDeclarations") or []]
    call = _shell_call(declarations, lambda d: d.get("name"),
                       lambda d: d.get("parametersJsonSchema") or d.get("parameters"))
    answer = decide("gemini", model, _text([r.get("response") for r in responses]) if responses else None,
                    _text(last.get("parts")), call, json_schema_of("gemini", body))
    part = ({"functionCall": {"name": answer.call[0], "args": answer.call[1]}} if answer.call
            else {"text": answer.text})
    result = {"candidates": [{"content": {"role": "model", "parts": [part]}, "finishReason": "STOP", "index": 0}],
              "usageMetadata": {"promptTokenCount": PROMPT_TOKENS, "candidatesTokenCount": COMPLETION_TOKENS,
                                "totalTokenCount": PROMPT_TOKENS + COMPLETION_TOKENS},
              "modelVersion": model}
    if method != "streamGenerateContent":
        return JSONResponse(result)
    return await _sse(send, [b"data: " + json.dumps(result).encode() + b"\r\n\r\n"])


# ---- the app ----

async def _sse(send: Send, events: list[bytes]) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
    for data in events:
        await send({"type": "http.response.body", "body": data, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


_GEMINI_PATH = re.compile(r"^/gemini/v1beta/models/([^/:]+):([A-Za-z]+)$")


class AgentUpstreamApp:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.memory = ResponsesMemory()
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        path = request.url.path
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = None
        fmt = path.split("/")[1] if path.count("/") > 1 else ""
        headers = {k: ("…" if k in ("authorization", "x-api-key", "x-goog-api-key") else v)
                   for k, v in request.headers.items()}
        record = {"format": fmt, "path": path, "query": request.url.query, "headers": headers, "json": body,
                  "refused": ""}
        with self._lock:
            self.requests.append(record)
        try:
            response = await self._answer(request, fmt, path, body, send)
        except _BadRequest as exc:
            record["refused"] = f"{exc.status} {exc}"
            response = _error(exc.status, str(exc), "openai" if fmt == "deepseek" else fmt)
        if response is not None:
            await response(scope, receive, send)

    async def _answer(self, request: Request, fmt: str, path: str, body: Any, send: Send) -> Response | None:
        if not isinstance(body, dict):
            raise _BadRequest("The request body is not a JSON object.")
        headers = request.headers
        if fmt in ("openai", "deepseek"):
            if not headers.get("authorization", "").startswith("Bearer "):
                raise _BadRequest("You didn't provide an API key.", 401)
            if path == f"/{fmt}/v1/chat/completions":
                return await _chat(fmt, body, send)
            if path == "/openai/v1/responses":
                return await _responses(self.memory, body, send)
        elif fmt == "anthropic":
            if not headers.get("x-api-key"):
                raise _BadRequest("x-api-key header is required", 401)
            if not headers.get("anthropic-version"):
                raise _BadRequest("anthropic-version: header is required")
            if path == "/anthropic/v1/messages/count_tokens":
                return JSONResponse({"input_tokens": PROMPT_TOKENS})
            if path == "/anthropic/v1/messages":
                return await _messages(body, headers.get("anthropic-beta", ""), send)
        elif fmt == "gemini" and (match := _GEMINI_PATH.match(path)):
            if not (headers.get("x-goog-api-key") or request.query_params.get("key")):
                raise _BadRequest("Method doesn't allow unregistered callers.", 403)
            return await _gemini(match.group(1), match.group(2), body, send)
        return _error(404, f"agent upstream: no route for {request.method} {path}", fmt or "openai")


class AgentUpstream:
    """The app served by uvicorn in a daemon thread on a free loopback port."""

    def __init__(self) -> None:
        self.app = AgentUpstreamApp()
        self.port = 0
        self._server: uvicorn.Server | None = None

    def base_url(self, fmt: str) -> str:
        """The channel base_url of a format: .../openai/v1, .../deepseek/v1, .../anthropic/v1 or .../gemini."""
        return f"http://127.0.0.1:{self.port}/{fmt}" + ("" if fmt == "gemini" else "/v1")

    def start(self) -> AgentUpstream:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._server = uvicorn.Server(uvicorn.Config(self.app, log_config=None, log_level="warning", http="h11",
                                                     access_log=False, lifespan="off", timeout_graceful_shutdown=1))
        threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True).start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("agent upstream did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
