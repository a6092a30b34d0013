"""Anthropic Messages: both ways, the converters as pure functions, then over real HTTP with the
official SDKs. The `anthropic` SDK calls /v1/messages on an OpenAI channel (converted) and on an Anthropic channel
(passed through); the `openai` SDK calls /v1/chat/completions on an Anthropic channel (converted).

The fake upstream (fake_upstream.py) answers in each format and refuses what the real APIs refuse, so a request
that was converted wrongly fails there.
"""

from __future__ import annotations

import base64
import json

import anthropic
import httpx
import openai
import pytest

import aiproxy_local as app
from conftest import streamed_chat_one_to_one, unique, wait_logs
from fake_upstream import THINKING_PIECES, THINKING_SIGNATURE, TOOL_INPUT, count_prompt_tokens, reply_text

WEATHER = {"name": "get_weather", "description": "Get the current weather in a given location",
           "input_schema": {"type": "object", "properties": {"location": {"type": "string"}},
                            "required": ["location"]}}
OPENAI_WEATHER = {"type": "function", "function": {"name": WEATHER["name"], "description": WEATHER["description"],
                                                   "parameters": WEATHER["input_schema"]}}
PIXEL = base64.b64encode(b"\x89PNG\r\n\x1a\n fake pixel").decode()
THINKING = "".join(THINKING_PIECES)


def claude(app_server, **kw) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=app_server.url, api_key=app_server.admin_key, max_retries=0, **kw)


def final_message(client: anthropic.Anthropic, stream: bool, **request) -> anthropic.types.Message:
    """One Messages call: streamed and read to its final message, or not streamed."""
    if stream:
        with client.messages.stream(**request) as events:
            return events.get_final_message()
    return client.messages.create(**request)


def received(upstream, model: str) -> list[dict]:
    """The bodies the upstream got for this model, oldest first."""
    return [r["json"] for r in upstream.requests() if (r.get("json") or {}).get("model") == model]


# ---- the converters, as pure functions ----

def test_openai_request_to_anthropic():
    chat = {"model": "m", "stop": "END", "temperature": 0.2, "top_p": 0.9, "user": "u1", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is the weather?"},
        {"role": "user", "content": [{"type": "text", "text": "In SF."},
                                     {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}},
                                     {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"location":"SF"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "15 degrees"},
        {"role": "user", "content": "Thanks"}],
        "tools": [OPENAI_WEATHER], "tool_choice": "required", "parallel_tool_calls": False}
    body = app.openai_to_anthropic_request(chat, "claude-sonnet-4-5-20250929")
    assert body["system"] == [{"type": "text", "text": "Be brief."}]
    assert body["max_tokens"] == 64000 and body["stop_sequences"] == ["END"]
    assert (body["temperature"], body["top_p"], body["metadata"]) == (0.2, 0.9, {"user_id": "u1"})
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]  # same-role turns merged
    first, call, result = (m["content"] for m in body["messages"])
    assert [b["type"] for b in first] == ["text", "text", "image", "image"]
    assert first[2]["source"] == {"type": "base64", "media_type": "image/png", "data": PIXEL}
    assert first[3]["source"] == {"type": "url", "url": "https://example.com/a.jpg"}
    assert call == [{"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"location": "SF"}}]
    assert result == [{"type": "tool_result", "tool_use_id": "call_1", "content": "15 degrees"},
                      {"type": "text", "text": "Thanks"}]
    assert body["tools"] == [WEATHER]
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}


def test_reasoning_effort_becomes_a_thinking_budget():
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1000, "temperature": 0.5,
            "reasoning_effort": "low"}
    body = app.openai_to_anthropic_request(chat, "claude-opus-4-1")
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert body["max_tokens"] == 3048 and "temperature" not in body  # the budget must fit under max_tokens
    assert "thinking" not in app.openai_to_anthropic_request({"messages": chat["messages"]}, "claude-opus-4-1")
    assert app.anthropic_max_tokens("claude-opus-4-1") == 32000 and app.anthropic_max_tokens("my-alias") == 4096


