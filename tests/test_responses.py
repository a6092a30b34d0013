"""OpenAI Responses: the converters and the event encoder as pure functions, then over real
HTTP with the official `openai` SDK: /v1/responses through the pivot on chat-only OpenAI-style, Anthropic, Gemini
and Azure channels, natively on OpenAI (type 1), stored answers for `previous_response_id`, GET and DELETE.

The fake upstream (fake_upstream.py) speaks the Responses format too, and refuses what OpenAI refuses (an unknown
previous_response_id, a function output without its call, reasoning item ids it never gave out).
"""

from __future__ import annotations

import json

import httpx
import openai
import pytest

import aiproxy_local as app
from conftest import BACKENDS, backend_dsn, unique, wait_logs
from fake_upstream import THINKING_PIECES, TOOL_INPUT, reply_text, responses_prompt_tokens

WEATHER = {"type": "function", "name": "get_weather", "description": "Get the current weather in a given location",
           "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}
CHAT_WEATHER = {"type": "function", "function": {k: v for k, v in WEATHER.items() if k != "type"}}
#: channel type → base URL scenario builder: a chat-only OpenAI-style type (DeepSeek), Anthropic, Gemini, Azure
PIVOT_TYPES = {36: "url", 14: "url", 24: "host_url", 3: "host_url"}


def add_pivot_channel(app_server, upstream, type_id: int, scenario: str, model: str) -> int:
    return app_server.add_channel(type=type_id, base_url=getattr(upstream, PIVOT_TYPES[type_id])(scenario),
                                  models=[model])


def sent_to(upstream, model: str) -> list[dict]:
    """What the upstream got for this model: its JSON bodies (the model in the body, in a Gemini URL or an Azure
    deployment)."""
    return [r["json"] for r in upstream.requests() if (r.get("json") or {}).get("model") == model
            or f"/models/{model}:" in r["path"] or r.get("deployment") == model.replace(".", "")]


def stream_events(client, **request) -> list:
    return list(client.responses.create(stream=True, **request))


def _call(body: dict):
    class State:
        retry_times = 0

    return app.parse_relay_call(State(), app.Incoming("/v1/responses", request_id="7"),
                                app.RELAY_ROUTES["/v1/responses"], json.dumps(body).encode(), app.ADMIN_CALLER)


# ---- the converters, as pure functions ----

def test_responses_request_to_chat():
    body = {"model": "m", "instructions": "Be brief.", "max_output_tokens": 99, "temperature": 0.3,
            "reasoning": {"effort": "low"}, "tools": [WEATHER, {"type": "web_search"}],
            "tool_choice": {"type": "function", "name": "get_weather"},
            "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": True}}}
    items = [{"role": "user", "content": [{"type": "input_text", "text": "Weather?"},
                                          {"type": "input_image", "image_url": "https://example.com/a.png"}]},
             {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Look it up."}]},
             {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"location":"SF"}'},
             {"type": "function_call_output", "call_id": "call_1", "output": "15 C"},
             {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "It is 15 C."}]},
             {"role": "developer", "content": "Answer in Celsius."},
             {"role": "user", "content": "Thanks"}]
    chat = app.responses_to_chat(body, items)
    system, user, assistant, tool, reply, developer, thanks = chat["messages"]
    assert system == {"role": "system", "content": "Be brief."}
    assert user["content"] == [{"type": "text", "text": "Weather?"},
                               {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]
    assert assistant == {"role": "assistant", "content": None, "reasoning_content": "Look it up.", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"location":"SF"}'}}]}
    assert tool == {"role": "tool", "tool_call_id": "call_1", "content": "15 C"}
    assert reply == {"role": "assistant", "content": "It is 15 C."} and thanks == {"role": "user", "content": "Thanks"}
    assert developer == {"role": "system", "content": "Answer in Celsius."}
    assert chat["tools"] == [CHAT_WEATHER]  # the built-in web_search has no chat form
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert (chat["max_tokens"], chat["temperature"], chat["reasoning_effort"]) == (99, 0.3, "low")
    assert chat["response_format"] == {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"},
                                                                              "strict": True}}


