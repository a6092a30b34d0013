"""Relay contract; OpenAI & Azure; Registry: the provider catalog, assets/providers.json and the code that loads and
uses it.

The catalog is keyed by labring/aiproxy's numeric channel type id; these tests
keep it loadable, complete for the ids the app relies on, and well-formed.
"""

import dataclasses
import json
from pathlib import Path

import pytest

CATALOG_PATH = Path(__file__).resolve().parent.parent / "assets" / "providers.json"

REQUIRED_IDS = {
    1, 3, 12, 13, 14, 16, 17, 19, 20, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32,
    36, 40, 41, 43, 45, 47,
}
# Numbers aiproxy leaves unused; a catalog entry for one would be an invented id.
UNUSED_IDS = {2, 5, 6, 7, 8, 9, 10, 11, 21, 22, 38, 39}
REQUIRED_FIELDS = ("name", "adaptor", "defaultBaseUrl", "keyHelp", "models")
ALLOWED_KINDS = {"chat", "embedding", "rerank", "tts", "stt", "image", "moderation"}
# Types with no fixed model list: coze (model = bot id), doc2x (PDF parsing only),
# Sangfor AICP (deployment-specific).
MAY_HAVE_NO_MODELS = {"34", "46", "50"}


@pytest.fixture(scope="module")
def catalog():
    with CATALOG_PATH.open(encoding="utf-8") as f:
        data = json.load(f)
    assert isinstance(data, dict) and data
    return data


def test_keys_are_numeric_ids(catalog):
    for key in catalog:
        assert key.isdigit() and str(int(key)) == key, key


def test_required_ids_present(catalog):
    missing = REQUIRED_IDS - {int(k) for k in catalog}
    assert not missing, f"missing provider ids: {sorted(missing)}"


def test_no_unused_aiproxy_ids(catalog):
    invented = UNUSED_IDS & {int(k) for k in catalog}
    assert not invented, f"ids unused by aiproxy: {sorted(invented)}"


def test_entries_have_required_fields(catalog):
    for key, entry in catalog.items():
        for field in REQUIRED_FIELDS:
            assert field in entry, f"{key}: missing {field}"
        assert isinstance(entry["name"], str) and entry["name"], key
        assert isinstance(entry["defaultBaseUrl"], str), key
        assert isinstance(entry["keyHelp"], str) and entry["keyHelp"], key
        assert isinstance(entry["models"], list), key
        if key not in MAY_HAVE_NO_MODELS:
            assert entry["models"], f"{key}: no models"


def test_model_kinds_allowed(catalog):
    for key, entry in catalog.items():
        for m in entry["models"]:
            assert set(m) == {"model", "kind"}, f"{key}: {m}"
            assert isinstance(m["model"], str) and m["model"].strip() == m["model"] != "", key
            assert m["kind"] in ALLOWED_KINDS, f"{key}: {m}"


def test_model_names_unique_per_provider(catalog):
    for key, entry in catalog.items():
        names = [m["model"] for m in entry["models"]]
        dupes = {n for n in names if names.count(n) > 1}
        assert not dupes, f"{key}: duplicate models {sorted(dupes)}"


def test_openai_style_base_urls_have_no_trailing_slash(catalog):
    for key, entry in catalog.items():
        url = entry["defaultBaseUrl"]
        if url:
            assert url.startswith(("http://", "https://")), f"{key}: {url}"
        if entry["adaptor"] == "openai":
            assert not url.endswith("/"), f"{key}: {url}"


def test_load_catalog_builds_frozen_providers():
    import aiproxy_local as app

    catalog = app.load_catalog()
    assert REQUIRED_IDS <= set(catalog)
    openai = catalog[1]
    assert openai.default_base_url.endswith("/v1") and ("gpt-4o", "chat") in openai.models
    with pytest.raises(dataclasses.FrozenInstanceError):
        openai.name = "changed"  # frozen: the catalog is shared by every request


def test_model_kinds_come_from_the_catalog_then_from_the_name():
    import aiproxy_local as app

    kinds = app.catalog_model_kinds(app.load_catalog())
    assert kinds["text-embedding-3-small"] == "embedding"
    assert app.guess_model_kind("my-bge-reranker") == "rerank"
    assert app.guess_model_kind("some-embedding-v2") == "embedding"
    assert app.guess_model_kind("whisper-large") == "stt"
    assert app.guess_model_kind("qwen-max") == "chat"


def test_every_catalog_adaptor_resolves():
    import aiproxy_local as app

    catalog = app.load_catalog()
    plain = app.ADAPTORS["openai"]
    # the native formats each get their own adaptor: an OpenAI request to Azure, Anthropic or Gemini fails upstream
    native = {type_id: app.adaptor_for(catalog[type_id]) for type_id in (3, 4, 14, 24)}
    assert all(adaptor is not plain and isinstance(adaptor, app.Adaptor) for adaptor in native.values()), native
    assert {native[3].title, native[4].title, native[14].title, native[24].title} == {
        "Azure OpenAI", "Anthropic", "Google Gemini"}
    assert app.adaptor_for(catalog[29]) is plain  # groq: an OpenAI-style row


def test_an_unknown_adaptor_stops_start_up(tmp_path):
    import aiproxy_local as app

    rows = json.loads(CATALOG_PATH.read_text(encoding="utf-8"))
    rows["99"] = dict(rows["1"], name="typo", adaptor="opneai")
    bad = tmp_path / "providers.json"
    bad.write_text(json.dumps(rows), encoding="utf-8")
    with pytest.raises(app.CatalogError, match="provider 99 .*'opneai'"):
        app.load_catalog(bad)


