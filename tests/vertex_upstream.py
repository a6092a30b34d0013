"""A small Vertex AI, written from Google's documentation (Vertex AI REST: publishers.models.generateContent,
streamGenerateContent, rawPredict, streamRawPredict; "Using OAuth 2.0 for Server to Server Applications"; Anthropic's
"Claude on Vertex AI"), never from the gateway's code. It checks what Vertex checks:

* **The token exchange** at the service account's `token_uri` (`POST /token`, form `grant_type=
  urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<JWT>`): the JWT's RS256 signature is verified with
  google-auth against the account's public key, with its `iss`, `aud` (= token_uri), `scope` (cloud-platform),
  `iat` and `exp`; the answer is `{access_token, expires_in, token_type}`, or 400 `invalid_grant`.
* **Calls** carry `Authorization: Bearer <a token it issued, not expired>` or `x-goog-api-key`; the path names the
  account's project and the region (`/v1/projects/{p}/locations/{r}/publishers/{google|anthropic}/models/{m}:…`),
  or no project with an API key (express mode, `/v1/publishers/google/models/{m}:…`).
* **Bodies.** Gemini models go on to fake_upstream's Gemini (which checks the generateContent body); Claude models
  must send `anthropic_version: vertex-2023-10-16` and no `model` in the body, `stream: true` exactly on
  streamRawPredict, then go on to fake_upstream's Anthropic (which checks the Messages body).

A first path segment before `/v1` is a fake_upstream scenario (e.g. `tool`: answer with a tool call).
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import urllib.parse
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from fake_upstream import FakeUpstreamApp, embedding_vector, read_body

PROJECT, REGION = "demo-project-4711", "us-central1"
API_KEY = "AQ.vertex-express-api-key-for-tests-0123456789"
CLIENT_EMAIL = f"gateway@{PROJECT}.iam.gserviceaccount.com"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"


def service_account(token_uri: str) -> tuple[dict[str, Any], bytes]:
    """A fresh service-account key file (as Google Cloud's console downloads it) and its public key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    info = {"type": "service_account", "project_id": PROJECT, "private_key_id": secrets.token_hex(20),
            "private_key": pem, "client_email": CLIENT_EMAIL, "client_id": "1234567890",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "universe_domain": "googleapis.com"}
    return info, public


def _google_error(status: int, message: str, kind: str) -> tuple[int, dict[str, Any]]:
    return status, {"error": {"code": status, "message": message, "status": kind}}