def test_anthropic_answer_to_openai_with_cache_tokens():
    message = {"id": "msg_1", "type": "message", "role": "assistant", "stop_reason": "tool_use", "content": [
        {"type": "thinking", "thinking": "Hmm.", "signature": "s"}, {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": TOOL_INPUT}],
        "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 100,
                  "cache_creation_input_tokens": 20}}
    answer, usage = app.anthropic_to_openai_response(message, "asked")
    reply = answer["choices"][0]["message"]
    assert (reply["content"], reply["reasoning_content"]) == ("Let me look.", "Hmm.")
    assert reply["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": json.dumps(TOOL_INPUT,
                                                                                                 separators=(",", ":"))}
    assert answer["choices"][0]["finish_reason"] == "tool_calls" and answer["model"] == "asked"
    assert (usage.input_tokens, usage.cached_tokens, usage.output_tokens, usage.total_tokens) == (130, 100, 5, 135)
    assert answer["usage"]["prompt_tokens_details"] == {"cached_tokens": 100}


def test_anthropic_request_to_openai_keeps_tool_ids_and_thinking():
    body = {"model": "m", "max_tokens": 100, "system": [{"type": "text", "text": "Be brief."}],
            "stop_sequences": ["END"], "tool_choice": {"type": "tool", "name": "get_weather"}, "tools": [WEATHER],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Weather?"}, {"type": "text", "text": "In SF."}]},
                {"role": "assistant", "content": [{"type": "thinking", "thinking": "Look it up.", "signature": "s"},
                                                  {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                                   "input": TOOL_INPUT}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "15 C"},
                                             {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                          "data": PIXEL}}]}]}
    chat = app.anthropic_to_openai_request(body)
    system, user, assistant, tool, image = chat["messages"]
    assert system == {"role": "system", "content": "Be brief."}
    assert user == {"role": "user", "content": "Weather?\nIn SF."}  # text only: one string
    assert assistant["reasoning_content"] == "Look it up." and assistant["content"] is None
    assert assistant["tool_calls"][0]["id"] == tool["tool_call_id"] == "toolu_1"
    assert image["content"] == [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}}]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert (chat["stop"], chat["max_tokens"], chat["tools"]) == (["END"], 100, [OPENAI_WEATHER])


def test_openai_answer_to_anthropic():
    chat = {"id": "c1", "choices": [{"finish_reason": "length", "message": {
        "role": "assistant", "content": "Hi", "reasoning_content": "Think.",
        "tool_calls": [{"id": "call_1", "function": {"name": "f", "arguments": "{\"a\": 1}"}}]}}],
        "usage": {"prompt_tokens": 30, "completion_tokens": 4, "prompt_tokens_details": {"cached_tokens": 10}}}
    message = app.openai_to_anthropic_response(chat, "asked")
    assert [b["type"] for b in message["content"]] == ["thinking", "text", "tool_use"]
    assert message["content"][2]["input"] == {"a": 1} and message["stop_reason"] == "max_tokens"
    assert message["usage"] == {"input_tokens": 20, "output_tokens": 4, "cache_read_input_tokens": 10,
                                "cache_creation_input_tokens": 0}


# ---- the anthropic SDK on an OpenAI channel (converted) ----