def test_chat_answer_to_a_response():
    call = _call({"model": "asked", "input": "hi", "instructions": "Be brief."})
    chat = {"choices": [{"finish_reason": "length", "message": {
        "role": "assistant", "content": "Hi", "reasoning_content": "Think.",
        "tool_calls": [{"id": "call_9", "function": {"name": "f", "arguments": "{}"}}]}}],
        "usage": {"prompt_tokens": 30, "completion_tokens": 4, "prompt_tokens_details": {"cached_tokens": 10},
                  "completion_tokens_details": {"reasoning_tokens": 2}}}
    response = app.chat_to_response(chat, call, app.responses_turn(call))
    assert response["id"] == "resp_7" and response["model"] == "asked" and response["instructions"] == "Be brief."
    assert [i["type"] for i in response["output"]] == ["reasoning", "message", "function_call"]
    assert response["output"][2]["call_id"] == "call_9" and response["output"][1]["content"][0]["text"] == "Hi"
    assert (response["status"], response["incomplete_details"]) == ("incomplete", {"reason": "max_output_tokens"})
    assert response["usage"] == {"input_tokens": 30, "input_tokens_details": {"cached_tokens": 10},
                                 "output_tokens": 4, "output_tokens_details": {"reasoning_tokens": 2},
                                 "total_tokens": 34}


def test_the_encoder_sends_the_documented_events_in_order():
    def chunk(delta: dict, finish: str | None = None) -> bytes:
        return b"data: " + json.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}).encode() \
            + b"\n\n"

    call = _call({"model": "m", "input": "hi", "stream": True})
    stream = app.ConvertedStream(call, app.OpenAIDecoder(), app.ResponsesEncoder(call))
    upstream = [chunk({"role": "assistant", "reasoning_content": "Hm."}), chunk({"content": "Hel"}),
                chunk({"content": "lo"}), chunk({"tool_calls": [{"index": 0, "id": "call_1", "function": {
                    "name": "f", "arguments": '{"a":'}}]}), chunk({"tool_calls": [{"index": 0, "function": {
                        "arguments": "1}"}}]}), chunk({}, "tool_calls"), b"data: [DONE]\n\n"]
    writes = [stream.feed(e) for e in upstream] + [stream.close()]
    events = [json.loads(app.sse_fields(e)[1]) for w in writes for e in app.sse_events(w)]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events] == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.reasoning_summary_part.added", "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done", "response.reasoning_summary_part.done", "response.output_item.done",
        "response.output_item.added", "response.content_part.added", "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "response.output_item.done", "response.completed"]
    final = events[-1]["response"]
    assert {e["response"]["id"] for e in events if "response" in e} == {final["id"]}
    assert [o["type"] for o in final["output"]] == ["reasoning", "message", "function_call"]
    assert final["output"][2]["arguments"] == '{"a":1}' and b"[DONE]" not in b"".join(writes)


