"""OpenAI & Azure; Registry: the provider catalog against the providers' documentation (issue 17 §1).

For every (type, model kind) the catalog offers (GET /api/channels/type_metas), one call of that kind goes through
the gateway to a mock that serves only the documented endpoints (provider_docs.py, written from each provider's
docs): the call must succeed, so the gateway's request went to the documented path with the documented auth and
body shape; the answer must be OpenAI's shape again. The types the gateway answers locally (fake, fake-error) and
those it does not serve yet are checked by themselves.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from conftest import AppServer, launch_app, unique
from provider_docs import DOCUMENTED, IAM_AK, IAM_SK, DocumentedMock

ROOT = Path(__file__).resolve().parent.parent
LOCAL_TYPES = {53, 55}  # answered by the gateway itself
NOT_SUPPORTED = {15, 34, 44, 46}  # marked "not supported yet" in the picker
ELSEWHERE = {33, 42}  # AWS Bedrock and Vertex AI: their own tests (issue 17 §2)
NO_DEFAULT = {50}  # Sangfor AICP: the base URL is the customer's own deployment


@pytest.fixture(scope="module")
def mock() -> Iterator[DocumentedMock]:
    server = DocumentedMock().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    server = launch_app(tmp_path_factory.mktemp("catalog"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def metas(app: AppServer) -> dict[int, dict[str, Any]]:
    body = app.api("GET", "/api/channels/type_metas")
    assert body["success"], body
    return {int(k): v for k, v in body["data"].items()}


def offered(metas: dict[int, dict[str, Any]]) -> list[tuple[int, str, str]]:
    """(type, kind, first model of that kind) for every kind every type lists."""
    out = []
    for type_id, meta in sorted(metas.items()):
        firsts: dict[str, str] = {}
        for m in meta["models"]:
            firsts.setdefault(m["kind"], m["model"])
        out += [(type_id, kind, model) for kind, model in firsts.items()]
    return out


def test_every_listed_kind_has_a_documented_endpoint(metas: dict[int, dict[str, Any]]) -> None:
    """The lint that would have caught issue 17's ten wrong types: a type lists only kinds its API documents."""
    missing = [(t, k) for t, k, _ in offered(metas) if t not in LOCAL_TYPES | NOT_SUPPORTED | ELSEWHERE
               and k not in (DOCUMENTED[t].kinds if t in DOCUMENTED else {})]
    assert not missing, f"listed but not documented: {missing}"
    assert set(metas) - LOCAL_TYPES - NOT_SUPPORTED - ELSEWHERE - NO_DEFAULT <= set(DOCUMENTED)


def test_default_base_urls_are_the_documented_ones(metas: dict[int, dict[str, Any]]) -> None:
    for type_id, doc in DOCUMENTED.items():
        default = metas[type_id]["defaultBaseUrl"].replace("{resource_name}", "{resource}")
        assert default == doc.base, f"type {type_id}: {default} is not the documented {doc.base} ({doc.source})"


def _channel(app: AppServer, mock: DocumentedMock, type_id: int, models: list[str]) -> int:
    key = DOCUMENTED[type_id].key or f"sk-type{type_id}-0123456789"
    return app.add_channel(type=type_id, key=key, base_url=mock.base_url(type_id), models=models,
                           name=unique(f"cat{type_id}"))


def _call(client: openai.OpenAI, kind: str, model: str, channel: int) -> Any:
    pin = {"Aiproxy-Channel": str(channel)}
    if kind == "chat":
        answer = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                                extra_headers=pin)
        assert answer.choices[0].message.content == "ok" and answer.usage.total_tokens == 7
    elif kind == "embedding":
        answer = client.embeddings.create(model=model, input="hi", extra_headers=pin)
        assert answer.data[0].embedding == [0.1, 0.2, 0.3]
    elif kind == "rerank":
        answer = client.post("/rerank", cast_to=object, options={"headers": pin},
                             body={"model": model, "query": "hi", "documents": ["hello", "world"]})
        assert sorted(r["index"] for r in answer["results"]) == [0, 1], answer
        assert all(isinstance(r["relevance_score"], float) for r in answer["results"]), answer
    elif kind == "image":
        answer = client.images.generate(model=model, prompt="a red square", extra_headers=pin)
        assert answer.data[0].url == "https://example.com/a.png"
    elif kind == "tts":
        answer = client.audio.speech.create(model=model, input="hi", voice="alloy", extra_headers=pin)
        assert answer.read() == b"ID3FAKEMP3"
    elif kind == "stt":
        answer = client.audio.transcriptions.create(model=model, file=("hi.wav", b"RIFF0000WAVE", "audio/wav"),
                                                    extra_headers=pin)
        assert answer.text == "hello"
    elif kind == "moderation":
        answer = client.moderations.create(model=model, input="hi", extra_headers=pin)
        assert answer.results[0].flagged is False
    else:
        raise AssertionError(kind)