def test_messages_on_an_openai_channel(app_server, upstream):
    model = unique("claude")
    channel = app_server.add_channel(base_url=upstream.url("ok"), models=[model])
    message = claude(app_server).messages.create(model=model, max_tokens=64, system="Be brief.",
                                                 messages=[{"role": "user", "content": "hello there friend"}])
    assert message.model == model and message.role == "assistant" and message.stop_reason == "end_turn"
    assert [b.type for b in message.content] == ["text"] and message.content[0].text == reply_text(3)
    prompt = count_prompt_tokens({"messages": [{"content": "hello there friend"}], "system": "Be brief."})
    assert (message.usage.input_tokens, message.usage.output_tokens) == (prompt, 3)
    (sent,) = received(upstream, model)
    assert sent["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "hello there friend"}]
    assert sent["max_tokens"] == 64
    (row,) = wait_logs(app_server, total=1, model_name=model)
    assert (row["endpoint"], row["mode"], row["channel"], row["code"]) == ("/v1/messages", 12, channel, 200)
    assert row["usage"]["input_tokens"] == prompt and not row["usage_estimated"]


def test_streamed_messages_on_an_openai_channel(app_server, upstream):
    model = unique("claude")
    app_server.add_channel(base_url=upstream.url("chunks-5+gap-20"), models=[model])
    events = list(claude(app_server).messages.create(model=model, max_tokens=64, stream=True,
                                                     messages=[{"role": "user", "content": "hello"}]))
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds.count("content_block_delta") == 5  # one event for each upstream chunk: none merged
    assert "".join(e.delta.text for e in events if e.type == "content_block_delta") == reply_text(5)
    assert events[-2].delta.stop_reason == "end_turn" and events[-2].usage.output_tokens == 5
    assert received(upstream, model)[0]["stream_options"] == {"include_usage": True}
    (row,) = wait_logs(app_server, total=1, model_name=model)
    assert row["stream"] and row["usage"]["output_tokens"] == 5 and not row["usage_estimated"]


@pytest.mark.parametrize("stream", [False, True])
def test_tool_use_both_ways_on_an_openai_channel(app_server, upstream, stream):
    model = unique("claude")
    app_server.add_channel(base_url=upstream.url("tool"), models=[model])
    client = claude(app_server)
    question = [{"role": "user", "content": "What is the weather in San Francisco?"}]
    message = final_message(client, stream, model=model, max_tokens=256, tools=[WEATHER], messages=question)
    (call,) = [b for b in message.content if b.type == "tool_use"]
    assert (call.name, call.input, message.stop_reason) == ("get_weather", TOOL_INPUT, "tool_use")
    answer = client.messages.create(model=model, max_tokens=256, tools=[WEATHER], messages=question + [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in message.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "15 degrees"}]}])
    assert answer.content[0].text == reply_text(3)
    first, second = received(upstream, model)
    assert first["tools"] == [OPENAI_WEATHER]
    assistant, tool = second["messages"][1:]
    assert assistant["tool_calls"][0]["id"] == tool["tool_call_id"] == call.id
    assert json.loads(assistant["tool_calls"][0]["function"]["arguments"]) == TOOL_INPUT
    assert tool["content"] == "15 degrees"


@pytest.mark.parametrize("stream", [False, True])
def test_reasoning_content_becomes_thinking_and_goes_back(app_server, upstream, stream):
    model = unique("deepseek")
    app_server.add_channel(base_url=upstream.url("thinking"), models=[model])
    client = claude(app_server)
    question = [{"role": "user", "content": "Why is the sky blue?"}]
    message = final_message(client, stream, model=model, max_tokens=256, messages=question)
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == THINKING and message.content[1].text == reply_text(3)
    client.messages.create(model=model, max_tokens=256, messages=question + [
        {"role": "assistant", "content": [b.model_dump() for b in message.content]},
        {"role": "user", "content": "And at sunset?"}])
    assistant = received(upstream, model)[1]["messages"][1]
    assert assistant == {"role": "assistant", "content": reply_text(3), "reasoning_content": THINKING}


def test_messages_on_an_azure_channel(app_server, upstream):
    model = unique("gpt-4.1")
    app_server.add_channel(type=3, base_url=upstream.host_url("tool"), key="az-key", models=[model])
    message = claude(app_server).messages.create(model=model, max_tokens=64, tools=[WEATHER],
                                                 messages=[{"role": "user", "content": "Weather in SF?"}])
    assert message.content[0].type == "tool_use" and message.content[0].input == TOOL_INPUT
    (request,) = [r for r in upstream.requests() if r["deployment"] == model.replace(".", "")]
    assert request["endpoint"] == "chat/completions" and request["json"]["tools"] == [OPENAI_WEATHER]


def test_images_from_data_and_urls_reach_an_openai_channel(app_server, upstream):
    model = unique("claude")
    app_server.add_channel(base_url=upstream.url("ok"), models=[model])
    claude(app_server).messages.create(model=model, max_tokens=64, messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PIXEL}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {"type": "text", "text": "What is in these images?"}]}])
    (sent,) = received(upstream, model)
    assert sent["messages"][0]["content"] == [
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        {"type": "text", "text": "What is in these images?"}]


