"""Google Gemini: both ways, the converters as pure functions, then over real HTTP with the
official SDKs. `google-genai` calls the Gemini door (v1 and v1beta) on an OpenAI channel (converted) and on a Gemini
channel (passed through); the `openai` SDK calls chat and embeddings on a Gemini channel (type 24, converted).

The fake upstream (fake_upstream.py) speaks Gemini's format and refuses what the real API refuses (roles, function
responses that do not answer the turn's calls, Schema keywords it lacks, gemini-3 calls without a thought
signature), so a request that was converted wrongly fails there.
"""

from __future__ import annotations

import base64
import json

import httpx
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

import aiproxy_local as app
from conftest import streamed_chat_one_to_one, unique, wait_logs
from fake_upstream import (GEMINI_MODEL_IDS, GEMINI_SIGNATURE, THINKING_PIECES, TOOL_INPUT, count_prompt_tokens, embedding_vector,
                           gemini_prompt_tokens, reply_text)

PIXEL = base64.b64encode(b"\x89PNG\r\n\x1a\n fake pixel").decode()
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a given location",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"],
                   "additionalProperties": False, "$schema": "http://json-schema.org/draft-07/schema#"}}}
GENAI_WEATHER = types.Tool(function_declarations=[types.FunctionDeclaration(
    name="get_weather", description="Get the current weather in a given location",
    parameters={"type": "OBJECT", "properties": {"location": {"type": "STRING"}}, "required": ["location"]})])
THINKING = "".join(THINKING_PIECES)


def gemini_client(app_server, version: str = "v1", key: str | None = None) -> genai.Client:
    """google-genai as users point it at a gateway; its default API version is v1, Gemini CLI's v1beta. Keep the
    client in a name while its stream is read: a client collected early closes its connection."""
    options = types.HttpOptions(base_url=app_server.url, **({"api_version": version} if version != "v1" else {}))
    return genai.Client(api_key=key or app_server.admin_key, http_options=options)


def sent_to(upstream, model: str) -> list[dict]:
    """The requests the upstream got for this model (in the body for OpenAI, in the path for Gemini)."""
    return [r for r in upstream.requests()
            if (r.get("json") or {}).get("model") == model or f"/models/{model}:" in r["path"]]


# ---- the converters, as pure functions ----

