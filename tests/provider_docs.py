"""The documented endpoint of every (provider type, model kind) the catalog lists, and a mock that serves only those.

Written from each provider's own documentation (the page is named in `source`), never from aiproxy_local.py: the
catalog test (test_catalog.py) sends one call of every kind a type lists through the gateway and checks that the
request that reached this mock went to the documented path, with the documented authentication and body shape.

A type's channel gets the base URL ``<mock>/t<type><path of the documented base>``, so the mock knows which type
is calling and a gateway that builds a path of its own (an OpenAI path on a non-OpenAI API) hits a 404, as the
real API would. The mock answers in each API's own documented response shape, and rejects a wrong auth header
(401) or a wrong body (400/422) as the real API does.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from conftest import free_port


@dataclass(frozen=True)
class Endpoint:
    path: str  # documented path below the host; {model} is the model's name (Gemini: in the path)
    auth: str  # bearer | iam | api-key | x-api-key | x-goog-api-key
    body: str  # the request body's documented shape (see BODY_CHECKS) and so the answer's
    query: tuple[str, ...] = ()  # query parameters the API requires


@dataclass(frozen=True)
class Documented:
    base: str  # the documented base URL (host and version path); placeholders in braces
    source: str  # where it is documented
    kinds: dict[str, Endpoint] = field(default_factory=dict)
    key: str = ""  # the channel key the test uses (a composite one where the type has parts)


def _openai_kinds(prefix: str, *kinds: str, auth: str = "bearer") -> dict[str, Endpoint]:
    paths = {"chat": ("/chat/completions", "openai-chat"), "embedding": ("/embeddings", "openai-embeddings"),
             "rerank": ("/rerank", "cohere-rerank"), "image": ("/images/generations", "openai-image"),
             "tts": ("/audio/speech", "openai-speech"), "stt": ("/audio/transcriptions", "multipart-stt"),
             "moderation": ("/moderations", "openai-moderation")}
    return {k: Endpoint(prefix + paths[k][0], auth, paths[k][1]) for k in kinds}


IAM_AK, IAM_SK = "AKIDexample0123", "SKexample0123456789"

#: provider type -> what its documentation says. Types answered locally (53, 55) and the ones the gateway does not
#: serve (15, 33, 34, 42, 44, 46) are not here: test_catalog.py checks those by themselves.
DOCUMENTED: dict[int, Documented] = {
    1: Documented("https://api.openai.com/v1", "platform.openai.com/docs/api-reference",
                  _openai_kinds("/v1", "chat", "embedding", "tts", "stt", "image", "moderation")),
    3: Documented("https://{resource}.openai.azure.com", "learn.microsoft.com/azure/ai-services/openai/reference", {
        k: Endpoint(f"/openai/deployments/{{deployment}}{p}", "api-key", b, ("api-version",))
        for k, (p, b) in {"chat": ("/chat/completions", "openai-chat"), "embedding": ("/embeddings", "openai-embeddings"),
                          "image": ("/images/generations", "openai-image"), "tts": ("/audio/speech", "openai-speech"),
                          "stt": ("/audio/transcriptions", "multipart-stt")}.items()}, key="azkey0123456789"),
    12: Documented("https://generativelanguage.googleapis.com/v1beta/openai",
                   "ai.google.dev/gemini-api/docs/openai (chat, embeddings, images/generations)",
                   _openai_kinds("/v1beta/openai", "chat", "embedding", "image")),
    13: Documented("https://qianfan.baidubce.com/v2", "cloud.baidu.com/doc/qianfan-api (v2 chat, embeddings, "
                   "/v2/rerankers); IAM BearerToken: cloud.baidu.com/doc/WENXINWORKSHOP/s/vm40x9q45 + "
                   "cloud.baidu.com/doc/Reference/s/njwvz1yfu (bce-auth-v1)", {
                       "chat": Endpoint("/v2/chat/completions", "iam", "openai-chat"),
                       "embedding": Endpoint("/v2/embeddings", "iam", "openai-embeddings"),
                       "rerank": Endpoint("/v2/rerankers", "iam", "cohere-rerank")}, key=f"{IAM_AK}|{IAM_SK}"),
    14: Documented("https://api.anthropic.com/v1", "docs.anthropic.com/en/api/messages",
                   {"chat": Endpoint("/v1/messages", "x-api-key", "anthropic")}),
    16: Documented("https://open.bigmodel.cn/api/paas/v4", "docs.bigmodel.cn/api-reference",
                   _openai_kinds("/api/paas/v4", "chat", "embedding", "rerank", "image")),
    17: Documented("https://dashscope.aliyuncs.com/compatible-mode/v1",
                   "alibabacloud.com/help/en/model-studio (compatible-mode chat/embeddings; rerank: "
                   "/api/v1/services/rerank/text-rerank/text-rerank, alibabacloud.com/help/en/model-studio/rerank)", {
                       **_openai_kinds("/compatible-mode/v1", "chat", "embedding"),
                       "rerank": Endpoint("/api/v1/services/rerank/text-rerank/text-rerank", "bearer",
                                          "dashscope-rerank")}),
    18: Documented("https://spark-api-open.xf-yun.com/v1", "xfyun.cn/doc/spark/HTTP调用文档.html (Bearer APIPassword)",
                   _openai_kinds("/v1", "chat")),
    19: Documented("https://ai.360.cn/v1", "aiproxy's ai360 adaptor (360's own page is not in the stored docs)",
                   _openai_kinds("/v1", "chat", "embedding")),
    20: Documented("https://openrouter.ai/api/v1", "openrouter.ai/docs/api-reference",
                   _openai_kinds("/api/v1", "chat")),
    23: Documented("https://api.hunyuan.cloud.tencent.com/v1", "cloud.tencent.com/document/product/1729/111007",
                   _openai_kinds("/v1", "chat", "embedding")),
    24: Documented("https://generativelanguage.googleapis.com", "ai.google.dev/api/generate-content, /api/embeddings", {
        "chat": Endpoint("/v1beta/models/{model}:generateContent", "x-goog-api-key", "gemini-generate"),
        "embedding": Endpoint("/v1beta/models/{model}:batchEmbedContents", "x-goog-api-key", "gemini-batch-embed")}),
    25: Documented("https://api.moonshot.cn/v1", "platform.moonshot.cn/docs/api/chat", _openai_kinds("/v1", "chat")),
    26: Documented("https://api.baichuan-ai.com/v1", "platform.baichuan-ai.com/docs/api",
                   _openai_kinds("/v1", "chat", "embedding")),
    27: Documented("https://api.minimaxi.com/v1", "platform.minimaxi.com (OpenAI SDK chat; embeddings: POST "
                   "/v1/embeddings?GroupId= with {model, texts, type})", {
                       "chat": Endpoint("/v1/chat/completions", "bearer", "openai-chat"),
                       "embedding": Endpoint("/v1/embeddings", "bearer", "minimax-embeddings", ("GroupId",))},
                   key="mmkey0123456789|1900000000001"),
    28: Documented("https://api.mistral.ai/v1", "docs.mistral.ai/api",
                   _openai_kinds("/v1", "chat", "embedding", "moderation", "stt")),
    29: Documented("https://api.groq.com/openai/v1", "console.groq.com/docs/api-reference (chat, "
                   "audio/transcriptions, audio/speech)", _openai_kinds("/openai/v1", "chat", "stt", "tts")),
    30: Documented("http://localhost:11434/v1", "docs.ollama.com/openai", _openai_kinds("/v1", "chat", "embedding")),
    31: Documented("https://api.lingyiwanwu.com/v1", "platform.lingyiwanwu.com/docs", _openai_kinds("/v1", "chat")),
    32: Documented("https://api.stepfun.com/v1", "platform.stepfun.com/docs",
                   _openai_kinds("/v1", "chat", "image", "tts", "stt")),
    35: Documented("https://api.cohere.ai/compatibility/v1", "docs.cohere.com/docs/compatibility-api (chat, "
                   "embeddings); docs.cohere.com/reference/rerank (POST /v2/rerank)", {
                       **_openai_kinds("/compatibility/v1", "chat", "embedding"),
                       "rerank": Endpoint("/v2/rerank", "bearer", "cohere-rerank")}),
    36: Documented("https://api.deepseek.com/v1", "api-docs.deepseek.com", _openai_kinds("/v1", "chat")),
    37: Documented("https://api.cloudflare.com/client/v4/accounts/{account_id}/ai/v1",
                   "developers.cloudflare.com/workers-ai/configuration/open-ai-compatibility",
                   _openai_kinds("/client/v4/accounts/0123456789abcdef/ai/v1", "chat", "embedding")),
    40: Documented("https://ark.cn-beijing.volces.com/api/v3", "volcengine.com/docs/82379",
                   _openai_kinds("/api/v3", "chat", "embedding", "image")),
    41: Documented("https://api.novita.ai/v3/openai", "novita.ai/docs/guides/llm-api",
                   _openai_kinds("/v3/openai", "chat", "embedding")),
    43: Documented("https://api.siliconflow.cn/v1", "docs.siliconflow.cn/api-reference",
                   _openai_kinds("/v1", "chat", "embedding", "rerank", "image", "tts", "stt")),
    45: Documented("https://api.x.ai/v1", "docs.x.ai/docs/api-reference", _openai_kinds("/v1", "chat", "image")),
    47: Documented("https://api.jina.ai/v1", "jina.ai/embeddings, jina.ai/reranker",
                   _openai_kinds("/v1", "embedding", "rerank")),
    48: Documented("https://api.text-embeddings.net", "huggingface.co/docs/text-embeddings-inference (OpenAI "
                   "/v1/embeddings; /rerank takes {query, texts}, answers [{index, score}])", {
                       "embedding": Endpoint("/v1/embeddings", "bearer", "openai-embeddings"),
                       "rerank": Endpoint("/rerank", "bearer", "tei-rerank")}),
    49: Documented("https://qianfan.baidubce.com/v2", "cloud.baidu.com/doc/qianfan-api (API Key auth)", {
        "chat": Endpoint("/v2/chat/completions", "bearer", "openai-chat"),
        "embedding": Endpoint("/v2/embeddings", "bearer", "openai-embeddings"),
        "rerank": Endpoint("/v2/rerankers", "bearer", "cohere-rerank")}, key="bce-v3/ALTAK-example/0123456789abcdef"),
    51: Documented("https://wanqing.streamlakeapi.com/api/gateway/v1/endpoints", "streamlake.com docs",
                   _openai_kinds("/api/gateway/v1/endpoints", "chat")),
    52: Documented("https://open.bigmodel.cn/api/coding/paas/v4", "docs.bigmodel.cn (GLM Coding Plan)",
                   _openai_kinds("/api/coding/paas/v4", "chat")),
    54: Documented("https://api.ant-ling.com/v1", "developer.ant-ling.com/en/docs/api-reference/openai/",
                   _openai_kinds("/v1", "chat")),
}
DOCUMENTED[4] = DOCUMENTED[3]


# ---- the mock ----

def _bad(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error", "code": status}}, status)


def _strings(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)


#: body shape -> what the documented API requires of a request (a message when it is wrong)
BODY_CHECKS = {
    "openai-chat": lambda b: None if isinstance(b.get("model"), str) and b.get("messages") else "model, messages",
    "openai-embeddings": lambda b: None if b.get("model") and b.get("input") else "model, input",
    "cohere-rerank": lambda b: None if b.get("model") and isinstance(b.get("query"), str) and _strings(
        b.get("documents")) else "model, query, documents",
    "dashscope-rerank": lambda b: None if b.get("model") and isinstance(b.get("input"), dict) and isinstance(
        b["input"].get("query"), str) and _strings(b["input"].get("documents")) and "query" not in b
    else "model, input.query, input.documents",
    "tei-rerank": lambda b: None if isinstance(b.get("query"), str) and _strings(b.get("texts"))
    and "documents" not in b else "query, texts",
    "minimax-embeddings": lambda b: None if b.get("model") and _strings(b.get("texts")) and b.get("type") in (
        "db", "query") else "model, texts, type (db|query)",
    "openai-image": lambda b: None if isinstance(b.get("prompt"), str) else "prompt",
    "openai-speech": lambda b: None if b.get("model") and b.get("input") and b.get("voice") else "model, input, voice",
    "openai-moderation": lambda b: None if b.get("input") else "input",
    "anthropic": lambda b: None if b.get("model") and b.get("max_tokens") and b.get("messages") else
    "model, max_tokens, messages",
    "gemini-generate": lambda b: None if isinstance(b.get("contents"), list) and b["contents"] else "contents",
    "gemini-batch-embed": lambda b: None if isinstance(b.get("requests"), list) and b["requests"] and all(
        str(r.get("model", "")).startswith("models/") and r.get("content", {}).get("parts") for r in b["requests"])
    else "requests[].model (models/...), requests[].content.parts",
}


def answer(shape: str, body: dict[str, Any], model: str) -> Response:
    """The documented answer of each shape (usage included where the API reports one)."""
    usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    if shape == "openai-chat":
        return JSONResponse({"id": "chatcmpl-1", "object": "chat.completion", "created": int(time.time()),
                             "model": body["model"], "usage": usage, "choices": [
                                 {"index": 0, "message": {"role": "assistant", "content": "ok"},
                                  "finish_reason": "stop"}]})
    if shape == "openai-embeddings":
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        return JSONResponse({"object": "list", "model": body["model"], "usage": {"prompt_tokens": 3, "total_tokens": 3},
                             "data": [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]}
                                      for i in range(len(inputs))]})
    if shape == "cohere-rerank":
        n = len(body["documents"])
        return JSONResponse({"id": "rr-1", "results": [{"index": i, "relevance_score": 0.9 - i / 10} for i in range(n)],
                             "usage": {"prompt_tokens": 4, "total_tokens": 4}})
    if shape == "dashscope-rerank":
        docs = body["input"]["documents"]
        return JSONResponse({"output": {"results": [{"index": i, "relevance_score": 0.9 - i / 10,
                                                     "document": {"text": d}} for i, d in enumerate(docs)]},
                             "usage": {"total_tokens": 6}, "request_id": "req-1"})
    if shape == "tei-rerank":
        return JSONResponse([{"index": i, "score": 0.9 - i / 10} for i in range(len(body["texts"]))])
    if shape == "minimax-embeddings":
        return JSONResponse({"vectors": [[0.1, 0.2, 0.3] for _ in body["texts"]], "total_tokens": 3,
                             "base_resp": {"status_code": 0, "status_msg": "success"}})
    if shape == "openai-image":
        return JSONResponse({"created": int(time.time()), "data": [{"url": "https://example.com/a.png"}]})
    if shape == "openai-speech":
        return Response(b"ID3FAKEMP3", media_type="audio/mpeg")
    if shape == "multipart-stt":
        return JSONResponse({"text": "hello"})
    if shape == "openai-moderation":
        return JSONResponse({"id": "modr-1", "model": body.get("model", ""), "results": [
            {"flagged": False, "categories": {}, "category_scores": {}}]})
    if shape == "anthropic":
        return JSONResponse({"id": "msg_1", "type": "message", "role": "assistant", "model": body["model"],
                             "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
                             "stop_sequence": None, "usage": {"input_tokens": 5, "output_tokens": 2}})
    if shape == "gemini-generate":
        return JSONResponse({"candidates": [{"content": {"role": "model", "parts": [{"text": "ok"}]},
                                             "finishReason": "STOP", "index": 0}], "modelVersion": model,
                             "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 2,
                                               "totalTokenCount": 7}})
    if shape == "gemini-batch-embed":
        return JSONResponse({"embeddings": [{"values": [0.1, 0.2, 0.3]} for _ in body["requests"]]})
    raise AssertionError(shape)


def bce_signature(sk: str, method: str, path: str, query: dict[str, str], headers: dict[str, str],
                  auth_prefix: str, signed: list[str]) -> str:
    """Baidu's bce-auth-v1 signature, as cloud.baidu.com/doc/Reference/s/njwvz1yfu describes it."""
    def enc(text: str, slash: bool = True) -> str:
        return urllib.parse.quote(text, safe="-_.~" + ("" if slash else "/"))

    canonical_query = "&".join(sorted(f"{enc(k)}={enc(v)}" for k, v in query.items() if k.lower() != "authorization"))
    canonical_headers = "\n".join(sorted(f"{enc(h.lower())}:{enc(headers[h].strip())}" for h in signed))
    request = "\n".join([method.upper(), enc(path, slash=False), canonical_query, canonical_headers])
    signing_key = hmac.new(sk.encode(), auth_prefix.encode(), hashlib.sha256).hexdigest()
    return hmac.new(signing_key.encode(), request.encode(), hashlib.sha256).hexdigest()