def test_count_tokens_on_an_openai_channel_is_an_estimate_without_a_call(app_server, upstream):
    model = unique("claude")
    app_server.add_channel(base_url=upstream.url("ok"), models=[model])
    counted = claude(app_server).messages.count_tokens(model=model, system="Be brief.", messages=[
        {"role": "user", "content": "hello there friend " * 20}])
    assert 60 <= counted.input_tokens <= 120  # ~4 characters a token
    assert received(upstream, model) == []
    (row,) = wait_logs(app_server, total=1, model_name=model)
    assert row["endpoint"] == "/v1/messages/count_tokens" and row["code"] == 200 and row["channel"] == 0


def test_errors_on_v1_messages_have_anthropic_shape(app_server, upstream):
    model = unique("claude")
    app_server.add_channel(base_url=upstream.url("status-429"), models=[model])
    client = claude(app_server)
    with pytest.raises(anthropic.RateLimitError) as limited:
        client.messages.create(model=model, max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    assert limited.value.body == {"type": "error", "error": {"type": "rate_limit_error",
                                                             "message": "fake upstream error 429"}}
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model=unique(), max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    assert missing.value.body["error"]["type"] == "not_found_error"
    url, key = f"{app_server.url}/v1/messages", {"x-api-key": app_server.admin_key}  # Claude Code's header
    for response, status, kind in (
            (httpx.post(url, headers=key, json={"model": model, "max_tokens": 8}), 400, "invalid_request_error"),
            (httpx.post(url, headers=key, content=b"{oops"), 400, "invalid_request_error"),
            (httpx.post(url, headers={"x-api-key": "wrong"}, json={}), 401, "authentication_error")):
        assert response.status_code == status and response.json() == {
            "type": "error", "error": {"type": kind, "message": response.json()["error"]["message"]}}


def test_a_broken_stream_ends_with_an_anthropic_error_event(app_server, upstream):
    model = unique("claude")
    app_server.add_channel(base_url=upstream.url("cut-2"), models=[model])
    with pytest.raises(anthropic.APIStatusError):
        list(claude(app_server).messages.create(model=model, max_tokens=8, stream=True,
                                                messages=[{"role": "user", "content": "hi"}]))
    (row,) = wait_logs(app_server, total=1, model_name=model)
    assert row["code"] == 502 and "broke off" in row["content"]


# ---- the anthropic SDK on an Anthropic channel (passed through) ----

def test_messages_pass_through_an_anthropic_channel(app_server, upstream):
    alias, real = unique("claude"), unique("claude-real")
    app_server.add_channel(type=14, base_url=upstream.url("cacheread-40+cachewrite-8"), models=[real],
                           model_mapping={alias: real}, key="sk-ant-channel")
    client = claude(app_server, default_headers={"anthropic-beta": "prompt-caching-2024-07-31"})
    message = client.messages.create(model=alias, max_tokens=64, system="Be brief.", extra_query={"beta": "true"},
                                     messages=[{"role": "user", "content": "hello there friend"}])
    assert message.model == alias and message.content[0].text == reply_text(3)
    assert (message.usage.cache_read_input_tokens, message.usage.cache_creation_input_tokens) == (40, 8)
    with client.messages.stream(model=alias, max_tokens=64, messages=[{"role": "user", "content": "hi"}]) as events:
        streamed = events.get_final_message()
    assert streamed.model == alias and streamed.content[0].text == reply_text(3)
    first, second = [r for r in upstream.requests() if (r.get("json") or {}).get("model") == real]
    assert first["path"].endswith("/v1/messages") and first["json"]["system"] == "Be brief."  # untouched
    assert (first["query"], second["query"]) == ("beta=true", "")  # Claude Code's ?beta=true goes along
    headers = first["headers"]
    assert headers["x-api-key"] == "sk-ant-channel" and "authorization" not in headers
    assert headers["anthropic-version"] == anthropic.Anthropic(api_key="k").default_headers["anthropic-version"]
    assert headers["anthropic-beta"] == "prompt-caching-2024-07-31"
    rows = wait_logs(app_server, total=2, model_name=alias)
    prompt = count_prompt_tokens(first["json"])
    non_stream = next(r for r in rows if not r["stream"])
    assert non_stream["usage"]["input_tokens"] == prompt + 48 and non_stream["usage"]["cached_tokens"] == 40
    assert all(r["usage"]["output_tokens"] == 3 and not r["usage_estimated"] for r in rows)


@pytest.mark.parametrize("stream", [False, True])
def test_thinking_and_tools_pass_through_an_anthropic_channel(app_server, upstream, stream):
    model = unique("claude")
    app_server.add_channel(type=14, base_url=upstream.url("tool"), models=[model])
    request = dict(model=model, max_tokens=4096, tools=[WEATHER], thinking={"type": "enabled", "budget_tokens": 2048},
                   messages=[{"role": "user", "content": "Weather in SF?"}])
    client = claude(app_server)
    message = final_message(client, stream, **request)
    assert [b.type for b in message.content] == ["thinking", "text", "tool_use"]
    assert message.content[0].signature == THINKING_SIGNATURE and message.content[2].input == TOOL_INPUT


def test_count_tokens_on_an_anthropic_channel_asks_the_upstream(app_server, upstream):
    model = unique("claude")
    app_server.add_channel(type=14, base_url=upstream.url("ok"), models=[model])
    question = [{"role": "user", "content": "hello there friend"}]
    counted = claude(app_server).messages.count_tokens(model=model, messages=question)
    assert counted.input_tokens == count_prompt_tokens({"messages": question})
    assert [r["endpoint"] for r in upstream.requests() if (r.get("json") or {}).get("model") == model] == [
        "messages/count_tokens"]


def test_an_anthropic_error_event_passes_through_and_is_logged(app_server, upstream):
    model = unique("claude")
    app_server.add_channel(type=14, base_url=upstream.url("error-1"), models=[model])
    with pytest.raises(anthropic.APIStatusError) as info:
        list(claude(app_server).messages.create(model=model, max_tokens=8, stream=True,
                                                messages=[{"role": "user", "content": "hi"}]))
    assert "Overloaded" in str(info.value)
    (row,) = wait_logs(app_server, total=1, model_name=model)
    assert row["code"] == 529 and "overloaded_error" in row["content"]


# ---- the openai SDK on an Anthropic channel (converted) ----

def test_chat_on_an_anthropic_channel(app_server, upstream):
    model = unique("claude-sonnet-4-5")
    channel = app_server.add_channel(type=14, base_url=upstream.url("cacheread-100+cachewrite-20"), models=[model],
                                     key="sk-ant-channel")
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there friend"},
                {"role": "user", "content": "and more"}]
    answer = app_server.openai().chat.completions.create(model=model, messages=messages, stop=["END"])
    assert answer.model == model and answer.choices[0].message.content == reply_text(3)
    assert answer.choices[0].finish_reason == "stop"
    (request,) = [r for r in upstream.requests() if (r.get("json") or {}).get("model") == model]
    sent = request["json"]
    assert request["endpoint"] == "messages" and request["headers"]["x-api-key"] == "sk-ant-channel"
    assert request["headers"]["anthropic-version"] == "2023-06-01" and "authorization" not in request["headers"]
    assert sent["system"] == [{"type": "text", "text": "Be brief."}] and sent["max_tokens"] == 64000
    assert sent["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hello there friend"},
                                                             {"type": "text", "text": "and more"}]}]
    assert sent["stop_sequences"] == ["END"]
    prompt = count_prompt_tokens(sent)
    assert answer.usage.prompt_tokens == prompt + 120 and answer.usage.prompt_tokens_details.cached_tokens == 100
    (row,) = wait_logs(app_server, total=1, model_name=model)
    assert row["channel"] == channel and row["usage"]["input_tokens"] == prompt + 120
    assert row["usage"]["cached_tokens"] == 100 and row["endpoint"] == "/v1/chat/completions"