def test_openai_request_to_gemini():
    chat = {"model": "m", "temperature": 0.2, "top_p": 0.9, "max_tokens": 100, "stop": "END",
            "reasoning_effort": "low", "tools": [WEATHER], "tool_choice": "required", "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Weather here?"},
                                             {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}},
                                             {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}}]},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"location":"SF"}'}},
                    {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "15 degrees"},
                {"role": "tool", "tool_call_id": "call_2", "content": '{"time": "noon"}'},
                {"role": "user", "content": "Thanks"}]}
    body = app.openai_to_gemini_request(chat)
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]  # the two results: one turn
    question, calls, results = (c["parts"] for c in body["contents"])
    assert question[1:] == [{"inlineData": {"mimeType": "image/png", "data": PIXEL}},
                            {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/a.jpg"}}]
    assert calls == [{"functionCall": {"name": "get_weather", "args": {"location": "SF"}},
                      "thoughtSignature": app.GEMINI_SKIP_SIGNATURE},
                     {"functionCall": {"name": "get_time", "args": {}}}]
    assert results == [{"functionResponse": {"name": "get_weather", "response": {"content": "15 degrees"}}},
                       {"functionResponse": {"name": "get_time", "response": {"time": "noon"}}},
                       {"text": "Thanks"}]
    assert body["generationConfig"] == {"temperature": 0.2, "topP": 0.9, "maxOutputTokens": 100,
                                        "stopSequences": ["END"],
                                        "thinkingConfig": {"includeThoughts": True, "thinkingBudget": 1024}}
    (declaration,) = body["tools"][0]["functionDeclarations"]
    assert declaration["parameters"] == {"type": "object", "properties": {"location": {"type": "string"}},
                                         "required": ["location"]}  # additionalProperties, $schema: refused
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}


def test_gemini_request_to_openai_matches_calls_by_name_and_order():
    body = {"systemInstruction": {"parts": [{"text": "Be brief."}]},
            "generationConfig": {"temperature": 0.1, "maxOutputTokens": 50, "stopSequences": ["END"],
                                 "thinkingConfig": {"thinkingBudget": 8192}},
            "tools": [GENAI_WEATHER.model_dump(by_alias=True, exclude_none=True)],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}},
            "contents": [
                {"role": "user", "parts": [{"text": "Weather in SF and NYC?"},
                                           {"inlineData": {"mimeType": "image/png", "data": PIXEL}}]},
                {"role": "model", "parts": [{"text": "Checking.", "thought": True},
                                            {"functionCall": {"name": "get_weather", "args": {"location": "SF"}}},
                                            {"functionCall": {"name": "get_weather", "args": {"location": "NYC"}}}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"t": 15}}},
                                           {"functionResponse": {"name": "get_weather", "response": {"t": 9}}}]}]}
    chat = app.gemini_to_openai_request(body, "m")
    system, user, assistant, first, second = chat["messages"]
    assert system == {"role": "system", "content": "Be brief."}
    assert user["content"] == [{"type": "text", "text": "Weather in SF and NYC?"},
                               {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}}]
    assert assistant["reasoning_content"] == "Checking." and assistant["content"] is None
    assert [c["id"] for c in assistant["tool_calls"]] == ["call_0", "call_1"]
    assert (first["tool_call_id"], json.loads(first["content"])) == ("call_0", {"t": 15})  # oldest call first
    assert (second["tool_call_id"], json.loads(second["content"])) == ("call_1", {"t": 9})
    assert chat["tools"][0]["function"]["parameters"] == {"type": "object", "properties": {
        "location": {"type": "string"}}, "required": ["location"]}  # upper-case Schema types lowered
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert (chat["temperature"], chat["max_tokens"], chat["stop"], chat["reasoning_effort"]) == (0.1, 50, ["END"],
                                                                                             "medium")


def test_gemini_answer_to_openai_with_thoughts_calls_and_cache():
    answer = {"candidates": [{"content": {"role": "model", "parts": [
        {"text": "Hmm.", "thought": True}, {"text": "Let me look."},
        {"functionCall": {"name": "get_weather", "args": TOOL_INPUT}, "thoughtSignature": "sig"}]},
        "finishReason": "STOP"}], "usageMetadata": {
        "promptTokenCount": 130, "candidatesTokenCount": 5, "thoughtsTokenCount": 7, "cachedContentTokenCount": 100,
        "totalTokenCount": 142}}
    chat, usage = app.gemini_to_openai_response(answer, "asked", "42")
    reply = chat["choices"][0]["message"]
    assert (reply["content"], reply["reasoning_content"]) == ("Let me look.", "Hmm.")
    assert reply["tool_calls"] == [{"id": "call_42_0", "type": "function", "function": {
        "name": "get_weather", "arguments": json.dumps(TOOL_INPUT, separators=(",", ":"))}}]
    assert chat["choices"][0]["finish_reason"] == "tool_calls"  # Gemini says STOP for calls too
    assert (usage.input_tokens, usage.output_tokens, usage.cached_tokens, usage.total_tokens) == (130, 12, 100, 142)
    back = app.openai_to_gemini_response(chat, "asked")
    assert [list(p) for p in back["candidates"][0]["content"]["parts"]] == [["text", "thought"], ["text"],
                                                                            ["functionCall"]]
    assert back["usageMetadata"] == {"promptTokenCount": 130, "candidatesTokenCount": 12, "totalTokenCount": 142,
                                     "cachedContentTokenCount": 100}


