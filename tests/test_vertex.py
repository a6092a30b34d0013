"""Google Vertex AI: its URLs per key kind and its Claude body as pure functions, then over real HTTP
against vertex_upstream.py, a Vertex written from Google's documentation: it verifies the service account's signed
JWT at the key's token_uri and issues access tokens, checks them on every call, and hands the bodies on to
fake_upstream's Gemini and Anthropic (which check those formats). The official SDKs call the gateway.
"""

from __future__ import annotations

import json
import textwrap
from types import SimpleNamespace

import anthropic
import openai
import pytest
from google import genai
from google.genai import types

import aiproxy_local as app
from bedrock_upstream import Served
from conftest import unique, wait_logs
from fake_upstream import TOOL_INPUT, embedding_vector, reply_text
from vertex_upstream import API_KEY, PROJECT, REGION, VertexApp, service_account

TEXT = reply_text(3)
GEMINI, CLAUDE = "gemini-2.5-flash", "claude-sonnet-4-5@20250929"
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather of a place",
                                            "parameters": {"type": "object", "properties": {
                                                "location": {"type": "string"}}, "required": ["location"]}}}


@pytest.fixture(scope="module")
def vertex():
    served = Served(VertexApp())
    served.app.token_uri = f"{served.url}/token"
    yield served
    served.stop()


def account(vertex) -> str:
    """A new service account the mock knows, as a channel key (region|JSON)."""
    info, public = service_account(vertex.app.token_uri)
    vertex.app.public_keys[info["private_key_id"]] = public
    return f"{REGION}|{json.dumps(info)}"


def add(app_server, vertex, key: str, scenario: str = "") -> tuple[str, str]:
    """A Vertex channel on the mock; returns its (Gemini, Claude) model names, unique to it."""
    gemini, claude = unique("vx-gemini"), unique("vx-claude")
    app_server.add_channel(type=42, name=unique("vertex"), key=key,
                           base_url=vertex.url + (f"/{scenario}" if scenario else ""),
                           model_mapping={gemini: GEMINI, claude: CLAUDE})
    return gemini, claude


# ---- pure functions ----

@pytest.mark.parametrize("key, base, url", [
    (f"{REGION}|{{\"client_email\": \"a@b\", \"private_key\": \"k\", \"project_id\": \"p1\"}}", "",
     f"https://{REGION}-aiplatform.googleapis.com/v1/projects/p1/locations/{REGION}/publishers/google/models/"
     f"{GEMINI}:generateContent"),
    (f"global|{API_KEY}", "", f"https://aiplatform.googleapis.com/v1/publishers/google/models/{GEMINI}:"
                              "generateContent"),
    (f"europe-west4|p2|{API_KEY}", "", "https://europe-west4-aiplatform.googleapis.com/v1/projects/p2/locations/"
                                       f"europe-west4/publishers/google/models/{GEMINI}:generateContent"),
    (f"europe-west4|p2|{API_KEY}", "http://127.0.0.1:9/private",
     f"http://127.0.0.1:9/private/v1/projects/p2/locations/europe-west4/publishers/google/models/{GEMINI}:"
     "generateContent"),
])
def test_urls_per_key_kind(key, base, url):
    catalog = app.load_catalog()
    channel = app.channel_route({"id": 1, "name": "v", "type": 42, "key": key, "base_url": base}, catalog)
    adaptor = channel.adaptor
    assert adaptor.build_url(channel, SimpleNamespace(model=GEMINI, stream=False)) == url
    claude = adaptor.build_url(channel, SimpleNamespace(model=CLAUDE, stream=True))
    assert claude == url.replace("publishers/google", "publishers/anthropic").replace(f"{GEMINI}:generateContent",
                                                                f"{CLAUDE}:streamRawPredict")
    assert adaptor.build_headers(channel) == ({"x-goog-api-key": API_KEY} if API_KEY in key else {})


def test_claude_body_on_vertex_has_its_version_and_no_model():
    catalog = app.load_catalog()
    channel = app.channel_route({"id": 1, "name": "v", "type": 42, "key": f"{REGION}|p|{API_KEY}"}, catalog)
    call = SimpleNamespace(model=CLAUDE, stream=True, op=app.Mode.CHAT_COMPLETIONS)
    body = json.loads(channel.adaptor.request_from_pivot({"messages": [{"role": "user", "content": "hi"}]}, call,
                                                         channel))
    assert body["anthropic_version"] == "vertex-2023-10-16" and "model" not in body and body["stream"] is True
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]


def test_every_kind_the_catalog_lists_is_served():
    """The catalog lint for this type (test_catalog leaves it to this file): no built-in model answers 501."""
    catalog = app.load_catalog()
    modes = app.adaptor_for(catalog[42]).modes
    assert {app.KINDS[kind].mode for _, kind in catalog[42].models} <= modes