def test_streamed_chat_on_an_anthropic_channel(app_server, upstream):
    model = unique("claude")
    app_server.add_channel(type=14, base_url=upstream.url("chunks-4+gap-20"), models=[model])
    streamed_chat_one_to_one(app_server, model)
    (row,) = wait_logs(app_server, total=1, model_name=model)
    assert row["stream"] and row["usage"]["output_tokens"] == 4 and not row["usage_estimated"]


@pytest.mark.parametrize("stream", [False, True])
def test_tool_calls_both_ways_on_an_anthropic_channel(app_server, upstream, stream):
    model = unique("claude")
    app_server.add_channel(type=14, base_url=upstream.url("tool"), models=[model])
    client = app_server.openai()
    question = [{"role": "user", "content": "What is the weather in San Francisco?"}]
    if stream:
        chunks = list(client.chat.completions.create(model=model, messages=question, tools=[OPENAI_WEATHER],
                                                     tool_choice="auto", stream=True))
        calls = [t for c in chunks if c.choices for t in c.choices[0].delta.tool_calls or []]
        call_id, name = calls[0].id, calls[0].function.name
        arguments = "".join(t.function.arguments or "" for t in calls)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert len(calls) == 3 and finish == ["tool_calls"]  # the start, then one chunk per partial_json
    else:
        message = client.chat.completions.create(model=model, messages=question, tools=[OPENAI_WEATHER],
                                                 tool_choice="auto").choices[0].message
        call_id, name, arguments = message.tool_calls[0].id, message.tool_calls[0].function.name, \
            message.tool_calls[0].function.arguments
    assert name == "get_weather" and json.loads(arguments) == TOOL_INPUT
    followup = question + [{"role": "assistant", "content": None, "tool_calls": [
        {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": call_id, "content": "15 degrees"}]
    answer = client.chat.completions.create(model=model, messages=followup, tools=[OPENAI_WEATHER])
    assert answer.choices[0].message.content == reply_text(3)
    first, second = received(upstream, model)
    assert first["tools"] == [WEATHER] and first["tool_choice"] == {"type": "auto"}
    assert second["messages"][1]["content"] == [{"type": "tool_use", "id": call_id, "name": name,
                                                 "input": TOOL_INPUT}]
    assert second["messages"][2]["content"] == [{"type": "tool_result", "tool_use_id": call_id,
                                                 "content": "15 degrees"}]


def test_reasoning_effort_and_images_on_an_anthropic_channel(app_server, upstream):
    model = unique("claude-opus-4-1")
    app_server.add_channel(type=14, base_url=upstream.url("ok"), models=[model])
    raw = app_server.openai().chat.completions.with_raw_response.create(
        model=model, reasoning_effort="medium", messages=[{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]}])
    reply = raw.http_response.json()["choices"][0]["message"]
    assert reply["reasoning_content"] == THINKING and reply["content"] == reply_text(3)
    (sent,) = received(upstream, model)
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 8192} and sent["max_tokens"] == 32000
    assert [b.get("source") for b in sent["messages"][0]["content"]] == [
        None, {"type": "base64", "media_type": "image/png", "data": PIXEL},
        {"type": "url", "url": "https://example.com/cat.jpg"}]


def test_anthropic_errors_reach_an_openai_client_in_its_shape(app_server, upstream):
    model, streamed = unique("claude"), unique("claude")
    app_server.add_channel(type=14, base_url=upstream.url("status-429"), models=[model])
    app_server.add_channel(type=14, base_url=upstream.url("error-1"), models=[streamed])
    client = app_server.openai()
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    assert limited.value.body["message"] == "fake upstream error 429" and limited.value.body["type"] == "rate_limit_error"
    received_text = []
    with pytest.raises(openai.APIError) as broken:
        for chunk in client.chat.completions.create(model=streamed, messages=[{"role": "user", "content": "hi"}],
                                                    stream=True):
            received_text += [chunk.choices[0].delta.content or ""] if chunk.choices else []
    assert "Overloaded" in str(broken.value) and "".join(received_text) == reply_text(1)
    (row,) = wait_logs(app_server, total=1, model_name=streamed)
    assert row["code"] == 529


def test_channel_test_on_an_anthropic_channel_sends_a_messages_request(app_server, upstream):
    model = unique("claude")
    channel = app_server.add_channel(type=14, base_url=upstream.url("ok"), models=[model])
    result = app_server.api("GET", f"/api/channel/{channel}/test/{model}")["data"]
    assert result["success"] is True and result["code"] == 200
    assert json.loads(result["response"])["choices"][0]["message"]["content"] == reply_text(3)
    (request,) = [r for r in upstream.requests() if (r.get("json") or {}).get("model") == model]
    assert request["endpoint"] == "messages" and request["json"]["max_tokens"] == 4096


def test_a_thinking_block_from_another_channel_goes_to_anthropic_without_its_empty_signature(app_server, upstream):
    """A conversation may move between channels of different formats (failover, priorities): thinking that an
    OpenAI-style channel produced has no signature, and Anthropic refuses unsigned thinking blocks."""
    model = unique("claude")
    app_server.add_channel(type=14, base_url=upstream.url("ok"), models=[model])
    answer = claude(app_server).messages.create(model=model, max_tokens=64, messages=[
        {"role": "user", "content": "Why?"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "Hmm.", "signature": ""},
                                          {"type": "text", "text": "Because."}]},
        {"role": "user", "content": "Why again?"}])
    assert answer.content[0].text == reply_text(3)
    assert received(upstream, model)[0]["messages"][1]["content"] == [{"type": "text", "text": "Because."}]