def test_a_gemini_stream_becomes_one_openai_chunk_per_event():
    def event(parts: list, finish: str | None = None, usage: dict | None = None) -> bytes:
        body = {"candidates": [{"content": {"role": "model", "parts": parts}, **({"finishReason": finish} if finish
                                                                                 else {})}]}
        return b"data: " + json.dumps({**body, **({"usageMetadata": usage} if usage else {})}).encode() + b"\r\n\r\n"

    call = _call("/v1/chat/completions", {"model": "m", "messages": [], "stream": True,
                                          "stream_options": {"include_usage": True}})
    stream = app.ConvertedStream(call, app.GeminiDecoder(call), app.OpenAIEncoder(call))
    upstream = [event([{"text": "Think", "thought": True}]), event([{"text": "Hel"}]), event([{"text": "lo"}]),
                event([{"functionCall": {"name": "f", "args": {"a": 1}}}], "STOP",
                      {"promptTokenCount": 4, "candidatesTokenCount": 3, "totalTokenCount": 7})]
    writes = [stream.feed(e) for e in upstream] + [stream.close()]
    assert [len(app.sse_events(w)) for w in writes[:3]] == [1, 1, 1]  # one event in, one chunk out
    chunks = [json.loads(e[6:]) for w in writes for e in app.sse_events(w) if e != b"data: [DONE]"]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0] == {"role": "assistant", "reasoning_content": "Think"}
    assert "".join(d.get("content", "") for d in deltas) == "Hello"
    assert deltas[3]["tool_calls"][0]["function"] == {"name": "f", "arguments": '{"a":1}'}
    assert chunks[3]["choices"][0]["finish_reason"] == "tool_calls" and chunks[-1]["usage"]["total_tokens"] == 7
    assert writes[-1].endswith(b"data: [DONE]\n\n")


def _call(path: str, body: dict):
    class State:
        retry_times = 0

    incoming = app.Incoming(path, request_id="1")
    return app.parse_relay_call(State(), incoming, app.find_route(incoming), json.dumps(body).encode(),
                                app.ADMIN_CALLER)


# ---- the openai SDK on a Gemini channel (converted) ----