def test_stored_turns_replay_without_ids_for_an_openai_upstream():
    history = [{"input_items": [{"type": "message", "role": "user", "content": "hi"}], "answer": {"output": [
        {"id": "rs_1", "type": "reasoning", "summary": []},
        {"id": "msg_1", "type": "message", "status": "completed", "role": "assistant",
         "content": [{"type": "output_text", "text": "Hello", "annotations": []}]},
        {"id": "fc_1", "type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}",
         "status": "completed"}]}}]
    native = app.replay_items(history, native=True)
    assert native == [{"type": "message", "role": "user", "content": "hi"},
                      {"type": "message", "role": "assistant",
                       "content": [{"type": "output_text", "text": "Hello", "annotations": []}]},
                      {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"}]
    assert [i["type"] for i in app.replay_items(history, native=False)] == ["message", "reasoning", "message",
                                                                            "function_call"]


@pytest.fixture(params=BACKENDS)
def engine(request, tmp_path):
    for dsn in backend_dsn(request.param, tmp_path):
        engine = app.make_engine(dsn)
        app.create_schema(engine)
        yield engine
        engine.dispose()


def test_stored_responses_on_every_database(engine):
    """Saved (and saved again), read back along the chain with their owner checked, deleted with old age."""
    def row(response_id: str, previous: str, created_at: int, token_id: int = 5) -> dict:
        return {"id": response_id, "created_at": created_at, "token_id": token_id, "native_channel": 0,
                "model": "m", "previous_response_id": previous, "input_items": [{"role": "user", "content": "模型"}],
                "answer": {"id": response_id, "output": [{"type": "message", "content": []}]}}

    app.save_stored_response(engine, row("resp_1", "", 1000))
    app.save_stored_response(engine, row("resp_2", "resp_1", 2000))
    app.save_stored_response(engine, row("resp_2", "resp_1", 2000))  # a second write of one answer: no error
    pending = {"resp_3": row("resp_3", "resp_2", 3000)}  # not written yet
    chain, gap = app.load_response_chain(engine, "resp_3", 5, pending)
    assert [r["id"] for r in chain] == ["resp_1", "resp_2", "resp_3"] and gap == ""
    assert chain[0]["input_items"] == [{"role": "user", "content": "模型"}]
    assert app.load_response_chain(engine, "resp_3", 6, pending) == ([], "resp_3")  # another key's
    assert app.load_stored_response(engine, "resp_2", None, {})["answer"]["id"] == "resp_2"  # the admin's view
    assert app.delete_stored_response(engine, "resp_2", 6) is False
    assert app.delete_stored_responses_before(engine, 1500) == 1
    chain, gap = app.load_response_chain(engine, "resp_2", 5, {})
    assert [r["id"] for r in chain] == ["resp_2"] and gap == "resp_1"  # its first turn has aged out
    assert app.delete_stored_response(engine, "resp_2", 5) is True


# ---- the openai SDK on channels served through the pivot ----

@pytest.mark.parametrize("type_id", sorted(PIVOT_TYPES))
def test_responses_through_the_pivot(app_server, upstream, type_id):
    model = unique("gpt-4.1" if type_id == 3 else "claude" if type_id == 14 else "gemini" if type_id == 24 else "ds")
    channel = add_pivot_channel(app_server, upstream, type_id, "ok", model)
    client = app_server.openai()
    response = client.responses.create(model=model, instructions="Be brief.", input="hello there friend",
                                       max_output_tokens=64)
    assert response.output_text == reply_text(3) and response.status == "completed" and response.model == model
    assert response.usage.output_tokens == 3 and response.usage.input_tokens > 0
    events = stream_events(client, model=model, input="hello")
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == reply_text(3)
    assert events[-1].response.usage.output_tokens == 3 and events[-1].response.id == events[0].response.id
    rows = wait_logs(app_server, total=2, model_name=model)
    assert {(r["endpoint"], r["mode"], r["channel"]) for r in rows} == {("/v1/responses", 16, channel)}
    assert all(r["usage"]["output_tokens"] == 3 and not r["usage_estimated"] for r in rows)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("type_id", sorted(PIVOT_TYPES))
def test_function_tools_both_ways_through_the_pivot(app_server, upstream, type_id, stream):
    model = unique("gpt-4.1" if type_id == 3 else "m")
    add_pivot_channel(app_server, upstream, type_id, "tool", model)
    client = app_server.openai()
    question = [{"role": "user", "content": "What is the weather in San Francisco?"}]
    if stream:
        with client.responses.stream(model=model, input=question, tools=[WEATHER]) as events:
            response = events.get_final_response()
    else:
        response = client.responses.create(model=model, input=question, tools=[WEATHER])
    (call,) = [o for o in response.output if o.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments) == TOOL_INPUT and call.call_id
    answer = client.responses.create(model=model, tools=[WEATHER], input=question + [
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "15 degrees"}])
    assert answer.output_text == reply_text(3)
    first, second = sent_to(upstream, model)[-2:]
    if type_id == 36:  # an OpenAI-style chat request: the conversion is plain to see
        assert first["tools"] == [CHAT_WEATHER]
        assistant, tool = second["messages"][1:]
        assert assistant["tool_calls"][0]["id"] == tool["tool_call_id"] == call.call_id
        assert tool["content"] == "15 degrees"


@pytest.mark.parametrize("type_id", [36, 14])
def test_previous_response_id_replays_the_earlier_turns(app_server, upstream, type_id):
    model = unique("m")
    add_pivot_channel(app_server, upstream, type_id, "ok", model)
    client = app_server.openai()
    first = client.responses.create(model=model, input="My name is Ada.", instructions="Be brief.")
    second = client.responses.create(model=model, input="What is my name?", previous_response_id=first.id)
    third = client.responses.create(model=model, input="And again?", previous_response_id=second.id)
    assert third.previous_response_id == second.id
    last = sent_to(upstream, model)[-1]
    texts = [m["content"] if isinstance(m["content"], str) else "".join(b.get("text", "") for b in m["content"])
             for m in (last["messages"])]
    if type_id == 36:
        assert texts == ["My name is Ada.", reply_text(3), "What is my name?", reply_text(3), "And again?"]
        assert [m["role"] for m in last["messages"]] == ["user", "assistant", "user", "assistant", "user"]
    else:  # Anthropic: the same turns, system apart; the first turn's instructions are not carried over
        assert texts == ["My name is Ada.", reply_text(3), "What is my name?", reply_text(3), "And again?"]
        assert "system" not in last


def test_get_and_delete_a_stored_response(app_server, upstream):
    model = unique("m")
    add_pivot_channel(app_server, upstream, 36, "ok", model)
    client = app_server.openai()
    created = client.responses.create(model=model, input="hello")
    fetched = client.responses.retrieve(created.id)
    assert (fetched.id, fetched.output_text, fetched.usage.output_tokens) == (created.id, reply_text(3), 3)
    client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(created.id)
    with pytest.raises(openai.BadRequestError) as gone:
        client.responses.create(model=model, input="again", previous_response_id=created.id)
    assert gone.value.body["code"] == "previous_response_not_found"
    rows = wait_logs(app_server, total=4, model_name=model)  # the calls on a deleted id name no model
    assert sorted((r["mode"], r["code"]) for r in rows) == [(16, 200), (16, 400), (17, 200), (18, 200)]
    assert {r["endpoint"] for r in rows if r["mode"] in (17, 18)} == {f"/v1/responses/{created.id}"}


def test_store_false_keeps_nothing(app_server, upstream):
    model = unique("m")
    add_pivot_channel(app_server, upstream, 36, "ok", model)
    client = app_server.openai()
    response = client.responses.create(model=model, input="hello", store=False)
    assert response.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)