def test_models_are_listed_in_anthropics_shape(app_server, upstream):
    model = unique("claude-sonnet")
    app_server.add_channel(base_url=upstream.url("ok"), models=[model])
    client = claude(app_server)
    listed = {m.id: m for m in client.models.list()}
    assert listed[model].type == "model" and listed[model].display_name == model
    assert client.models.retrieve(model).id == model
    with pytest.raises(anthropic.NotFoundError) as info:
        client.models.retrieve(unique("nowhere"))
    assert info.value.body["type"] == "error" and info.value.body["error"]["type"] == "not_found_error"


# ---- what Claude Code sends today (2.1.x): every field converted or dropped by the README's rules ----

CLAUDE_CODE_TOOLS = [
    dict(WEATHER, cache_control={"type": "ephemeral"}, strict=True),
    {"name": "mcp__docs__search", "description": "Search the docs", "defer_loading": True,
     "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}},
    {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
    {"type": "bash_20250124", "name": "bash"},
]


def claude_code_body(model: str, stream: bool = False) -> dict:
    """A request shaped like Claude Code 2.1.197's (tap record in real-clients.md), with a history that holds
    every kind of content block a client may send back."""
    return {
        "model": model, "max_tokens": 32000, "stream": stream,
        "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
        "metadata": {"user_id": "user_abc_account__session_123"}, "thinking": {"type": "adaptive"},
        "output_config": {"effort": "xhigh"}, "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
        "tools": CLAUDE_CODE_TOOLS, "tool_choice": {"type": "auto"},
        "stop_sequences": ["a", "b", "c", "d", "e"],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "Read these.", "cache_control": {"type": "ephemeral"}},
                {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain doc"},
                 "title": "notes.txt"},
                {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}},
                {"type": "search_result", "source": "https://example.com/r", "title": "A result",
                 "content": [{"type": "text", "text": "result text"}]}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Let me look.", "signature": THINKING_SIGNATURE},
                {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"},
                {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "x"}},
                {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": [
                    {"type": "web_search_result", "url": "https://example.com/w", "title": "Web page",
                     "encrypted_content": "abc"}]},
                {"type": "text", "text": "Checking the weather."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"location": "SF"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "is_error": False, "content": [
                    {"type": "text", "text": "15 degrees"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PIXEL}}]},
                {"type": "text", "text": "And now?"}]},
            {"role": "system", "content": "Available agent types for the Agent tool: claude"},
        ]}