def test_chat_on_a_gemini_channel(app_server, upstream):
    alias, real = unique("gemini-alias"), unique("gemini-2.5-flash")
    channel = app_server.add_channel(type=24, base_url=upstream.host_url("cacheread-2"), key="AIza-channel",
                                     models=[real], model_mapping={alias: real})
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": [
        {"type": "text", "text": "What is in this image?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}}]}]
    answer = app_server.openai().chat.completions.create(model=alias, messages=messages, max_tokens=64)
    assert answer.model == alias and answer.choices[0].message.content == reply_text(3)
    (request,) = sent_to(upstream, real)
    assert request["path"].endswith(f"/v1beta/models/{real}:generateContent")
    assert request["headers"]["x-goog-api-key"] == "AIza-channel" and "authorization" not in request["headers"]
    sent = request["json"]
    assert sent["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert sent["contents"][0]["parts"][1] == {"inlineData": {"mimeType": "image/png", "data": PIXEL}}
    prompt = gemini_prompt_tokens(sent)
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (prompt, 3)
    assert answer.usage.prompt_tokens_details.cached_tokens == 2
    (row,) = wait_logs(app_server, total=1, model_name=alias)
    assert (row["channel"], row["endpoint"], row["usage"]["cached_tokens"]) == (channel, "/v1/chat/completions", 2)
    assert row["usage"]["input_tokens"] == prompt and not row["usage_estimated"]


def test_streamed_chat_on_a_gemini_channel(app_server, upstream):
    model = unique("gemini-2.5-flash")
    app_server.add_channel(type=24, base_url=upstream.host_url("chunks-4+gap-20"), models=[model])
    streamed_chat_one_to_one(app_server, model)
    (request,) = sent_to(upstream, model)
    assert request["path"].endswith(":streamGenerateContent") and request["query"] == "alt=sse"
    (row,) = wait_logs(app_server, total=1, model_name=model)
    assert row["stream"] and row["usage"]["output_tokens"] == 4 and not row["usage_estimated"]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("family", ["gemini-2.5-flash", "gemini-3-pro-preview"])
def test_tool_calls_both_ways_on_a_gemini_channel(app_server, upstream, stream, family):
    """gemini-3 refuses a replayed call without a thought signature, which an OpenAI history cannot carry."""
    model = unique(family)
    app_server.add_channel(type=24, base_url=upstream.host_url("tool"), models=[model])
    client = app_server.openai()
    question = [{"role": "user", "content": "What is the weather in San Francisco?"}]
    if stream:
        chunks = list(client.chat.completions.create(model=model, messages=question, tools=[WEATHER], stream=True))
        (call,) = [t for c in chunks if c.choices for t in c.choices[0].delta.tool_calls or []]
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    else:
        answer = client.chat.completions.create(model=model, messages=question, tools=[WEATHER])
        (call,), finish = answer.choices[0].message.tool_calls, [answer.choices[0].finish_reason]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == TOOL_INPUT
    assert call.id and finish == ["tool_calls"]
    followup = question + [{"role": "assistant", "content": None, "tool_calls": [
        {"id": call.id, "type": "function", "function": {"name": "get_weather", "arguments": call.function.arguments}}]},
        {"role": "tool", "tool_call_id": call.id, "content": "15 degrees"}]
    answer = client.chat.completions.create(model=model, messages=followup, tools=[WEATHER])
    assert answer.choices[0].message.content == reply_text(3)
    second = sent_to(upstream, model)[1]["json"]
    assert second["contents"][1]["parts"][0]["functionCall"] == {"name": "get_weather", "args": TOOL_INPUT}
    assert second["contents"][2]["parts"] == [{"functionResponse": {"name": "get_weather",
                                                                    "response": {"content": "15 degrees"}}}]


@pytest.mark.parametrize("stream", [False, True])
def test_thought_parts_become_reasoning_content(app_server, upstream, stream):
    model = unique("gemini-2.5-pro")
    app_server.add_channel(type=24, base_url=upstream.host_url("ok"), models=[model])
    request = dict(model=model, reasoning_effort="high", messages=[{"role": "user", "content": "Why is the sky blue?"}])
    client = app_server.openai()
    if stream:
        deltas = [c.choices[0].delta.model_dump() for c in client.chat.completions.create(**request, stream=True)
                  if c.choices]
        reasoning = "".join(d.get("reasoning_content") or "" for d in deltas)
        content = "".join(d.get("content") or "" for d in deltas)
    else:
        reply = client.chat.completions.with_raw_response.create(**request).http_response.json()["choices"][0]
        reasoning, content = reply["message"]["reasoning_content"], reply["message"]["content"]
    assert (reasoning, content) == (THINKING, reply_text(3))
    (sent,) = sent_to(upstream, model)
    assert sent["json"]["generationConfig"]["thinkingConfig"] == {"includeThoughts": True, "thinkingBudget": 24576}


def test_embeddings_on_a_gemini_channel(app_server, upstream):
    alias, real = unique("embed-alias"), unique("gemini-embedding-001")
    app_server.add_channel(type=24, base_url=upstream.host_url("ok"), models=[real], model_mapping={alias: real})
    result = app_server.openai().embeddings.create(model=alias, input=["hello there", "friend"], dimensions=8)
    assert [d.embedding for d in result.data] == [embedding_vector(0), embedding_vector(1)]
    (request,) = sent_to(upstream, real)
    assert request["path"].endswith(f"/models/{real}:batchEmbedContents")
    assert request["json"]["requests"][1] == {"model": f"models/{real}", "content": {"parts": [{"text": "friend"}]},
                                              "outputDimensionality": 8}
    (row,) = wait_logs(app_server, total=1, model_name=alias)
    assert row["usage"]["input_tokens"] > 0 and row["usage_estimated"]  # Gemini counts no embedding tokens


def test_gemini_errors_reach_an_openai_client_in_its_shape(app_server, upstream):
    model, streamed = unique("gemini"), unique("gemini")
    app_server.add_channel(type=24, base_url=upstream.host_url("status-429"), models=[model])
    app_server.add_channel(type=24, base_url=upstream.host_url("error-1"), models=[streamed])
    client = app_server.openai()
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    assert limited.value.body["message"] == "fake upstream error 429"
    assert limited.value.body["type"] == "RESOURCE_EXHAUSTED"
    text = []
    with pytest.raises(openai.APIError) as broken:
        for chunk in client.chat.completions.create(model=streamed, messages=[{"role": "user", "content": "hi"}],
                                                    stream=True):
            text += [chunk.choices[0].delta.content or ""] if chunk.choices else []
    assert "overloaded" in str(broken.value) and "".join(text) == reply_text(1)
    (row,) = wait_logs(app_server, total=1, model_name=streamed)
    assert row["code"] == 503 and "UNAVAILABLE" in row["content"]


def test_channel_test_on_a_gemini_channel_sends_a_native_request(app_server, upstream):
    model, embedder = unique("gemini-2.5-flash"), unique("text-embedding-004")
    channel = app_server.add_channel(type=24, base_url=upstream.host_url("ok"), models=[model, embedder])
    for name, method in ((model, "generateContent"), (embedder, "batchEmbedContents")):
        result = app_server.api("GET", f"/api/channel/{channel}/test/{name}")["data"]
        assert result["success"] is True and result["code"] == 200, result
        (request,) = sent_to(upstream, name)
        assert request["path"].endswith(f":{method}") and request["headers"]["x-goog-api-key"] == "sk-fake"


# ---- google-genai on an OpenAI channel (converted) ----

@pytest.mark.parametrize("version", ["v1", "v1beta"])
def test_generate_content_on_an_openai_channel(app_server, upstream, version):
    model = unique("gemini-2.5-flash")
    channel = app_server.add_channel(base_url=upstream.url("ok"), models=[model])
    client = gemini_client(app_server, version)
    answer = client.models.generate_content(
        model=model, contents="hello there friend", config=types.GenerateContentConfig(
            system_instruction="Be brief.", temperature=0.2, max_output_tokens=64, stop_sequences=["END"]))
    assert answer.text == reply_text(3) and answer.candidates[0].finish_reason == types.FinishReason.STOP
    prompt = count_prompt_tokens({"messages": [{"content": "hello there friend"}], "system": "Be brief."})
    assert (answer.usage_metadata.prompt_token_count, answer.usage_metadata.candidates_token_count) == (prompt, 3)
    (request,) = sent_to(upstream, model)
    assert request["json"]["messages"] == [{"role": "system", "content": "Be brief."},
                                           {"role": "user", "content": "hello there friend"}]
    assert (request["json"]["temperature"], request["json"]["max_tokens"], request["json"]["stop"]) == (0.2, 64, ["END"])
    (row,) = wait_logs(app_server, total=1, model_name=model)
    assert row["endpoint"] == f"/{version}/models/{model}:generateContent" and row["mode"] == 21
    assert (row["channel"], row["usage"]["input_tokens"], row["usage_estimated"]) == (channel, prompt, False)


@pytest.mark.parametrize("version", ["v1", "v1beta"])
def test_streamed_generate_content_on_an_openai_channel(app_server, upstream, version):
    model = unique("gemini-2.5-flash")
    app_server.add_channel(base_url=upstream.url("chunks-5+gap-20"), models=[model])
    client = gemini_client(app_server, version)
    chunks = list(client.models.generate_content_stream(model=model, contents="hello"))
    assert [c.text for c in chunks if c.text] == [reply_text(5)[:5]] + [" " + w for w in reply_text(5).split()[1:]]
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert chunks[-1].usage_metadata.candidates_token_count == 5
    (row,) = wait_logs(app_server, total=1, model_name=model)
    assert row["stream"] and row["endpoint"].endswith(":streamGenerateContent") and not row["usage_estimated"]


@pytest.mark.parametrize("stream", [False, True])
def test_function_calling_both_ways_on_an_openai_channel(app_server, upstream, stream):
    model = unique("gemini-2.5-flash")
    app_server.add_channel(base_url=upstream.url("tool"), models=[model])
    client = gemini_client(app_server, "v1beta")
    config = types.GenerateContentConfig(tools=[GENAI_WEATHER], automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True))
    question = types.Content(role="user", parts=[types.Part(text="What is the weather in San Francisco?")])
    if stream:
        chunks = list(client.models.generate_content_stream(model=model, contents=[question], config=config))
        (call,) = [c for chunk in chunks for c in chunk.function_calls or []]
        turn = types.Content(role="model", parts=[p for chunk in chunks for p in chunk.candidates[0].content.parts
                                                   if p.function_call])
    else:
        answer = client.models.generate_content(model=model, contents=[question], config=config)
        (call,), turn = answer.function_calls, answer.candidates[0].content
    assert (call.name, call.args) == ("get_weather", TOOL_INPUT)
    result = types.Content(role="user", parts=[types.Part.from_function_response(name="get_weather",
                                                                                  response={"temperature": 15})])
    answer = client.models.generate_content(model=model, contents=[question, turn, result], config=config)
    assert answer.text == reply_text(3)
    first, second = (r["json"] for r in sent_to(upstream, model))
    assert first["tools"][0]["function"]["parameters"]["properties"] == {"location": {"type": "string"}}
    assistant, tool = second["messages"][1:]
    assert assistant["tool_calls"][0]["id"] == tool["tool_call_id"]  # the ids the gateway gave them match
    assert json.loads(tool["content"]) == {"temperature": 15}


def test_count_tokens_and_embeddings_on_an_openai_channel(app_server, upstream):
    model, embedder = unique("gemini-2.5-flash"), unique("text-embedding-004")
    app_server.add_channel(base_url=upstream.url("ok"), models=[model, embedder])
    client = gemini_client(app_server)
    counted = client.models.count_tokens(model=model, contents="hello there friend " * 20)
    assert 40 <= counted.total_tokens <= 120  # about four characters a token
    assert sent_to(upstream, model) == []  # never a generation call
    batch = client.models.embed_content(model=embedder, contents=["hello", "friend"])
    assert [e.values for e in batch.embeddings] == [embedding_vector(0), embedding_vector(1)]
    (request,) = sent_to(upstream, embedder)
    assert request["endpoint"] == "embeddings" and request["json"]["input"] == ["hello", "friend"]
    rows = wait_logs(app_server, total=1, model_name=model)
    assert rows[0]["endpoint"].endswith(f"{model}:countTokens") and rows[0]["channel"] == 0


def test_embed_content_single_over_http(app_server, upstream):
    """embedContent (one content, as Gemini CLI and REST users send it) answers {embedding: {values}}."""
    model = unique("text-embedding-004")
    app_server.add_channel(base_url=upstream.url("ok"), models=[model])
    response = httpx.post(f"{app_server.url}/v1beta/models/{model}:embedContent?key={app_server.admin_key}",
                          json={"content": {"parts": [{"text": "hello"}]}})
    assert response.status_code == 200 and response.json() == {"embedding": {"values": embedding_vector(0)}}


def test_errors_on_gemini_routes_have_googles_shape(app_server, upstream):
    model = unique("gemini")
    app_server.add_channel(base_url=upstream.url("status-429"), models=[model])
    client = gemini_client(app_server, "v1beta")
    with pytest.raises(genai_errors.ClientError) as limited:
        client.models.generate_content(model=model, contents="hi")
    assert (limited.value.code, limited.value.status) == (429, "RESOURCE_EXHAUSTED")
    with pytest.raises(genai_errors.ClientError) as missing:
        client.models.generate_content(model=unique(), contents="hi")
    assert (missing.value.code, missing.value.status) == (404, "NOT_FOUND")
    stranger = gemini_client(app_server, key="wrong")
    with pytest.raises(genai_errors.ClientError) as denied:
        stranger.models.generate_content(model=model, contents="hi")
    assert (denied.value.code, denied.value.status) == (401, "UNAUTHENTICATED")
    url = f"{app_server.url}/v1beta/models/{model}"
    for response, status in ((httpx.post(f"{url}:generateContent?key={app_server.admin_key}", json={}), 400),
                             (httpx.post(f"{url}:generateContent?key={app_server.admin_key}", content=b"{oops"), 400),
                             (httpx.post(f"{url}:generateContent?key={app_server.admin_key}",
                                         files={"file": ("a.txt", b"hi")}), 400),
                             (httpx.post(f"{url}:predictLongRunning?key={app_server.admin_key}", json={}), 404)):
        error = response.json()["error"]
        assert response.status_code == status and error["code"] == status and set(error) == {"code", "message",
                                                                                              "status"}


# ---- google-genai on a Gemini channel (passed through) ----

def test_generate_content_passes_through_a_gemini_channel(app_server, upstream):
    alias, real = unique("gemini-alias"), unique("gemini-2.5-flash")
    app_server.add_channel(type=24, base_url=upstream.host_url("thinking+cacheread-3"), key="AIza-channel",
                           models=[real], model_mapping={alias: real})
    client = gemini_client(app_server)  # v1 in, v1beta upstream
    config = types.GenerateContentConfig(system_instruction="Be brief.")
    answer = client.models.generate_content(model=alias, contents="hello there friend", config=config)
    assert answer.text == reply_text(3) and answer.model_version == alias
    assert answer.candidates[0].content.parts[0].thought is True
    chunks = list(client.models.generate_content_stream(model=alias, contents="hi", config=config))
    assert "".join(c.text or "" for c in chunks) == reply_text(3)
    first, second = sent_to(upstream, real)
    assert first["path"].endswith(f"/v1beta/models/{real}:generateContent") and first["query"] == ""
    assert second["query"] == "alt=sse" and second["headers"]["x-goog-api-key"] == "AIza-channel"
    assert first["json"]["systemInstruction"]["parts"] == [{"text": "Be brief."}]  # the client's body, as it was
    rows = {r["stream"]: r for r in wait_logs(app_server, total=2, model_name=alias)}
    assert rows[False]["usage"]["input_tokens"] == gemini_prompt_tokens(first["json"])
    assert rows[False]["usage"]["output_tokens"] == 3 + len(THINKING_PIECES)  # thoughts count as output
    assert rows[False]["usage"]["cached_tokens"] == 3 and not rows[True]["usage_estimated"]


def test_function_calls_keep_their_signature_through_a_gemini_channel(app_server, upstream):
    model = unique("gemini-3-pro-preview")
    app_server.add_channel(type=24, base_url=upstream.host_url("tool"), models=[model])
    client = gemini_client(app_server, "v1beta")
    config = types.GenerateContentConfig(tools=[GENAI_WEATHER], automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True))
    question = types.Content(role="user", parts=[types.Part(text="Weather in SF?")])
    answer = client.models.generate_content(model=model, contents=[question], config=config)
    turn = answer.candidates[0].content
    assert turn.parts[0].thought_signature == base64.b64decode(GEMINI_SIGNATURE)
    result = types.Content(role="user", parts=[types.Part.from_function_response(name="get_weather",
                                                                                  response={"t": 15})])
    assert client.models.generate_content(model=model, contents=[question, turn, result], config=config).text == \
        reply_text(3)