def test_types_without_a_native_adaptor_refuse_clearly():
    import aiproxy_local as app

    catalog = app.load_catalog()
    call = _call(app, "/v1/chat/completions", {"model": "m", "messages": []})
    for type_id, words in ((34, "Coze"), (44, "Doubao speech"), (46, "Doc2X")):
        refusal = app.adaptor_for(catalog[type_id]).refusal(call)
        assert refusal.status == 501 and refusal.message == f"{words} channels are not supported yet."
    for type_id in (1, 33, 42):  # AWS Bedrock and Vertex AI have their own sections now
        assert app.adaptor_for(catalog[type_id]).refusal(call) is None


def _call(app, path: str, body: dict, headers: dict | None = None):
    incoming = app.Incoming(path, headers=headers or {}, request_id="1")
    return app.parse_relay_call(_State(), incoming, app.RELAY_ROUTES[path], json.dumps(body).encode(),
                                app.ADMIN_CALLER)


class _State:
    """What parse_relay_call reads of the app's state."""

    retry_times = 0


def _channel(app, type_id: int, key: str = "sk-x", base_url: str = "https://api.example.com/v1/", mapping=None):
    return app.channel_route({"id": 1, "name": "c", "type": type_id, "key": key, "base_url": base_url,
                              "models": ["m"], "model_mapping": mapping or {}}, app.load_catalog())


def test_openai_adaptor_builds_url_headers_and_body():
    import aiproxy_local as app

    channel = _channel(app, 1, mapping={"alias": "real"})
    adaptor = channel.adaptor
    call = _call(app, "/v1/embeddings", {"model": "m", "input": "x"})
    assert adaptor.build_url(channel, call) == "https://api.example.com/v1/embeddings"
    assert adaptor.build_headers(channel, call) == {"Authorization": "Bearer sk-x"}
    assert adaptor.convert_request(call, channel) is call.body  # nothing to change: the same bytes
    mapped = _call(app, "/v1/chat/completions", {"model": "alias", "messages": [], "stream": True})
    assert json.loads(adaptor.convert_request(mapped, channel)) == {
        "model": "real", "messages": [], "stream": True, "stream_options": {"include_usage": True}}
    assert adaptor.models_request(channel) == ("https://api.example.com/v1/models", {"Authorization": "Bearer sk-x"})


@pytest.mark.parametrize("type_id, key, mapping, url", [
    (3, "k1", {}, "https://r.openai.azure.com/openai/deployments/gpt-41/chat/completions"
                  "?api-version=2025-04-01-preview"),
    (4, "k1|2024-10-21", {}, "https://r.openai.azure.com/openai/deployments/gpt-4.1/chat/completions"
                             "?api-version=2024-10-21"),
    (3, "k1", {"gpt-4.1": "my.deploy"}, "https://r.openai.azure.com/openai/deployments/my.deploy/chat/completions"
                                        "?api-version=2025-04-01-preview"),
])
def test_azure_deployment_url_and_key(type_id, key, mapping, url):
    import aiproxy_local as app

    channel = _channel(app, type_id, key=key, base_url="https://r.openai.azure.com/", mapping=mapping)
    call = _call(app, "/v1/chat/completions", {"model": "gpt-4.1", "messages": []})
    assert channel.adaptor.build_url(channel, call) == url
    assert channel.adaptor.build_headers(channel, call) == {"api-key": "k1"}
    assert channel.adaptor.models_request(channel)[0].startswith("https://r.openai.azure.com/openai/models?")
    rerank = _call(app, "/v1/rerank", {"model": "gpt-4.1", "query": "q", "documents": []})
    assert channel.adaptor.refusal(rerank).message == "Azure OpenAI channels cannot serve /v1/rerank."


def test_a_converted_stream_leaves_event_by_event_and_closes_once():
    """The pivot plumbing every format shares, with OpenAI on both sides: chunks keep their order and count, the
    client's model name, a usage chunk only when asked for, and exactly one [DONE]."""
    import aiproxy_local as app

    def chunk(content: str | None, finish: str | None = None, usage: dict | None = None) -> bytes:
        body = {"id": "c1", "created": 1, "model": "upstream-name", "object": "chat.completion.chunk",
                "choices": [] if content is None and finish is None else
                [{"index": 0, "delta": {"content": content} if content else {}, "finish_reason": finish}]}
        if usage:
            body["usage"] = usage
        return b"data: " + json.dumps(body).encode() + b"\r\n\r\n"

    upstream = [chunk("Hel"), chunk("lo"), chunk(None, "stop"),
                chunk(None, usage={"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}), b"data: [DONE]\n\n"]
    for wants_usage in (False, True):
        body = {"model": "asked", "messages": [], "stream": True, "stream_options": {"include_usage": wants_usage}}
        call = _call(app, "/v1/chat/completions", body)
        stream = app.ConvertedStream(call, app.OpenAIDecoder(), app.OpenAIEncoder(call))
        writes = [stream.feed(event) for event in upstream] + [stream.close()]
        events = [json.loads(w[6:]) for w in b"".join(writes).split(b"\n\n") if w.startswith(b"data: {")]
        assert [len(app.sse_events(w)) for w in writes[:3]] == [1, 1, 1]  # one event in, one event out
        assert "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"]) == "Hello"
        assert {e["model"] for e in events} == {"asked"}
        assert [e["usage"]["total_tokens"] for e in events if e.get("usage")] == ([7] if wants_usage else [])
        assert b"".join(writes).count(b"[DONE]") == 1 and stream.usage.input_tokens == 5