def test_every_kind_reaches_its_documented_endpoint(app: AppServer, mock: DocumentedMock,
                                                    metas: dict[int, dict[str, Any]]) -> None:
    client = app.openai()
    failures = []
    for type_id, kind, model in offered(metas):
        if type_id not in DOCUMENTED:
            continue
        channel = _channel(app, mock, type_id, [model])
        before = len(mock.seen)
        try:
            _call(client, kind, model, channel)
        except openai.APIError as exc:
            failures.append(f"type {type_id} {kind} {model}: {exc}")
            continue
        seen = [s for s in mock.seen[before:] if s.type == type_id]
        endpoint = DOCUMENTED[type_id].kinds[kind]
        want = endpoint.path.replace("{model}", model).replace("{deployment}", model)
        if [s.path for s in seen] != [want]:
            failures.append(f"type {type_id} {kind}: asked {[s.path for s in seen]}, documented {want}")
    assert not failures, "\n".join(failures)


def test_baidu_v2_exchanges_ak_sk_for_a_cached_bearer_token(app: AppServer, mock: DocumentedMock) -> None:
    """Type 13 with an `ak|sk` key: one signed IAM call (bce-auth-v1, checked by the mock), then the token is
    reused; the AK/SK never travel as a bearer."""
    channel = _channel(app, mock, 13, ["ernie-x1-turbo-32k"])
    client = app.openai()
    calls = mock.iam_calls
    for _ in range(3):
        answer = client.chat.completions.create(model="ernie-x1-turbo-32k", messages=[{"role": "user", "content": "a"}],
                                                extra_headers={"Aiproxy-Channel": str(channel)})
        assert answer.choices[0].message.content == "ok"
    assert mock.iam_calls - calls <= 1  # cached (the module may have fetched it already)
    assert not any(IAM_SK in json.dumps(s.headers) for s in mock.seen)
    assert IAM_AK not in json.dumps([s.headers.get("authorization", "") for s in mock.seen if s.type == 13])


def test_cloudflare_refuses_a_base_url_with_its_placeholder(app: AppServer) -> None:
    for base_url in ("", "https://api.cloudflare.com/client/v4/accounts/{account_id}/ai/v1"):
        body = app.api("POST", "/api/channel/", json={"type": 37, "key": "cf-token", "name": unique("cf"),
                                                     "base_url": base_url, "models": ["@cf/meta/llama-3.2-3b-instruct"]})
        assert body["success"] is False and "account" in body["message"].lower(), body


def test_fake_types_answer_locally(app: AppServer, mock: DocumentedMock) -> None:
    """Type 53 answers every kind itself, with usage, streamed or not; 55 answers with its configured error.
    Neither contacts its base URL (fake.local does not resolve: any call out would fail)."""
    client = app.openai()
    channel = app.add_channel(type=53, key="fake", name=unique("fake"),
                              models=["fake-chat", "fake-embedding", "fake-rerank", "fake-image"])
    pin = {"Aiproxy-Channel": str(channel)}
    answer = client.chat.completions.create(model="fake-chat", messages=[{"role": "user", "content": "hi"}],
                                            extra_headers=pin)
    assert answer.choices[0].message.content and answer.usage.total_tokens > 0
    chunks = list(client.chat.completions.create(model="fake-chat", messages=[{"role": "user", "content": "hi"}],
                                                 stream=True, stream_options={"include_usage": True},
                                                 extra_headers=pin))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == answer.choices[0].message.content and chunks[-1].usage.total_tokens > 0
    assert client.embeddings.create(model="fake-embedding", input=["a", "b"], extra_headers=pin).data[1].index == 1
    rerank = client.post("/rerank", cast_to=object, options={"headers": pin},
                         body={"model": "fake-rerank", "query": "q", "documents": ["x", "y", "z"]})
    assert sorted(r["index"] for r in rerank["results"]) == [0, 1, 2]
    assert client.images.generate(model="fake-image", prompt="p", extra_headers=pin).data

    failing = app.add_channel(type=55, key="fake", name=unique("fakeerr"), models=["fake-chat"],
                              config={"error_status_code": 429, "error_message": "configured failure"})
    with pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(model="fake-chat", messages=[{"role": "user", "content": "hi"}],
                                       extra_headers={"Aiproxy-Channel": str(failing)})
    assert "configured failure" in str(raised.value)


def test_unsupported_types_are_marked_in_the_picker(metas: dict[int, dict[str, Any]]) -> None:
    for type_id in NOT_SUPPORTED:
        assert metas[type_id]["supported"] is False and metas[type_id]["unsupported_reason"], metas[type_id]
    assert all(metas[t]["supported"] for t in DOCUMENTED)


def test_tei_rerank_converts_both_ways(app: AppServer, mock: DocumentedMock) -> None:
    """TEI's /rerank takes {query, texts} and answers a bare list; the client gets Cohere's shape, top_n kept."""
    channel = _channel(app, mock, 48, ["BAAI/bge-reranker-v2-m3"])
    answer = httpx.post(f"{app.url}/v1/rerank", headers={**app.headers, "Aiproxy-Channel": str(channel)}, json={
        "model": "BAAI/bge-reranker-v2-m3", "query": "q", "documents": ["a", "b", "c"], "top_n": 2}).json()
    assert [r["index"] for r in answer["results"]] == [0, 1], answer
    assert answer["results"][0]["relevance_score"] >= answer["results"][1]["relevance_score"]
    sent = [s for s in mock.seen if s.type == 48 and s.path == "/rerank"][-1].body
    assert sent["texts"] == ["a", "b", "c"] and sent["query"] == "q"