def test_count_tokens_and_embeddings_on_a_gemini_channel_ask_the_upstream(app_server, upstream):
    alias, real = unique("embed-alias"), unique("gemini-embedding-001")
    model = unique("gemini-2.5-flash")
    app_server.add_channel(type=24, base_url=upstream.host_url("ok"), models=[real, model],
                           model_mapping={alias: real})
    client = gemini_client(app_server, "v1beta")
    counted = client.models.count_tokens(model=model, contents="hello there friend")
    assert counted.total_tokens == 4  # the fake's count: three words + 1
    batch = client.models.embed_content(model=alias, contents=["a", "b"])
    assert len(batch.embeddings) == 2
    (count,) = sent_to(upstream, model)
    assert count["path"].endswith(":countTokens")
    (embed,) = sent_to(upstream, real)
    assert [r["model"] for r in embed["json"]["requests"]] == [f"models/{real}"] * 2  # renamed in the body too


def test_a_query_key_authenticates_and_never_reaches_the_upstream(app_server, upstream):
    model = unique("gemini-2.5-flash")
    app_server.add_channel(type=24, base_url=upstream.host_url("ok"), key="AIza-channel", models=[model])
    response = httpx.post(f"{app_server.url}/v1beta/models/{model}:streamGenerateContent?alt=sse"
                          f"&key={app_server.admin_key}", json={"contents": [{"parts": [{"text": "hi"}]}]})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    (request,) = sent_to(upstream, model)
    assert app_server.admin_key not in request["query"] and request["headers"]["x-goog-api-key"] == "AIza-channel"