# ---- over HTTP, with the official SDKs ----

def test_service_account_token_is_exchanged_once_and_reused(app_server, vertex):
    gemini, claude = add(app_server, vertex, account(vertex))
    before = vertex.app.exchanges
    client = app_server.openai()
    assert client.chat.completions.create(model=gemini, messages=[
        {"role": "user", "content": "hi"}]).choices[0].message.content == TEXT
    answer = client.chat.completions.create(model=claude, messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == TEXT and answer.usage.completion_tokens == 3
    assert vertex.app.exchanges == before + 1  # one token for both calls
    paths = [r["path"] for r in vertex.app.requests[-2:]]
    assert paths == [f"/v1/projects/{PROJECT}/locations/{REGION}/publishers/google/models/{GEMINI}:generateContent",
                     f"/v1/projects/{PROJECT}/locations/{REGION}/publishers/anthropic/models/{CLAUDE}:rawPredict"]
    assert wait_logs(app_server, 1, model_name=claude)[0]["usage"]["output_tokens"] == 3


def test_a_token_about_to_expire_is_renewed(app_server, vertex):
    """Tokens that live less than the renewal margin are renewed on each call: the cache honours expires_in."""
    gemini, _ = add(app_server, vertex, account(vertex))
    vertex.app.token_lifetime = app.VERTEX_TOKEN_MARGIN_S - 60
    try:
        before = vertex.app.exchanges
        for _ in range(2):
            app_server.openai().chat.completions.create(model=gemini, messages=[{"role": "user", "content": "hi"}])
        assert vertex.app.exchanges == before + 2
    finally:
        vertex.app.token_lifetime = 3599


@pytest.mark.parametrize("model_index", [0, 1])
def test_openai_stream_on_gemini_and_claude(app_server, vertex, model_index):
    model = add(app_server, vertex, account(vertex))[model_index]
    chunks = list(app_server.openai().chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == TEXT
    assert chunks[-1].usage.completion_tokens == 3
    last = vertex.app.requests[-1]
    assert last["path"].endswith(":streamGenerateContent" if model_index == 0 else ":streamRawPredict")
    assert model_index == 1 or last["query"] == "alt=sse"


@pytest.mark.parametrize("model_index", [0, 1])
def test_tools_through_vertex(app_server, vertex, model_index):
    model = add(app_server, vertex, account(vertex), scenario="tool")[model_index]
    client = app_server.openai()
    messages = [{"role": "user", "content": "Weather in San Francisco?"}]
    first = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER])
    call = first.choices[0].message.tool_calls[0]
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", TOOL_INPUT)
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
    assert client.chat.completions.create(model=model, messages=messages,
                                          tools=[WEATHER]).choices[0].message.content == TEXT


def test_anthropic_and_genai_sdks_on_vertex(app_server, vertex):
    gemini, claude = add(app_server, vertex, account(vertex))
    claude_client = anthropic.Anthropic(base_url=app_server.url, api_key=app_server.admin_key, max_retries=0)
    with claude_client.messages.stream(model=claude, max_tokens=64, messages=[
            {"role": "user", "content": "hi"}]) as events:
        assert "".join(events.text_stream) == TEXT
    google = genai.Client(api_key=app_server.admin_key, http_options=types.HttpOptions(base_url=app_server.url))
    assert google.models.generate_content(model=gemini, contents="hi").text == TEXT
    assert "".join(c.text or "" for c in google.models.generate_content_stream(model=gemini, contents="hi")) == TEXT


def test_api_keys_express_mode_and_with_a_project(app_server, vertex):
    express, _ = add(app_server, vertex, f"{REGION}|{API_KEY}")
    projected, _ = add(app_server, vertex, f"{REGION}|{PROJECT}|{API_KEY}")
    client = app_server.openai()
    for model, path in ((express, f"/v1/publishers/google/models/{GEMINI}:generateContent"),
                        (projected, f"/v1/projects/{PROJECT}/locations/{REGION}/publishers/google/models/"
                                    f"{GEMINI}:generateContent")):
        assert client.chat.completions.create(model=model, messages=[
            {"role": "user", "content": "hi"}]).choices[0].message.content == TEXT
        assert vertex.app.requests[-1]["path"] == path
        assert vertex.app.requests[-1]["headers"]["x-goog-api-key"] == API_KEY


