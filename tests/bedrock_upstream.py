"""A small AWS Bedrock runtime, written from AWS's documentation (Bedrock API reference: Converse,
ConverseStream, ListFoundationModels; "Signature Version 4 for API requests"; "Event stream encoding"), never from
the gateway's code. It checks what Bedrock checks, and refuses the same way (HTTP status, `{"message"}` and
`x-amzn-ErrorType`):

* **Auth.** A SigV4 `Authorization` header is recomputed here with botocore from the request as it arrived
  (method, raw path, query, the signed headers, the body), with the secret key of the access key it names, the
  session token when the key is temporary, service `bedrock`, and the region of the credential scope; X-Amz-Date
  must be within 5 minutes. Or `Authorization: Bearer <Bedrock API key>`.
* **Converse body.** Known top-level fields only; messages alternate, start with a user turn, and hold
  content blocks of exactly one kind each; images are `{format, source: {bytes: base64}}` of png/jpeg/gif/webp;
  toolUse/toolResult blocks need `toolConfig`, and a toolResult answers a toolUse of the turn before; Claude 4
  model ids need an inference profile (`us.`…).
* **ConverseStream** answers `application/vnd.amazon.eventstream` messages (prelude, headers, JSON payload, two
  CRC32s), split across writes at odd places as a network may.

The base URL's first path segment may name a scenario: `corrupt` (a frame with a bad CRC), `exception` (a
throttlingException message mid-stream), `ok` (anything else).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import re
import socket
import struct
import threading
import time
import urllib.parse
import zlib
from typing import Any

import uvicorn

from fake_upstream import read_body

REGION = "us-east-1"
ACCESS_KEY, SECRET_KEY = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
TEMP_ACCESS_KEY, TEMP_SECRET_KEY, SESSION_TOKEN = "ASIAEXAMPLETEMPKEY01", "tempSecretKeyForTheTest0123456789abcdEF", \
    "FwoGZXIvYXdzEBYaDHVzZXNzaW9uLXRva2VuLWZvci10aGUtdGVzdA=="
API_KEY = "ABSKQmVkcm9ja0FQSUtleS1leGFtcGxlLWtleS1mb3ItdGVzdHM="
SECRETS = {ACCESS_KEY: (SECRET_KEY, None), TEMP_ACCESS_KEY: (TEMP_SECRET_KEY, SESSION_TOKEN)}
MODELS = ["anthropic.claude-3-5-haiku-20241022-v1:0", "amazon.nova-lite-v1:0", "amazon.nova-pro-v1:0"]
#: Claude 4 and later answer on demand only through an inference profile (a geography prefix)
PROFILE_ONLY = ("anthropic.claude-sonnet-4", "anthropic.claude-opus-4", "anthropic.claude-haiku-4")
PROFILE_MODELS = ("anthropic.claude-sonnet-4-5-20250929-v1:0", "anthropic.claude-haiku-4-5-20251001-v1:0")
REPLY = ["Hello", " from", " Bedrock"]
USAGE = {"inputTokens": 11, "outputTokens": 3, "totalTokens": 17, "cacheReadInputTokens": 2,
         "cacheWriteInputTokens": 1}
_BODY_FIELDS = {"messages", "system", "inferenceConfig", "toolConfig", "guardrailConfig",
                "additionalModelRequestFields", "promptVariables", "additionalModelResponseFieldPaths",
                "requestMetadata", "performanceConfig"}
_BLOCK_KINDS = {"text", "image", "document", "video", "toolUse", "toolResult", "guardContent", "cachePoint",
                "reasoningContent"}


class Refusal(Exception):
    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


# ---- event stream encoding (AWS "Event stream encoding": prelude, headers, payload, message CRC) ----

def frame(headers: dict[str, str], payload: bytes, corrupt: bool = False) -> bytes:
    raw = b"".join(bytes([len(k)]) + k.encode() + b"\x07" + struct.pack(">H", len(v.encode())) + v.encode()
                   for k, v in headers.items())
    prelude = struct.pack(">II", 12 + len(raw) + len(payload) + 4, len(raw))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + raw + payload
    crc = zlib.crc32(message) ^ (0xFFFF if corrupt else 0)
    return message + struct.pack(">I", crc)


def event(kind: str, body: dict[str, Any], corrupt: bool = False) -> bytes:
    body = dict(body, p="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0"[: 3 + len(kind) % 7])  # AWS pads
    return frame({":event-type": kind, ":content-type": "application/json", ":message-type": "event"},
                 json.dumps(body).encode(), corrupt)


def exception(kind: str, message: str) -> bytes:
    return frame({":exception-type": kind, ":content-type": "application/json", ":message-type": "exception"},
                 json.dumps({"message": message}).encode())


# ---- SigV4, recomputed with botocore from the request as it arrived ----

def verify_sigv4(method: str, url: str, headers: dict[str, str], body: bytes) -> None:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    auth = headers.get("authorization", "")
    fields = dict(part.strip().split("=", 1) for part in auth.removeprefix("AWS4-HMAC-SHA256 ").split(","))
    try:
        access_key, day, region, service, terminator = fields["Credential"].split("/")
        signed, signature = fields["SignedHeaders"].split(";"), fields["Signature"]
    except (KeyError, ValueError):
        raise Refusal(403, "IncompleteSignatureException", "Authorization header requires 'Credential', "
                      "'Signature' and 'SignedHeaders' parameters.") from None
    if access_key not in SECRETS:
        raise Refusal(403, "UnrecognizedClientException", "The security token included in the request is invalid.")
    secret, token = SECRETS[access_key]
    if service != "bedrock" or terminator != "aws4_request" or region != REGION:
        raise Refusal(403, "InvalidSignatureException", f"Credential should be scoped to correct service: "
                      f"'bedrock' in region '{REGION}'.")
    amz_date = headers.get("x-amz-date", "")
    try:
        when = dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        raise Refusal(403, "IncompleteSignatureException", "X-Amz-Date is missing or malformed.") from None
    if abs(time.time() - when.timestamp()) > 300 or not amz_date.startswith(day):
        raise Refusal(403, "InvalidSignatureException", "Signature expired.")
    if "host" not in signed or (token is not None and headers.get("x-amz-security-token") != token) or (
            token is not None and "x-amz-security-token" not in signed):
        raise Refusal(403, "UnrecognizedClientException", "The security token included in the request is invalid.")
    request = AWSRequest(method=method, url=url, data=body, headers={h: headers.get(h, "") for h in signed})
    request.context["timestamp"] = amz_date
    signer = SigV4Auth(Credentials(access_key, secret, token), "bedrock", region)
    expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    if expected != signature:
        raise Refusal(403, "InvalidSignatureException", "The request signature we calculated does not match the "
                      "signature you provided. Check your AWS Secret Access Key and signing method.")


# ---- Converse: what the API reference says a request holds ----

def check_converse(model: str, body: Any) -> None:
    if not isinstance(body, dict):
        raise Refusal(400, "SerializationException", "Could not parse the request body as JSON.")
    unknown = set(body) - _BODY_FIELDS
    if unknown:
        raise Refusal(400, "ValidationException", f"Unknown parameter in input: \"{sorted(unknown)[0]}\"")
    profiles = {f"{g}.{m}" for g in ("us", "eu", "apac") for m in (*PROFILE_MODELS, *MODELS) if "claude" in m}
    if model not in MODELS and model not in profiles:
        if model.startswith(PROFILE_ONLY):
            raise Refusal(400, "ValidationException", f"Invocation of model ID {model} with on-demand throughput "
                          "isn't supported. Retry your request with the ID or ARN of an inference profile that "
                          "contains this model.")
        raise Refusal(400, "ValidationException", "The provided model identifier is invalid.")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise Refusal(400, "ValidationException", "messages: a conversation needs at least one message.")
    uses_tools = False
    for i, message in enumerate(messages):
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise Refusal(400, "ValidationException", f"messages.{i}.role: must be user or assistant.")
        if role != ("user" if i % 2 == 0 else "assistant"):
            raise Refusal(400, "ValidationException", "A conversation must start with a user message and "
                          "alternate between user and assistant roles. Try again with a conversation that "
                          "alternates.")
        content = message.get("content")
        if not isinstance(content, list) or not content:
            raise Refusal(400, "ValidationException", f"messages.{i}.content: at least one content block.")
        earlier = {b["toolUse"]["toolUseId"] for b in messages[i - 1]["content"] if "toolUse" in b} if i else set()
        for j, block in enumerate(content):
            kinds = set(block) & _BLOCK_KINDS
            if len(kinds) != 1 or set(block) - _BLOCK_KINDS:
                raise Refusal(400, "ValidationException", f"messages.{i}.content.{j}: exactly one member of the "
                              "ContentBlock union must be set.")
            kind = kinds.pop()
            if kind == "text" and not isinstance(block["text"], str):
                raise Refusal(400, "ValidationException", f"messages.{i}.content.{j}.text must be a string.")
            if kind == "image":
                image = block["image"]
                if image.get("format") not in ("png", "jpeg", "gif", "webp"):
                    raise Refusal(400, "ValidationException", f"messages.{i}.content.{j}.image.format: "
                                  "Member must satisfy enum value set: [png, jpeg, gif, webp]")
                try:
                    base64.b64decode((image.get("source") or {}).get("bytes", ""), validate=True)
                except (ValueError, TypeError):
                    raise Refusal(400, "SerializationException", "image.source.bytes is not base64.") from None
            if kind == "document":
                document = block["document"]
                if document.get("format") not in ("pdf", "csv", "doc", "docx", "xls", "xlsx", "html", "txt", "md") \
                        or not re.fullmatch(r"[A-Za-z0-9\s\-()\[\]]+", str(document.get("name") or "")):
                    raise Refusal(400, "ValidationException", f"messages.{i}.content.{j}.document: a format of the "
                                  "list and a name of letters, digits, spaces, hyphens, parentheses and brackets.")
            if kind in ("toolUse", "toolResult"):
                uses_tools = True
            if kind == "toolUse" and (role != "assistant" or not isinstance(block["toolUse"].get("input"), dict)):
                raise Refusal(400, "ValidationException", "toolUse: in an assistant turn, with an object input.")
            if kind == "toolResult":
                result = block["toolResult"]
                if role != "user" or result.get("toolUseId") not in earlier:
                    raise Refusal(400, "ValidationException", "The toolResult blocks at messages."
                                  f"{i}.content.{j} must answer the toolUse blocks of the previous turn.")
                if not all(isinstance(c, dict) and set(c) <= {"text", "json", "image", "document"}
                           for c in result.get("content") or [{}]):
                    raise Refusal(400, "ValidationException", "toolResult.content: text, json, image or document.")
    for block in body.get("system") or []:
        if set(block) - {"text", "guardContent", "cachePoint"}:
            raise Refusal(400, "ValidationException", "system: a SystemContentBlock is text, guardContent or "
                          "cachePoint.")
    config = body.get("inferenceConfig") or {}
    if set(config) - {"maxTokens", "temperature", "topP", "stopSequences"}:
        raise Refusal(400, "ValidationException", "inferenceConfig: unknown member.")
    if "maxTokens" in config and (not isinstance(config["maxTokens"], int) or config["maxTokens"] < 1):
        raise Refusal(400, "ValidationException", "inferenceConfig.maxTokens: Member must be at least 1.")
    tools = body.get("toolConfig")
    if uses_tools and not tools:
        raise Refusal(400, "ValidationException", "The toolConfig field must be defined when using toolUse and "
                      "toolResult content blocks.")
    for tool in (tools or {}).get("tools", []):
        spec = tool.get("toolSpec") or {}
        if not spec.get("name") or not isinstance((spec.get("inputSchema") or {}).get("json"), dict):
            raise Refusal(400, "ValidationException", "toolSpec needs a name and inputSchema.json.")


def answer_blocks(body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """A tool call when tools are offered and the last turn is the user's words; else text that says what came."""
    last = body["messages"][-1]["content"]
    tools = (body.get("toolConfig") or {}).get("tools") or []
    if tools and not any("toolResult" in b for b in last):
        name = tools[0]["toolSpec"]["name"]
        return [{"toolUse": {"toolUseId": "tooluse_mock01", "name": name, "input": {"location": "Paris"}}}], "tool_use"
    images = sum("image" in b for m in body["messages"] for b in m["content"])
    documents = sum("document" in b for m in body["messages"] for b in m["content"])
    results = [c.get("text") for b in last if "toolResult" in b for c in b["toolResult"]["content"]]
    text = "".join(REPLY) + (f" ({images} image)" if images else "")
    text += (f" ({documents} document)" if documents else "") + (f" [{results[0]}]" if results else "")
    return [{"text": text}], "end_turn"