def test_a_gemini_error_event_passes_through_and_is_logged(app_server, upstream):
    model = unique("gemini")
    app_server.add_channel(type=24, base_url=upstream.host_url("error-1"), models=[model])
    client = gemini_client(app_server)
    with pytest.raises(genai_errors.APIError):
        list(client.models.generate_content_stream(model=model, contents="hi"))
    (row,) = wait_logs(app_server, total=1, model_name=model)
    assert row["code"] == 503 and "overloaded" in row["content"]


@pytest.mark.parametrize("version", ["v1", "v1beta"])
def test_models_are_listed_in_googles_shape(app_server, upstream, version):
    chat, embed = unique("gemini-2.5-flash"), unique("gemini-embedding")
    app_server.add_channel(base_url=upstream.url("ok"), models=[chat, embed])
    client = gemini_client(app_server, version)
    listed = {m.name: m for m in client.models.list()}
    assert listed[f"models/{chat}"].supported_actions == ["generateContent", "streamGenerateContent",
                                                          "countTokens"]
    assert listed[f"models/{embed}"].supported_actions == ["embedContent", "batchEmbedContents"]
    assert client.models.get(model=chat).name == f"models/{chat}"
    with pytest.raises(genai_errors.ClientError) as info:
        client.models.get(model=unique("nowhere"))
    assert info.value.code == 404 and info.value.status == "NOT_FOUND"
    stranger = gemini_client(app_server, version, key="sk-not-a-token")
    with pytest.raises(genai_errors.ClientError) as info:
        stranger.models.get(model=chat)
    assert info.value.code == 401 and info.value.status == "UNAUTHENTICATED"
    openai_ids = {m.id for m in app_server.openai().models.list()}  # the same path, asked OpenAI's way
    assert chat in openai_ids and embed in openai_ids


def test_fetch_models_of_a_gemini_channel_asks_googles_list(app_server, upstream):
    upstream.clear()
    models = app_server.api("POST", "/api/channel/upstream-models", json={
        "type": 24, "key": "AIza-list", "base_url": upstream.host_url("ok")})
    assert models["data"] == sorted(GEMINI_MODEL_IDS)
    (request,) = [r for r in upstream.requests() if r["path"].endswith("/v1beta/models")]
    assert request["headers"]["x-goog-api-key"] == "AIza-list" and request["query"] == "pageSize=1000"