def test_a_refused_exchange_is_the_channels_failure_and_leaks_nothing(app_server, vertex):
    info, _ = service_account(vertex.app.token_uri)  # its public key is unknown to Google: invalid_grant
    gemini, _ = add(app_server, vertex, f"{REGION}|{json.dumps(info)}")
    with pytest.raises(openai.AuthenticationError) as refused:
        app_server.openai().chat.completions.create(model=gemini, messages=[{"role": "user", "content": "hi"}])
    assert "token exchange" in refused.value.message and "Invalid JWT Signature" in refused.value.message
    secret_line = info["private_key"].splitlines()[1]
    assert secret_line not in json.dumps(refused.value.body)


def test_channel_test_and_model_list(app_server, vertex):
    gemini, _ = add(app_server, vertex, account(vertex))
    channel_id = next(c["id"] for c in app_server.channels() if gemini in c["model_mapping"])
    result = app_server.api("GET", f"/api/channel/{channel_id}/test/{gemini}")["data"]
    assert result["success"] and result["code"] == 200
    listed = app_server.api("POST", "/api/channel/upstream-models", json={"type": 42, "key": f"{REGION}|{API_KEY}"})
    assert not listed["success"] and "built-in" in listed["message"]


def test_without_google_auth_a_service_account_channel_says_which_extra(start_app, vertex, tmp_path):
    hidden = tmp_path / "hidden"
    (hidden / "google" / "auth").mkdir(parents=True)
    (hidden / "google" / "auth" / "__init__.py").write_text(textwrap.dedent("""
        raise ImportError("google-auth is hidden for this test")
    """))
    server = start_app(env={"PYTHONPATH": str(hidden)})
    server.add_channel(type=42, name="sa", key=account(vertex), base_url=vertex.url, models=[GEMINI])
    server.add_channel(type=42, name="keyed", key=f"{REGION}|{API_KEY}", base_url=vertex.url,
                       models=["gemini-2.5-pro"])
    with pytest.raises(openai.APIStatusError) as refused:
        server.openai().chat.completions.create(model=GEMINI, messages=[{"role": "user", "content": "hi"}])
    assert refused.value.status_code == 501 and "pip install 'aiproxy-local[vertex]'" in refused.value.message
    sa = next(c["id"] for c in server.channels() if c["name"] == "sa")
    test = server.api("GET", f"/api/channel/{sa}/test/{GEMINI}")["data"]
    assert not test["success"] and "aiproxy-local[vertex]" in test["response"]
    assert server.openai().chat.completions.create(model="gemini-2.5-pro", messages=[
        {"role": "user", "content": "hi"}]).choices[0].message.content == TEXT


def test_the_token_exchange_and_the_calls_go_through_the_channels_proxy(app_server, vertex):
    """A channel's proxy carries its token exchange too, not only its calls (the exchange is the channel's HTTP)."""
    from proxies import HttpProxy

    proxy = HttpProxy("gw", "vertex-proxy-pass-01")
    try:
        model = unique("vx-proxied")
        app_server.add_channel(type=42, name=unique("vertex"), key=account(vertex), base_url=vertex.url,
                               model_mapping={model: GEMINI}, proxy_url=proxy.url())
        assert app_server.openai().chat.completions.create(model=model, messages=[
            {"role": "user", "content": "hi"}]).choices[0].message.content == TEXT
        assert [s["target"].removeprefix(vertex.url) for s in proxy.seen] == [
            "/token", f"/v1/projects/{PROJECT}/locations/{REGION}/publishers/google/models/{GEMINI}:generateContent"]
    finally:
        proxy.stop()


def test_embeddings_through_predict(app_server, vertex):
    model = unique("vx-embed")
    app_server.add_channel(type=42, name=unique("vertex"), key=account(vertex), base_url=vertex.url,
                           model_mapping={model: "text-embedding-005"})
    answer = app_server.openai().embeddings.create(model=model, input=["hello there", "one two three"])
    assert [d.embedding for d in answer.data] == [embedding_vector(0), embedding_vector(1)]
    assert answer.usage.prompt_tokens == 5  # the tokens Vertex counted
    assert vertex.app.requests[-1]["path"].endswith("/publishers/google/models/text-embedding-005:predict")


def test_imagen_through_predict(app_server, vertex):
    """imagen-4.0-generate-001 is a built-in: an OpenAI image request becomes Imagen's predict (size as an aspect
    ratio), and its base64 images come back as b64_json."""
    import base64

    model = unique("vx-imagen")
    app_server.add_channel(type=42, name=unique("vertex"), key=account(vertex), base_url=vertex.url,
                           model_mapping={model: "imagen-4.0-generate-001"})
    answer = app_server.openai().images.generate(model=model, prompt="a red square", n=2, size="1792x1024")
    assert [base64.b64decode(d.b64_json) for d in answer.data] == [b"PNG 0 16:9", b"PNG 1 16:9"]
    assert vertex.app.requests[-1]["path"].endswith("/publishers/google/models/imagen-4.0-generate-001:predict")