def test_claude_codes_request_converts_to_openai_by_the_rules():
    chat = app.anthropic_to_openai_request(claude_code_body("claude-opus-4-8"))
    roles = [m["role"] for m in chat["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "user"]  # the inner system message joined the first
    assert chat["messages"][0]["content"] == ("You are Claude Code.\n\n"
                                              "Available agent types for the Agent tool: claude")
    first = chat["messages"][1]["content"]
    assert first == ("Read these.\nnotes.txt\nplain doc\nhttps://example.com/a.pdf\n"
                     "A result\nhttps://example.com/r\nresult text")
    assistant = chat["messages"][2]
    assert assistant["reasoning_content"] == "Let me look."  # redacted thinking dropped
    assert assistant["content"] == "Checking the weather.\nWeb page https://example.com/w"
    assert [c["id"] for c in assistant["tool_calls"]] == ["toolu_1"]  # the server tool's call is not a function's
    assert chat["messages"][3] == {"role": "tool", "tool_call_id": "toolu_1", "content": "15 degrees"}
    image_then_text = chat["messages"][4]["content"]  # the tool result's image follows the tool message
    assert [p["type"] for p in image_then_text] == ["image_url", "text"]
    assert [t["function"]["name"] for t in chat["tools"]] == ["get_weather", "mcp__docs__search"]
    assert all(set(t["function"]) == {"name", "description", "parameters"} for t in chat["tools"])
    assert chat["reasoning_effort"] == "high" and chat["stop"] == ["a", "b", "c", "d"]
    assert not {"metadata", "context_management", "thinking", "output_config", "user"} & set(chat)


@pytest.mark.parametrize(("thinking", "config", "effort"), [
    ({"type": "adaptive"}, None, "medium"), ({"type": "enabled", "budget_tokens": 31999}, None, "high"),
    ({"type": "enabled", "budget_tokens": 2048}, None, "low"), ({"type": "disabled"}, {"effort": "high"}, None),
    (None, {"effort": "low"}, "low"), (None, {"effort": "max"}, "high"), (None, None, None)])
def test_thinking_and_effort_become_reasoning_effort(thinking, config, effort):
    body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    body.update({k: v for k, v in (("thinking", thinking), ("output_config", config)) if v is not None})
    assert app.anthropic_to_openai_request(body).get("reasoning_effort") == effort


def test_structured_output_converts_both_ways():
    schema = {"type": "object", "properties": {"score": {"type": "integer"}}}
    body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}],
            "output_config": {"format": {"type": "json_schema", "schema": schema}}}
    chat = app.anthropic_to_openai_request(body)
    assert chat["response_format"]["json_schema"]["schema"] == schema
    assert app.openai_to_anthropic_request(chat, "claude-x")["output_config"] == {
        "format": {"type": "json_schema", "schema": schema}}