class VertexApp:
    """The token endpoint and Vertex's publisher model routes, in front of fake_upstream's formats."""

    def __init__(self) -> None:
        self.public_keys: dict[str, bytes] = {}  # private_key_id → public key PEM
        self.token_uri = ""  # set once the port is known
        self.tokens: dict[str, float] = {}  # access token → expiry
        self.token_lifetime = 3599
        self.exchanges = 0
        self.requests: list[dict[str, Any]] = []
        self.fake = FakeUpstreamApp()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.requests.append({"path": scope["path"], "query": scope.get("query_string", b"").decode(),
                              "headers": headers, "body": body})
        if scope["path"] == "/token":
            status, answer = self.exchange(headers, body)
            return await _json(send, status, answer)
        direct, target = self.route(scope, headers, body)  # an answer of its own (a refusal, embeddings)
        if direct is not None:
            return await _json(send, *direct)
        path, new_headers, new_body = target
        inner = dict(scope, path=path, raw_path=path.encode(), headers=new_headers)
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": new_body, "more_body": False}

        await self.fake(inner, replay, send)

    def exchange(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        from google.auth import jwt

        form = dict(urllib.parse.parse_qsl(body.decode()))
        if headers.get("content-type", "").split(";")[0] != "application/x-www-form-urlencoded":
            return 400, {"error": "invalid_request", "error_description": "Bad Request"}
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" or not form.get("assertion"):
            return 400, {"error": "unsupported_grant_type", "error_description": "Invalid grant_type: "}
        try:
            claims = jwt.decode(form["assertion"], certs=self.public_keys, audience=self.token_uri)
        except ValueError as exc:
            return 400, {"error": "invalid_grant", "error_description": f"Invalid JWT Signature. ({exc})"}
        if claims.get("iss") != CLIENT_EMAIL or SCOPE not in str(claims.get("scope", "")).split():
            return 400, {"error": "invalid_scope", "error_description": "Invalid OAuth scope or ID token audience "
                                                                          "provided."}
        if not 0 < claims["exp"] - claims["iat"] <= 3600:
            return 400, {"error": "invalid_grant", "error_description": "Invalid JWT: Token must be a short-lived "
                                                                          "token (60 minutes)"}
        self.exchanges += 1
        token = "ya29.c." + secrets.token_urlsafe(32)
        self.tokens[token] = time.time() + self.token_lifetime
        return 200, {"access_token": token, "expires_in": self.token_lifetime, "token_type": "Bearer"}

    def route(self, scope: dict[str, Any], headers: dict[str, str],
              body: bytes) -> tuple[tuple[int, dict[str, Any]] | None, Any]:
        bearer = headers.get("authorization", "").removeprefix("Bearer ")
        keyed = headers.get("x-goog-api-key") == API_KEY
        if not keyed and self.tokens.get(bearer, 0) <= time.time():
            return _google_error(401, "Request had invalid authentication credentials. Expected OAuth 2 access "
                                      "token, login cookie or other valid authentication credential.",
                                 "UNAUTHENTICATED"), None
        parts = scope["path"].strip("/").split("/")
        scenario = parts.pop(0) if parts and parts[0] != "v1" else "ok"  # fake_upstream's, e.g. "tool"
        if parts[:1] != ["v1"]:
            return _google_error(404, "Not found", "NOT_FOUND"), None
        parts = parts[1:]
        if parts[:1] == ["projects"]:
            if parts[1] != PROJECT or parts[2:3] != ["locations"] or parts[3] != REGION:
                return _google_error(403, f"Permission denied on resource project {parts[1]}.",
                                     "PERMISSION_DENIED"), None
            parts = parts[4:]
        elif not keyed:
            return _google_error(400, "A project is required with OAuth credentials.", "INVALID_ARGUMENT"), None
        if len(parts) != 4 or parts[0] != "publishers" or parts[2] != "models" or ":" not in parts[3]:
            return _google_error(404, "Not found", "NOT_FOUND"), None
        publisher, (model, _, method) = parts[1], parts[3].partition(":")
        inner_headers = [(k, v) for k, v in scope["headers"] if k.lower() not in (b"authorization",
                                                                                  b"x-goog-api-key",
                                                                                  b"content-length")]
        if publisher == "google" and method == "predict" and model.startswith("imagen-"):  # Imagen
            try:
                request = json.loads(body)
                prompt, parameters = request["instances"][0]["prompt"], request.get("parameters") or {}
            except (ValueError, KeyError, IndexError, TypeError):
                return _google_error(400, "instances[0].prompt is required.", "INVALID_ARGUMENT"), None
            count = parameters.get("sampleCount", 4)
            if not prompt or not isinstance(count, int) or not 1 <= count <= 4 or parameters.get(
                    "aspectRatio", "1:1") not in ("1:1", "3:4", "4:3", "9:16", "16:9"):
                return _google_error(400, "Image generation failed with the following error: invalid parameters "
                                          "(a prompt, sampleCount 1-4, a supported aspectRatio).",
                                     "INVALID_ARGUMENT"), None
            return (200, {"predictions": [{"mimeType": "image/png", "bytesBase64Encoded": base64.b64encode(
                f"PNG {i} {parameters.get('aspectRatio', '1:1')}".encode()).decode()} for i in range(count)]}), None
        if publisher == "google" and method == "predict":  # text embeddings
            try:
                instances = json.loads(body)["instances"]
                texts = [i["content"] for i in instances]
            except (ValueError, KeyError, TypeError):
                return _google_error(400, "Invalid JSON payload: instances[].content is required.",
                                     "INVALID_ARGUMENT"), None
            if not texts or not all(isinstance(t, str) for t in texts) or len(texts) > 250:
                return _google_error(400, "instances: 1 to 250 texts.", "INVALID_ARGUMENT"), None
            return (200, {"predictions": [{"embeddings": {"values": embedding_vector(i), "statistics": {
                "truncated": False, "token_count": len(t.split())}}} for i, t in enumerate(texts)],
                "metadata": {"billableCharacterCount": sum(map(len, texts))}}), None
        if publisher == "google":
            if method not in ("generateContent", "streamGenerateContent"):
                return _google_error(404, f"Method {method} not found.", "NOT_FOUND"), None
            return None, (f"/{scenario}/v1beta/models/{model}:{method}",
                          inner_headers + [(b"x-goog-api-key", b"vertex")], body)
        if publisher != "anthropic" or method not in ("rawPredict", "streamRawPredict") or keyed:
            return _google_error(404, f"Publisher model {publisher}/{model} is not served this way.",
                                 "NOT_FOUND"), None
        try:
            request = json.loads(body)
        except ValueError:
            request = None
        if not isinstance(request, dict):
            return _google_error(400, "Invalid JSON payload received.", "INVALID_ARGUMENT"), None
        problem = None
        if request.get("anthropic_version") != "vertex-2023-10-16":
            problem = "anthropic_version: vertex-2023-10-16 is required in the body"
        elif "model" in request:
            problem = "model: Extra inputs are not permitted (the model is in the URL)"
        elif bool(request.get("stream")) != (method == "streamRawPredict"):
            problem = "stream: true goes with streamRawPredict, and only with it"
        if problem:
            return (400, {"type": "error", "error": {"type": "invalid_request_error", "message": problem}}), None
        request.pop("anthropic_version")
        request["model"] = model
        return None, (f"/{scenario}/v1/messages", inner_headers + [(b"x-api-key", b"vertex"),
                                                      (b"anthropic-version", b"2023-06-01")],
                      json.dumps(request).encode())


async def _json(send: Any, status: int, obj: Any) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps(obj).encode()})