def test_a_key_sees_only_its_own_stored_responses(app_server, upstream):
    model = unique("m")
    add_pivot_channel(app_server, upstream, 36, "ok", model)
    keys = [app_server.api("POST", "/api/tokens/", json={"name": unique("tok")})["data"]["key"] for _ in range(2)]
    owner, stranger = (app_server.openai(api_key=k) for k in keys)
    response = owner.responses.create(model=model, input="hello")
    assert owner.responses.retrieve(response.id).id == response.id
    with pytest.raises(openai.NotFoundError):
        stranger.responses.retrieve(response.id)
    with pytest.raises(openai.BadRequestError):
        stranger.responses.create(model=model, input="hi", previous_response_id=response.id)
    assert app_server.openai().responses.retrieve(response.id).id == response.id  # the admin key sees all


def test_reasoning_content_becomes_a_reasoning_item_and_goes_back(app_server, upstream):
    model = unique("deepseek-reasoner")
    add_pivot_channel(app_server, upstream, 36, "thinking", model)
    client = app_server.openai()
    events = stream_events(client, model=model, input="Why is the sky blue?")
    final = events[-1].response
    assert [o.type for o in final.output] == ["reasoning", "message"]
    assert final.output[0].summary[0].text == "".join(THINKING_PIECES)
    assert "".join(e.delta for e in events if e.type == "response.reasoning_summary_text.delta") == \
        "".join(THINKING_PIECES)
    client.responses.create(model=model, input="And at sunset?", previous_response_id=final.id)
    assistant = sent_to(upstream, model)[-1]["messages"][1]
    assert assistant == {"role": "assistant", "content": reply_text(3), "reasoning_content": "".join(THINKING_PIECES)}


def test_errors_reach_a_responses_client(app_server, upstream):
    model, streamed = unique("m"), unique("m")
    add_pivot_channel(app_server, upstream, 36, "status-429", model)
    add_pivot_channel(app_server, upstream, 14, "error-1", streamed)
    client = app_server.openai()
    with pytest.raises(openai.RateLimitError) as limited:
        client.responses.create(model=model, input="hi")
    assert limited.value.body["message"] == "fake upstream error 429"
    events = stream_events(client, model=streamed, input="hi")
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-2:] == ["error", "response.failed"]
    assert events[-1].response.id == events[0].response.id and events[-1].response.error.message == "Overloaded"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == reply_text(1)
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model=model, input=42)
    form = httpx.post(f"{app_server.url}/v1/responses", headers=app_server.headers, data={"model": model},
                      files={"file": ("a.txt", b"hi")})
    assert form.status_code == 400 and form.json()["error"]["message"].startswith("input:")
    (row,) = wait_logs(app_server, total=1, model_name=streamed)
    assert row["code"] == 529