@pytest.mark.parametrize("stream", [False, True])
def test_claude_code_on_a_deepseek_channel_through_a_wildcard_row(app_server, upstream, stream):
    """Claude Code's own default name, served by `claude-*`; its 32,000 max_tokens lowered to the channel's
    max_output_tokens, the trail saying so; the upstream (which refuses a tool message without its call, and
    roles it does not know) gets one leading system message."""
    real = unique("deepseek")
    channel = app_server.add_channel(type=36, base_url=upstream.url("ok"), models=[real],
                                     model_mapping={"claude-*": real}, config={"max_output_tokens": 8192})
    response = httpx.post(f"{app_server.url}/v1/messages", json=claude_code_body("claude-opus-4-8", stream),
                          headers={"x-api-key": app_server.admin_key, "anthropic-version": "2023-06-01",
                                   "anthropic-beta": "mid-conversation-system-2026-04-07",
                                   "Aiproxy-Channel": str(channel)}, timeout=30)  # other tests' claude-* rows too
    assert response.status_code == 200, response.text
    assert ("event: message_stop" if stream else reply_text(3)) in response.text
    sent = received(upstream, real)[-1]
    assert sent["max_tokens"] == 8192 and sent["reasoning_effort"] == "high"
    assert [m["role"] for m in sent["messages"]].count("system") == 1 and sent["messages"][0]["role"] == "system"
    row = wait_logs(app_server, 1, model_name="claude-opus-4-8", channel=channel)[0]
    assert row["code"] == 200 and row["actual_model"] == real
    assert row["attempts"][0]["adjusted"] == "max_tokens 32000 → 8192 (the model's output limit)"
