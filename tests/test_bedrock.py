"""AWS Bedrock: the Converse conversions and the event-stream framing as pure functions, then over
real HTTP against bedrock_upstream.py, a Bedrock written from AWS's documentation that recomputes every SigV4
signature with botocore and answers ConverseStream in CRC-checked event-stream frames cut at odd places. The
official SDKs (openai, anthropic, google-genai) call the gateway; the channel's base URL points at the mock.
"""

from __future__ import annotations

import base64
import json
import textwrap

import anthropic
import openai
import pytest
from google import genai
from google.genai import types

import aiproxy_local as app
from bedrock_upstream import (ACCESS_KEY, API_KEY, REGION, REPLY, SECRET_KEY, SESSION_TOKEN, TEMP_ACCESS_KEY,
                              TEMP_SECRET_KEY, USAGE, BedrockApp, Served, event, exception, frame)
from conftest import unique, wait_logs

PIXEL = base64.b64encode(b"\x89PNG\r\n\x1a\n a pixel").decode()
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather of a place",
                                            "parameters": {"type": "object", "properties": {
                                                "location": {"type": "string"}}, "required": ["location"]}}}
SIGV4_KEY = f"{REGION}|{ACCESS_KEY}|{SECRET_KEY}"
TEXT = "".join(REPLY)
PROMPT = USAGE["inputTokens"] + USAGE["cacheReadInputTokens"] + USAGE["cacheWriteInputTokens"]


@pytest.fixture(scope="module")
def bedrock():
    served = Served(BedrockApp())
    yield served
    served.stop()


@pytest.fixture(scope="module")
def channel(app_server, bedrock):
    """A SigV4 channel (type 33) whose base URL replaces the regional endpoint; its models are Claude names."""
    model = unique("br-sonnet")
    app_server.add_channel(type=33, name=unique("bedrock"), key=SIGV4_KEY, base_url=bedrock.url,
                           models=["claude-haiku-4-5-20251001"], model_mapping={model: "claude-sonnet-4-5-20250929"})
    return model


# ---- pure functions ----

def test_claude_names_map_to_bedrock_ids_behind_the_regions_profile():
    assert app.bedrock_model_id("claude-sonnet-4-5-20250929", "us-east-1") == \
        "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
    assert app.bedrock_model_id("claude-opus-4-1-20250805", "eu-central-1") == \
        "eu.anthropic.claude-opus-4-1-20250805-v1:0"
    assert app.bedrock_model_id("claude-haiku-4-5-20251001", "ap-northeast-1").startswith("apac.anthropic.")
    for model_id in ("amazon.nova-pro-v1:0", "us.anthropic.claude-3-5-haiku-20241022-v1:0",
                     "arn:aws:bedrock:us-east-1:123:inference-profile/x"):
        assert app.bedrock_model_id(model_id, "us-east-1") == model_id


def test_openai_request_to_converse():
    chat = {"model": "m", "max_tokens": 50, "temperature": 0.3, "stop": "END", "tools": [WEATHER],
            "tool_choice": "required", "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Weather?"}, {
                    "type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}}]},
                {"role": "assistant", "content": None, "tool_calls": [{"id": "t1", "type": "function", "function": {
                    "name": "get_weather", "arguments": '{"location":"Paris"}'}}]},
                {"role": "tool", "tool_call_id": "t1", "content": "sunny"},
                {"role": "user", "content": "thanks"}]}
    body = app.openai_to_converse_request(chat, "claude-sonnet-4-5-20250929")
    assert body["system"] == [{"text": "Be brief."}]
    assert body["messages"] == [
        {"role": "user", "content": [{"text": "Weather?"}, {"image": {"format": "png", "source": {"bytes": PIXEL}}}]},
        {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t1", "name": "get_weather",
                                                       "input": {"location": "Paris"}}}]},
        {"role": "user", "content": [{"toolResult": {"toolUseId": "t1", "content": [{"text": "sunny"}]}},
                                     {"text": "thanks"}]}]
    assert body["inferenceConfig"] == {"maxTokens": 50, "temperature": 0.3, "stopSequences": ["END"]}
    assert body["toolConfig"]["toolChoice"] == {"any": {}}
    assert body["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"]["required"] == ["location"]
    pdf = base64.b64encode(b"%PDF-1.4 a page").decode()
    documents = app.openai_to_converse_request({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "Summarise"},
        {"type": "file", "file": {"filename": "a.pdf", "file_data": f"data:application/pdf;base64,{pdf}"}}]}]}, "m")
    assert documents["messages"][0]["content"][1] == {"document": {"format": "pdf", "name": "document 2",
                                                                   "source": {"bytes": pdf}}}
    with pytest.raises(app.RelayError, match="data: URLs"):
        app.openai_to_converse_request({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]}, "m")