# ---- the openai SDK on OpenAI itself (type 1: passed through) ----

def test_responses_pass_through_an_openai_channel(app_server, upstream):
    alias, real = unique("gpt-alias"), unique("gpt-5")
    channel = app_server.add_channel(type=1, base_url=upstream.url("cacheread-2"), models=[real],
                                     model_mapping={alias: real})
    client = app_server.openai()
    first = client.responses.create(model=alias, input="hello there friend", instructions="Be brief.")
    assert first.model == alias and first.output_text == reply_text(3) and first.id.startswith("resp_fake_")
    events = stream_events(client, model=alias, input="What did I say?", previous_response_id=first.id)
    final = events[-1].response
    assert events[-1].type == "response.completed" and final.model == alias
    requests = sent_to(upstream, real)
    assert requests[0]["instructions"] == "Be brief." and requests[0]["input"] == "hello there friend"
    assert requests[1]["previous_response_id"] == first.id  # this upstream knows it: passed as it is
    assert client.responses.retrieve(final.id).output_text == reply_text(3)  # stored here too
    rows = {r["stream"]: r for r in wait_logs(app_server, total=3, model_name=alias) if r["mode"] == 16}
    assert rows[False]["usage"]["input_tokens"] == responses_prompt_tokens(requests[0], [])
    assert rows[False]["usage"]["cached_tokens"] == 2 and rows[True]["channel"] == channel
    assert rows[True]["usage"]["output_tokens"] == 3 and not rows[True]["usage_estimated"]


def test_a_turn_answered_through_the_pivot_is_replayed_to_openai(app_server, upstream):
    """OpenAI never saw a turn another channel answered: the stored turns go as input, without the ids it would
    refuse (the reasoning item's above all)."""
    model = unique("gpt-5")
    pivot = add_pivot_channel(app_server, upstream, 36, "thinking", model)
    native = app_server.add_channel(type=1, base_url=upstream.url("ok"), models=[model], priority=-1)
    client = app_server.openai()
    first = client.responses.create(model=model, input="My name is Ada.")
    app_server.api("POST", f"/api/channel/{pivot}/status", json={"status": 2})
    try:
        second = client.responses.create(model=model, input="What is my name?", previous_response_id=first.id)
    finally:
        app_server.api("POST", f"/api/channel/{pivot}/status", json={"status": 1})
    assert second.output_text == reply_text(3)
    sent = sent_to(upstream, model)[-1]
    assert "previous_response_id" not in sent and [i.get("type", "message") for i in sent["input"]] == [
        "message", "message", "message"]
    assert sent["input"][1] == {"type": "message", "role": "assistant", "content": [
        {"type": "output_text", "text": reply_text(3), "annotations": [], "logprobs": []}]}
    (row,) = wait_logs(app_server, total=1, model_name=model, channel=native)
    assert row["code"] == 200


def test_a_broken_native_stream_ends_with_response_failed(app_server, upstream):
    model = unique("gpt-5")
    app_server.add_channel(type=1, base_url=upstream.url("cut-2"), models=[model])
    events = stream_events(app_server.openai(), model=model, input="hi")
    assert [e.type for e in events][-2:] == ["error", "response.failed"]
    assert events[-1].response.id == events[0].response.id
    assert [e.sequence_number for e in events] == list(range(len(events)))
    (row,) = wait_logs(app_server, total=1, model_name=model)
    assert row["code"] == 502 and "broke off" in row["content"]


def test_unknown_response_ids_get_openais_shape(app_server):
    response = httpx.get(f"{app_server.url}/v1/responses/resp_nothing", headers=app_server.headers)
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    response = httpx.get(f"{app_server.url}/v1/responses/resp_nothing", headers={"Authorization": "Bearer wrong"})
    assert response.status_code == 401 and "error" in response.json()
