"""Section 3, Provider catalog & adaptors: assets/providers.json and the code that loads and uses it.

The catalog is keyed by labring/aiproxy's numeric channel type id; these tests
keep it loadable, complete for the ids the app relies on, and well-formed.
"""

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
ALLOWED_ADAPTORS = {"openai", "azure", "anthropic", "gemini"}
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
        assert entry["adaptor"] in ALLOWED_ADAPTORS, key
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
    with pytest.raises(Exception):
        openai.name = "changed"  # frozen: the catalog is shared by every request


def test_model_kinds_come_from_the_catalog_then_from_the_name():
    import aiproxy_local as app

    kinds = app.catalog_model_kinds(app.load_catalog())
    assert kinds["text-embedding-3-small"] == "embedding"
    assert app.guess_model_kind("my-bge-reranker") == "rerank"
    assert app.guess_model_kind("some-embedding-v2") == "embedding"
    assert app.guess_model_kind("whisper-large") == "stt"
    assert app.guess_model_kind("qwen-max") == "chat"


def test_openai_adaptor_builds_url_and_headers():
    import aiproxy_local as app

    adaptor = app.ADAPTORS["openai"]
    assert adaptor.build_url("https://api.example.com/v1/", "/chat/completions", "m") == \
        "https://api.example.com/v1/chat/completions"
    assert adaptor.build_headers("sk-x") == {"Authorization": "Bearer sk-x"}
    assert adaptor.convert_request("/embeddings", b"{}") == ("/embeddings", b"{}")
    provider = app.load_catalog()[29]
    assert app.adaptor_for(provider) is adaptor  # every id is served by the OpenAI adaptor for now