# ---- the ASGI app ----

class BedrockApp:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        raw_path = scope.get("raw_path", scope["path"].encode()).decode()
        query = scope.get("query_string", b"").decode()
        url = f"http://{headers.get('host')}{raw_path}{'?' + query if query else ''}"
        self.requests.append({"method": scope["method"], "path": raw_path, "headers": headers, "body": body})
        try:
            await self.handle(scope["method"], url, raw_path, headers, body, send)
        except Refusal as exc:
            payload = json.dumps({"message": exc.message}).encode()
            kind = f"{exc.kind}:http://internal.amazon.com/coral/com.amazon.bedrock/".encode()
            await send({"type": "http.response.start", "status": exc.status, "headers": [
                (b"content-type", b"application/json"), (b"x-amzn-errortype", kind)]})
            await send({"type": "http.response.body", "body": payload})

    async def handle(self, method: str, url: str, raw_path: str, headers: dict[str, str], body: bytes,
                     send: Any) -> None:
        auth = headers.get("authorization", "")
        if auth.startswith("Bearer "):
            if auth[7:] != API_KEY:
                raise Refusal(403, "AccessDeniedException", "Invalid API Key format: Must start with pre-defined "
                              "prefix")
        elif auth.startswith("AWS4-HMAC-SHA256 "):
            verify_sigv4(method, url, headers, body)
        else:
            raise Refusal(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
        parts = raw_path.strip("/").split("/")
        scenario = parts.pop(0) if parts and parts[0] not in ("model", "foundation-models") else "ok"
        if method == "GET" and parts == ["foundation-models"]:
            return await json_answer(send, 200, {"modelSummaries": [{"modelId": m, "providerName": m.split(".")[0]}
                                                                    for m in MODELS]})
        if method != "POST" or len(parts) != 3 or parts[0] != "model" or parts[2] not in ("converse",
                                                                                          "converse-stream"):
            raise Refusal(404, "UnknownOperationException", "Unknown operation")
        model = urllib.parse.unquote(parts[1])
        try:
            request = json.loads(body)
        except ValueError:
            request = None
        check_converse(model, request)
        blocks, stop = answer_blocks(request)
        if parts[2] == "converse":
            return await json_answer(send, 200, {"output": {"message": {"role": "assistant", "content": blocks}},
                                                 "stopReason": stop, "usage": USAGE, "metrics": {"latencyMs": 12}})
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/vnd.amazon.eventstream")]})
        frames = [event("messageStart", {"role": "assistant"})]
        if "toolUse" in blocks[0]:
            use = blocks[0]["toolUse"]
            arguments = json.dumps(use["input"])
            frames += [event("contentBlockStart", {"contentBlockIndex": 0, "start": {"toolUse": {
                "toolUseId": use["toolUseId"], "name": use["name"]}}})]
            frames += [event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"toolUse": {"input": piece}}})
                       for piece in (arguments[:7], arguments[7:])]
        else:
            text = blocks[0]["text"]
            pieces = REPLY + ([text[len("".join(REPLY)):]] if len(text) > len("".join(REPLY)) else [])
            frames += [event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": piece}},
                             corrupt=scenario == "corrupt" and i == 1) for i, piece in enumerate(pieces)]
            if scenario == "exception":
                frames.insert(2, exception("throttlingException", "Too many requests, please wait before trying "
                                                                  "again."))
        frames += [event("contentBlockStop", {"contentBlockIndex": 0}), event("messageStop", {"stopReason": stop}),
                   event("metadata", {"usage": USAGE, "metrics": {"latencyMs": 12}})]
        stream = b"".join(frames)
        cuts = list(range(0, len(stream), 37)) + [len(stream)]  # writes that cut frames anywhere
        for start, end in zip(cuts, cuts[1:]):
            await send({"type": "http.response.body", "body": stream[start:end], "more_body": True})
            await asyncio.sleep(0)
        await send({"type": "http.response.body", "body": b""})


async def json_answer(send: Any, status: int, obj: Any) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps(obj).encode()})


class Served:
    """An ASGI app served by uvicorn in a daemon thread on a free loopback port."""

    def __init__(self, app: Any) -> None:
        self.app = app
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_config=None, log_level="warning", access_log=False,
                                                    http="h11", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("mock did not start")
            time.sleep(0.01)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(5)