def test_converse_answer_to_pivot_counts_cache_tokens_in_the_prompt():
    answer = {"output": {"message": {"role": "assistant", "content": [
        {"reasoningContent": {"reasoningText": {"text": "hmm", "signature": "s"}}}, {"text": "Hi"},
        {"toolUse": {"toolUseId": "t9", "name": "f", "input": {"a": 1}}}]}},
        "stopReason": "tool_use", "usage": USAGE}
    pivot, usage = app.converse_to_openai_response(answer, "m", "r1")
    message = pivot["choices"][0]["message"]
    assert (message["content"], message["reasoning_content"], pivot["choices"][0]["finish_reason"]) == (
        "Hi", "hmm", "tool_calls")
    assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == {"a": 1}
    assert (usage.input_tokens, usage.output_tokens, usage.cached_tokens) == (PROMPT, 3, 2)


def test_event_stream_frames_split_anywhere_and_crc_checked():
    """The mock's frames are what botocore's own parser reads (so they follow AWS's encoding); ours reads them
    from any cut, and refuses a frame whose CRC is wrong."""
    from botocore.eventstream import EventStreamBuffer

    stream = event("messageStart", {"role": "assistant"}) + exception("throttlingException", "slow down")
    parsed = EventStreamBuffer()
    parsed.add_data(stream)
    assert [m.headers[":message-type"] for m in parsed] == ["event", "exception"]
    for cut in range(len(stream) + 1):
        first, rest, error = app.event_stream_messages(stream[:cut])
        second, left, error_too = app.event_stream_messages(rest + stream[cut:])
        assert [h[":message-type"] for h, _ in first + second] == ["event", "exception"] and left == b""
        assert error is error_too is None
    assert json.loads((first + second)[-1][1]) == {"message": "slow down"}
    good = event("messageStop", {"stopReason": "end_turn"})
    messages, left, error = app.event_stream_messages(good + frame({":event-type": "x"}, b"{}", corrupt=True))
    assert len(messages) == 1 and "CRC mismatch" in str(error) and left.startswith(b"\0")


def test_every_kind_the_catalog_lists_is_served():
    """The catalog lint for this type (test_catalog leaves it to this file): no built-in model answers 501."""
    catalog = app.load_catalog()
    modes = app.adaptor_for(catalog[33]).modes
    assert {app.KINDS[kind].mode for _, kind in catalog[33].models} <= modes


# ---- over HTTP, with the official SDKs ----

def test_openai_chat_signed_with_sigv4(app_server, bedrock, channel):
    bedrock.app.requests.clear()
    answer = app_server.openai().chat.completions.create(model=channel, messages=[
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == TEXT and answer.choices[0].finish_reason == "stop"
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (PROMPT, 3)
    sent = bedrock.app.requests[-1]
    assert sent["path"] == "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse"
    assert sent["headers"]["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/")
    assert SECRET_KEY not in json.dumps(sent["headers"])
    row = wait_logs(app_server, 1, model_name=channel)[0]
    assert (row["usage"]["input_tokens"], row["usage"]["output_tokens"], row["code"]) == (PROMPT, 3, 200)


def test_openai_stream_with_usage(app_server, channel):
    chunks = list(app_server.openai().chat.completions.create(
        model=channel, messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True}))
    assert [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content] == REPLY
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].usage.prompt_tokens == PROMPT and chunks[-1].usage.completion_tokens == 3