@dataclass
class Seen:
    type: int
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


class DocumentedMock:
    """One server for every documented type: `/t<type>/<documented path>`; plus Baidu's IAM token endpoint."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.iam_tokens: dict[str, float] = {}  # token -> expiry (unix seconds)
        self.iam_calls = 0
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(self, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> DocumentedMock:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "the documented-endpoint mock did not start"
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(5)

    def base_url(self, type_id: int) -> str:
        doc = DOCUMENTED[type_id]
        path = urllib.parse.urlsplit(doc.base.replace("{account_id}", "0123456789abcdef")
                                     .replace("{resource}", "res")).path
        return f"{self.url}/t{type_id}{path}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        response = await self.handle(request)
        await response(scope, receive, send)

    async def handle(self, request: Request) -> Response:
        path = request.url.path
        headers = {k.lower(): v for k, v in request.headers.items()}
        query = dict(request.query_params)
        if path.endswith("/v1/BCE-BEARER/token"):
            return self.iam(request, path, query, headers)
        head, _, rest = path.lstrip("/").partition("/")
        if not head.startswith("t") or not head[1:].isdigit() or int(head[1:]) not in DOCUMENTED:
            return _bad(404, f"no such API: {path}")
        type_id = int(head[1:])
        rest = "/" + rest
        content_type = headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            form = await request.form()
            body: Any = {k: (v if isinstance(v, str) else "<file>") for k, v in form.items()}
        else:
            raw = await request.body()
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                return _bad(400, "the body is not JSON")
        self.seen.append(Seen(type_id, rest, query, headers, body))
        for kind, endpoint in DOCUMENTED[type_id].kinds.items():
            model = self._match(endpoint.path, rest)
            if model is None:
                continue
            problem = self.check_auth(type_id, endpoint, headers)
            if problem:
                return _bad(401, problem)
            missing = [q for q in endpoint.query if not query.get(q)]
            if missing:
                return _bad(400, f"missing query parameters: {missing}")
            if endpoint.body == "multipart-stt":
                if not (isinstance(body, dict) and body.get("file") == "<file>" and body.get("model")):
                    return _bad(400, "multipart file and model required")
                return answer("multipart-stt", body, model)
            if not isinstance(body, dict):
                return _bad(400, "a JSON object is required")
            wrong = BODY_CHECKS[endpoint.body](body)
            if wrong:
                return _bad(422, f"{endpoint.body}: expected {wrong}; got keys {sorted(body)}")
            return answer(endpoint.body, body, model)
        return _bad(404, f"type {type_id} documents no {request.method} {rest}")

    @staticmethod
    def _match(pattern: str, path: str) -> str | None:
        """The model (or deployment) a documented path names, "" when it names none; None when it does not match."""
        for hole in ("{model}", "{deployment}"):
            if hole in pattern:
                before, after = pattern.split(hole)
                if path.startswith(before) and path.endswith(after) and len(path) > len(before) + len(after):
                    return urllib.parse.unquote(path[len(before): len(path) - len(after)])
                return None
        return "" if path == pattern else None

    def check_auth(self, type_id: int, endpoint: Endpoint, headers: dict[str, str]) -> str:
        key = DOCUMENTED[type_id].key or f"sk-type{type_id}-0123456789"
        auth = headers.get("authorization", "")
        if endpoint.auth == "bearer":
            want = key.split("|")[0]
            return "" if auth == f"Bearer {want}" else f"expected Authorization: Bearer <api key>, got {auth[:40]!r}"
        if endpoint.auth == "iam":
            token = auth.removeprefix("Bearer ")
            ok = auth.startswith("Bearer ") and self.iam_tokens.get(token, 0) > time.time()
            return "" if ok else "expected Authorization: Bearer <an IAM BearerToken it issued>"
        if endpoint.auth == "api-key":
            return "" if headers.get("api-key") == key and not auth else "expected the api-key header"
        if endpoint.auth == "x-api-key":
            ok = headers.get("x-api-key") == key and headers.get("anthropic-version")
            return "" if ok else "expected x-api-key and anthropic-version"
        if endpoint.auth == "x-goog-api-key":
            return "" if headers.get("x-goog-api-key") == key else "expected x-goog-api-key"
        raise AssertionError(endpoint.auth)

    def iam(self, request: Request, path: str, query: dict[str, str], headers: dict[str, str]) -> Response:
        """GET /v1/BCE-BEARER/token?expireInSeconds=N, signed with bce-auth-v1 (host and x-bce-date at least)."""
        self.iam_calls += 1
        auth = headers.get("authorization", "")
        parts = auth.split("/")
        if request.method != "GET" or len(parts) != 6 or parts[0] != "bce-auth-v1":
            return JSONResponse({"code": "AccessDenied", "message": "bce-auth-v1 authorization required"}, 401)
        _, ak, timestamp, expiration, signed_headers, signature = parts
        signed = signed_headers.split(";")
        if ak != IAM_AK or "host" not in signed or any(h not in headers for h in signed):
            return JSONResponse({"code": "AccessDenied", "message": "unknown AK or unsigned host"}, 401)
        when = dt.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
        if abs(time.time() - when.timestamp()) > int(expiration) + 60:
            return JSONResponse({"code": "RequestExpired", "message": "timestamp out of range"}, 401)
        prefix = f"bce-auth-v1/{ak}/{timestamp}/{expiration}"
        want = bce_signature(IAM_SK, "GET", path, query, headers, prefix, signed)
        if not hmac.compare_digest(want, signature):
            return JSONResponse({"code": "SignatureDoesNotMatch", "message": "signature mismatch"}, 401)
        seconds = int(query.get("expireInSeconds") or 86400)
        token = f"bce-v3/ALTA-{secrets.token_hex(6)}/{secrets.token_hex(8)}"
        self.iam_tokens[token] = time.time() + seconds
        now = dt.datetime.now(dt.timezone.utc)
        return JSONResponse({"userId": "27f881", "token": token, "status": "enable",
                             "createTime": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                             "expireTime": (now + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")})