@pytest.mark.parametrize("stream", [False, True])
def test_openai_tools_round_trip_and_image(app_server, channel, stream):
    client = app_server.openai()
    messages = [{"role": "user", "content": [{"type": "text", "text": "Weather here?"}, {
        "type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}}]}]
    if stream:
        chunks = list(client.chat.completions.create(model=channel, messages=messages, tools=[WEATHER],
                                                     stream=True))
        calls = [t for c in chunks if c.choices for t in c.choices[0].delta.tool_calls or []]
        call_id, name = calls[0].id, calls[0].function.name
        arguments = "".join(t.function.arguments or "" for t in calls)
        assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
            "tool_calls"]
    else:
        first = client.chat.completions.create(model=channel, messages=messages, tools=[WEATHER])
        call = first.choices[0].message.tool_calls[0]
        call_id, name, arguments = call.id, call.function.name, call.function.arguments
        assert first.choices[0].finish_reason == "tool_calls"
    assert (name, json.loads(arguments)) == ("get_weather", {"location": "Paris"})
    messages += [{"role": "assistant", "content": None, "tool_calls": [
        {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": call_id, "content": "sunny, 21 °C"}]
    final = client.chat.completions.create(model=channel, messages=messages, tools=[WEATHER])
    assert final.choices[0].message.content == f"{TEXT} (1 image) [sunny, 21 °C]"


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_sdk_on_bedrock(app_server, channel, stream):
    client = anthropic.Anthropic(base_url=app_server.url, api_key=app_server.admin_key, max_retries=0)
    tools = [{"name": "get_weather", "description": "Weather", "input_schema": {
        "type": "object", "properties": {"location": {"type": "string"}}}}]
    if stream:
        with client.messages.stream(model=channel, max_tokens=100, messages=[
                {"role": "user", "content": "hi"}]) as events:
            text = "".join(events.text_stream)
            message = events.get_final_message()
        assert text == TEXT and message.usage.output_tokens == 3
    else:
        message = client.messages.create(model=channel, max_tokens=100, tools=tools,
                                         messages=[{"role": "user", "content": "Weather in Paris?"}])
        assert message.stop_reason == "tool_use"
        assert [(b.name, b.input) for b in message.content if b.type == "tool_use"] == [
            ("get_weather", {"location": "Paris"})]
        assert message.usage.cache_read_input_tokens == 2


def test_a_pdf_from_the_anthropic_sdk_reaches_bedrock_as_a_document(app_server, channel):
    client = anthropic.Anthropic(base_url=app_server.url, api_key=app_server.admin_key, max_retries=0)
    pdf = base64.b64encode(b"%PDF-1.4 a page").decode()
    message = client.messages.create(model=channel, max_tokens=100, messages=[{"role": "user", "content": [
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": pdf}},
        {"type": "text", "text": "Summarise this."}]}])
    assert message.content[0].text == f"{TEXT} (1 document)"


def test_gemini_client_on_bedrock(app_server, channel):
    client = genai.Client(api_key=app_server.admin_key, http_options=types.HttpOptions(base_url=app_server.url))
    answer = client.models.generate_content(model=channel, contents="hi")
    assert answer.text == TEXT and answer.usage_metadata.prompt_token_count == PROMPT
    pieces = [c.text for c in client.models.generate_content_stream(model=channel, contents="hi") if c.text]
    assert "".join(pieces) == TEXT


def test_session_token_and_api_key_and_a_wrong_secret(app_server, bedrock):
    temporary, bearer, wrong = unique("br-temp"), unique("br-bearer"), unique("br-wrong")
    for model, key in ((temporary, f"{REGION}|{TEMP_ACCESS_KEY}|{TEMP_SECRET_KEY}|{SESSION_TOKEN}"),
                       (bearer, f"{REGION}|{API_KEY}"), (wrong, f"{REGION}|{ACCESS_KEY}|{'x' * 40}")):
        app_server.add_channel(type=33, name=unique("bedrock"), key=key, base_url=bedrock.url,
                               model_mapping={model: "amazon.nova-lite-v1:0"})
    client = app_server.openai()
    for model in (temporary, bearer):
        assert client.chat.completions.create(model=model, messages=[
            {"role": "user", "content": "hi"}]).choices[0].message.content == TEXT
    assert bedrock.app.requests[-1]["headers"]["authorization"] == f"Bearer {API_KEY}"
    with pytest.raises(openai.PermissionDeniedError) as refused:
        client.chat.completions.create(model=wrong, messages=[{"role": "user", "content": "hi"}])
    assert "signature we calculated does not match" in refused.value.message and "x" * 40 not in str(
        refused.value.body)


@pytest.mark.parametrize("scenario, said", [("corrupt", "CRC mismatch"), ("exception", "Too many requests")])
def test_a_broken_stream_ends_with_an_error_event(app_server, bedrock, scenario, said):
    model = unique(f"br-{scenario}")
    app_server.add_channel(type=33, name=unique("bedrock"), key=SIGV4_KEY, base_url=f"{bedrock.url}/{scenario}",
                           model_mapping={model: "amazon.nova-pro-v1:0"})
    with app_server.client.stream("POST", "/v1/chat/completions", json={
            "model": model, "stream": True, "messages": [{"role": "user", "content": "hi"}]}) as response:
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert response.status_code == 200 and said in events[-1] and json.loads(events[-1])["error"]
    assert json.loads(events[1])["choices"][0]["delta"]["content"] == REPLY[0]  # what came before the break


def test_channel_test_and_upstream_models_are_signed(app_server, bedrock, channel):
    channel_id = next(c["id"] for c in app_server.channels() if channel in c["model_mapping"])
    result = app_server.api("GET", f"/api/channel/{channel_id}/test/{channel}")["data"]
    assert result["success"] and result["code"] == 200
    listed = app_server.api("POST", "/api/channel/upstream-models", json={
        "type": 33, "key": SIGV4_KEY, "base_url": bedrock.url})
    assert listed["success"] and "amazon.nova-pro-v1:0" in listed["data"]
    assert bedrock.app.requests[-1]["path"] == "/foundation-models"


def test_without_botocore_a_sigv4_channel_says_which_extra(start_app, bedrock, tmp_path):
    """botocore hidden from the app (an import that fails): calls and channel tests say `pip install
    'aiproxy-local[aws]'` in the client's error shape, and a Bedrock API key still works."""
    hidden = tmp_path / "hidden"
    (hidden / "botocore").mkdir(parents=True)
    (hidden / "botocore" / "__init__.py").write_text(textwrap.dedent("""
        raise ImportError("botocore is hidden for this test")
    """))
    server = start_app(env={"PYTHONPATH": str(hidden)})
    server.add_channel(type=33, name="sigv4", key=SIGV4_KEY, base_url=bedrock.url, models=["amazon.nova-pro-v1:0"])
    server.add_channel(type=33, name="bearer", key=f"{REGION}|{API_KEY}", base_url=bedrock.url,
                       models=["amazon.nova-lite-v1:0"])
    with pytest.raises(openai.APIStatusError) as refused:
        server.openai().chat.completions.create(model="amazon.nova-pro-v1:0", messages=[
            {"role": "user", "content": "hi"}])
    assert refused.value.status_code == 501 and "pip install 'aiproxy-local[aws]'" in refused.value.message
    sigv4 = next(c["id"] for c in server.channels() if c["name"] == "sigv4")
    test = server.api("GET", f"/api/channel/{sigv4}/test/amazon.nova-pro-v1:0")["data"]
    assert not test["success"] and "pip install 'aiproxy-local[aws]'" in json.loads(test["response"])["error"][
        "message"]
    assert server.openai().chat.completions.create(model="amazon.nova-lite-v1:0", messages=[
        {"role": "user", "content": "hi"}]).choices[0].message.content == TEXT
