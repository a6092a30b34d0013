"""Admin API: aiproxy's /api contract as FastGPT uses it.

Real HTTP against the shared `app_server` process (httpx as the client). The database is shared by the whole
session, so every test makes its own channels, models and tokens with unique names and never assumes an empty
table. Log rows (and the dashboard's per-minute summaries) come from a batching writer: tests poll for them.
"""

from __future__ import annotations

import concurrent.futures
import csv
import io
import json
import re
import sqlite3
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import openai
import pytest
import sqlalchemy as sa

import aiproxy_local as app
from conftest import unique, wait_logs

MESSAGES = [{"role": "user", "content": "hello admin api"}]
ENVELOPE_KEYS = {"success", "message", "data"}
CHANNEL_FIELDS = {"id", "type", "name", "key", "base_url", "models", "model_mapping", "status", "priority",
                  "created_at", "request_count", "used_amount", "channel_tests"}
TEST_RESULT_FIELDS = {"test_at", "model", "actual_model", "took", "success", "code", "response", "channel_id",
                      "channel_name", "channel_type"}
LOG_FIELDS = {"id", "request_id", "request_at", "created_at", "ttfb_milliseconds", "model", "actual_model",
              "channel", "code", "endpoint", "content", "ip", "retry_times", "token_id", "token_name", "usage",
              "prompt_tokens", "completion_tokens"}
USAGE_FIELDS = {"input_tokens", "output_tokens", "total_tokens", "cached_tokens"}
SUMMARY_FIELDS = {"channel_id", "model", "request_count", "exception_count", "input_tokens", "output_tokens",
                  "total_tokens", "total_time_milliseconds", "total_ttfb_milliseconds", "max_rpm", "max_tpm",
                  "cache_hit_count", "used_amount"}
FASTGPT_TYPES = (1, 3, 12, 13, 14, 16, 17, 19, 20, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 36, 40, 41, 43, 45, 47)

# ---- helpers ----


def envelope(resp: httpx.Response, status: int = 200) -> dict[str, Any]:
    """Assert the HTTP status and aiproxy's {success, message?, data?} shape; return the parsed body."""
    assert resp.status_code == status, f"{resp.request.method} {resp.request.url} -> {resp.status_code}: {resp.text}"
    assert "Traceback" not in resp.text
    body = resp.json()
    assert isinstance(body, dict) and set(body) <= ENVELOPE_KEYS and isinstance(body["success"], bool), body
    if body["success"]:
        assert status == 200
    else:
        assert isinstance(body.get("message"), str) and body["message"], body
    return body


def ok(resp: httpx.Response) -> Any:
    """The `data` of a successful envelope."""
    body = envelope(resp)
    assert body["success"] is True, body
    return body.get("data")


def fail(resp: httpx.Response, status: int) -> str:
    """The `message` of a failed envelope with this HTTP status."""
    body = envelope(resp, status)
    assert body["success"] is False, body
    return body["message"]


def create_channel(app_server: Any, **fields: Any) -> list[int]:
    """POST /api/channel/ and return the ids it made (one per key line), oldest first."""
    fields.setdefault("type", 1)
    fields.setdefault("key", "sk-fake")
    fields.setdefault("name", unique("ch"))
    before = {ch["id"] for ch in all_channels(app_server)}
    data = ok(app_server.client.post("/api/channel/", json=fields))
    made = sorted({ch["id"] for ch in all_channels(app_server) if ch["name"] == fields["name"]} - before)
    assert made == sorted(data["ids"]), data
    return made


def all_channels(app_server: Any) -> list[dict[str, Any]]:
    return ok(app_server.client.get("/api/channels/all"))


def get_channel(app_server: Any, channel_id: int) -> dict[str, Any]:
    return ok(app_server.client.get(f"/api/channel/{channel_id}"))


def chat(app_server: Any, model: str, key: str | None = None, channel: int | None = None,
         messages: list[dict[str, Any]] | None = None) -> httpx.Response:
    """One raw /v1/chat/completions call (raw, to see X-Request-Id and failures as they are)."""
    headers = {"Authorization": f"Bearer {key or app_server.admin_key}"}
    if channel is not None:
        headers["Aiproxy-Channel"] = str(channel)
    return httpx.post(f"{app_server.url}/v1/chat/completions", headers=headers, timeout=30,
                      json={"model": model, "messages": messages or MESSAGES})


def logs(app_server: Any, path: str = "/api/logs/", **params: Any) -> dict[str, Any]:
    return ok(app_server.client.get(path, params=params))



def now_ms() -> int:
    return int(time.time() * 1000)


def create_token(app_server: Any, **fields: Any) -> dict[str, Any]:
    fields.setdefault("name", unique("tok"))
    return ok(app_server.client.post("/api/tokens/", json=fields))


# ---- envelope, auth, routing ----

def paged(items: str, size: int = 10) -> Any:
    def check(data: Any) -> None:
        assert set(data) == {items, "total"} and isinstance(data[items], list), data
        assert isinstance(data["total"], int) and len(data[items]) <= size, data
    return check


def is_list(data: Any) -> None:
    assert isinstance(data, list), data


def check_type_metas(data: Any) -> None:
    assert {str(t) for t in FASTGPT_TYPES} <= set(data) and data["1"]["name"], data.get("1")


def check_options(data: Any) -> None:
    assert set(data) >= {"retry_times", "log_retention_days"} and all(isinstance(v, int) for v in data.values())


def check_enabled_models(data: Any) -> None:
    assert set(data) == {"default"} and isinstance(data["default"], list), data


def check_status(data: Any) -> None:
    assert len(str(data["startTime"])) == 13 and isinstance(data["version"], str), data


#: each list route with what its `data` must look like
LIST_ROUTES = {"/api/channels": paged("channels"), "/api/channels/all": is_list,
               "/api/channels/search": paged("channels"), "/api/channels/type_metas": check_type_metas,
               "/api/logs": paged("logs"), "/api/logs/search": paged("logs"), "/api/dashboardv2": is_list,
               "/api/tokens": paged("tokens"), "/api/option": check_options,
               "/api/model_configs": paged("configs", 100), "/api/models/enabled": check_enabled_models,
               "/api/status": check_status}


@pytest.mark.parametrize("slash", ["", "/"], ids=["no-slash", "slash"])
@pytest.mark.parametrize("path", LIST_ROUTES)
def test_get_routes_answer_envelope_with_and_without_trailing_slash(app_server, path, slash):
    LIST_ROUTES[path](ok(app_server.client.get(path + slash)))


@pytest.mark.parametrize("path", ["/api/channel", "/api/channel/"])
def test_create_channel_with_and_without_trailing_slash(app_server, upstream, path):
    name = unique("slash")
    ok(app_server.client.post(path, json={"type": 1, "key": "k", "name": name, "base_url": upstream.url()}))
    assert [ch["name"] for ch in all_channels(app_server)].count(name) == 1


def test_item_routes_accept_trailing_slash(app_server):
    (cid,) = create_channel(app_server)
    assert ok(app_server.client.get(f"/api/channel/{cid}/"))["id"] == cid
    ok(app_server.client.post(f"/api/channel/{cid}/status/", json={"status": 2}))
    assert get_channel(app_server, cid)["status"] == 2
    ok(app_server.client.delete(f"/api/channel/{cid}/"))


@pytest.mark.parametrize("headers, params", [
    ({}, {}),
    ({"Authorization": "Bearer wrong-key"}, {}),
    ({"Authorization": "Bearer"}, {}),
    ({}, {"key": "wrong-key"}),
], ids=["missing", "wrong-bearer", "empty-bearer", "wrong-query"])
def test_admin_routes_refuse_missing_or_wrong_key(app_server, headers, params):
    for path in ("/api/channels/all", "/api/logs/", "/api/dashboardv2/", "/api/tokens/"):
        fail(httpx.get(app_server.url + path, headers=headers, params=params), 401)


def test_write_with_wrong_key_changes_nothing(app_server):
    name = unique("nokey")
    fail(httpx.post(f"{app_server.url}/api/channel/", headers={"Authorization": "Bearer nope"},
                    json={"type": 1, "key": "k", "name": name}), 401)
    assert name not in [ch["name"] for ch in all_channels(app_server)]


@pytest.mark.parametrize("headers, params", [
    ("Bearer {key}", {}),
    ("Bearer sk-{key}", {}),
    ("bearer {key}", {}),
    (None, {"key": "{key}"}),
    (None, {"key": "sk-{key}"}),
], ids=["bearer", "bearer-sk", "lowercase-bearer", "query", "query-sk"])
def test_admin_key_accepted_as_bearer_or_query(app_server, headers, params):
    key = app_server.admin_key
    resp = httpx.get(f"{app_server.url}/api/channels/all",
                     headers={"Authorization": headers.format(key=key)} if headers else {},
                     params={k: v.format(key=key) for k, v in params.items()})
    assert isinstance(ok(resp), list)


def test_status_is_public_with_start_time_in_ms(app_server):
    data = ok(httpx.get(f"{app_server.url}/api/status"))
    start = data["startTime"]
    assert isinstance(start, int) and len(str(start)) == 13
    assert now_ms() - 3_600_000 < start <= now_ms()


@pytest.mark.parametrize("path", ["/api/no-such-route", "/api/no/such/route/", "/api/channelz/1"])
def test_unknown_api_route_is_404_envelope(app_server, path):
    fail(app_server.client.get(path), 404)
    fail(app_server.client.post(path, json={}), 404)


@pytest.mark.parametrize("method, path", [
    ("POST", "/api/channel/"), ("POST", "/api/channels/"), ("PUT", "/api/channel/1"),
    ("POST", "/api/channel/1/status"), ("POST", "/api/channels/batch_delete"), ("POST", "/api/tokens/"),
    ("POST", "/api/model_config/some-model"), ("PUT", "/api/option/"), ("PUT", "/api/tokens/1"),
    ("POST", "/api/tokens/1/status"), ("POST", "/api/channels/batch_status"), ("POST", "/api/channel/test-preview"),
])
@pytest.mark.parametrize("body", [b"{not json", b"", b"[1, 2", b"\xff\xfe"], ids=["broken", "empty", "cut", "binary"])
def test_malformed_json_body_is_400_envelope(app_server, method, path, body):
    resp = app_server.client.request(method, path, content=body, headers={"Content-Type": "application/json"})
    fail(resp, 400)


def test_wrong_json_shape_is_400_envelope(app_server):
    fail(app_server.client.post("/api/channel/", json=[1, 2]), 400)
    fail(app_server.client.post("/api/channel/", json={"type": "not-a-number", "key": "k"}), 400)
    fail(app_server.client.post("/api/channels/batch_delete", json={"ids": "1"}), 400)  # FastGPT sends {"ids": [...]}
    fail(app_server.client.get("/api/channel/not-a-number"), 400)
    fail(app_server.client.get("/api/channels/", params={"per_page": "ten"}), 400)


# ---- bad input: declared bounds, and the error shape on every route (issue 10) ----

INT64_MAX = 2**63 - 1
SCHEMA = app.admin_openapi()
OPERATIONS = [(method.upper(), path, op) for path, ops in SCHEMA["paths"].items() for method, op in ops.items()]
VALID_PATH_PARAMS = {"integer": "1", "string": "m"}


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = SCHEMA["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def branches(node: dict[str, Any]) -> list[dict[str, Any]]:
    """The non-null alternatives of a schema (`int | None` is anyOf [integer, null])."""
    return [resolve(b) for b in resolve(node).get("anyOf", [node]) if b.get("type") != "null"]


def bad_values(node: dict[str, Any]) -> list[str]:
    """Raw JSON values just beyond a schema's declared bounds, plus overflowing and infinite numbers."""
    out: list[str] = []
    for b in branches(node):
        if "enum" in b:
            out.append(json.dumps("bogus") if b.get("type") == "string" else str(max(b["enum"]) + 1))
        if b.get("type") == "boolean":
            out.append('"maybe"')
        elif b.get("type") == "integer":
            out += [str(b.get("maximum", INT64_MAX) + 1), str(b.get("minimum", -INT64_MAX - 1) - 1), "1e400"]
        elif b.get("type") == "number":
            out += ["1e400", "-1e400", str(b.get("minimum", 0) - 1)]
        elif b.get("type") == "string" and b.get("maxLength", 10**9) <= 4096:
            out.append(json.dumps("x" * (b["maxLength"] + 1)))
        elif b.get("type") == "array" and b.get("maxItems", 10**9) <= 2000:
            out.append(json.dumps(["m"] * (b["maxItems"] + 1)))
    return out


def operation_path(path: str, op: dict[str, Any], **override: str) -> str:
    for param in op.get("parameters", []):
        if param["in"] == "path":
            value = override.get(param["name"], VALID_PATH_PARAMS[branches(param["schema"])[0]["type"]])
            path = path.replace("{" + param["name"] + "}", value)
    return path


def bad_requests(op: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(why, httpx request arguments) for each bad input the operation declares a bound for."""
    for param in op.get("parameters", []):
        for value in bad_values(param["schema"]):
            raw = json.loads(value) if value.startswith('"') else value
            if param["in"] == "path":
                yield f"path {param['name']}={value[:20]}", {"url": operation_path(path, op, **{param["name"]: raw})}
            else:
                yield f"query {param['name']}={value[:20]}", {"url": operation_path(path, op),
                                                              "params": {param["name"]: raw}}
    body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    if body is None:
        return
    url = operation_path(path, op)
    for raw in ('"not an object"', "{", "[1, 2"):
        yield f"body {raw}", {"url": url, "content": raw}
    node = resolve(body)
    if node.get("type") == "array":  # a list of ids or of channels: break the first item
        item = resolve(node["items"])
        for value in bad_values(item):
            yield f"body [{value[:20]}]", {"url": url, "content": f"[{value}]"}
        for name, prop in item.get("properties", {}).items():
            for value in bad_values(prop):
                yield f"body [{name}={value[:20]}]", {"url": url, "content": f'[{{"{name}": {value}}}]'}
    for name, prop in node.get("properties", {}).items():
        for value in bad_values(prop):
            yield f"body {name}={value[:20]}", {"url": url, "content": f'{{"{name}": {value}}}'}


@pytest.mark.parametrize("method, path, op", OPERATIONS, ids=[f"{m} {p}" for m, p, _ in OPERATIONS])
def test_every_admin_route_answers_bad_input_in_the_envelope(app_server, method, path, op):
    """Datasette's test_error_shape: every route, every declared bound, one envelope (`fail` asserts it)."""
    if path != "/api/status":
        fail(httpx.request(method, app_server.url + operation_path(path, op), timeout=30), 401)
    for why, request in bad_requests(op, path):
        headers = {"Content-Type": "application/json"} if "content" in request else {}
        message = fail(app_server.client.request(method, **request, headers=headers), 400)
        assert "invalid" in message or "must" in message, (why, message)


@pytest.mark.parametrize("path, body", [
    ("/api/channel/", {"priority": 2**64}),
    ("/api/channel/", {"priority": 1_000_001}),
    ("/api/channel/", {"weight": 2**64}),
    ("/api/channel/", {"type": 2**64}),
    ("/api/channel/", {"status": 2**64}),
    ("/api/channel/", {"status": 3}),
    ("/api/channel/", {"name": "n" * 129}),
    ("/api/channel/", {"key": "k" * (16 * 1024 + 1)}),
    ("/api/channel/", {"key": "\n".join(f"k{i}" for i in range(1001))}),
    ("/api/channel/", {"models": [f"m{i}" for i in range(2001)]}),
    ("/api/channel/", {"models": ["m" * 192]}),
    ("/api/channel/", {"model_mapping": {"a": "m" * 192}}),
    ("/api/channel/", {"base_url": "ftp://example.com"}),
    ("/api/channels/", [{"priority": -1_000_001}]),
    ("/api/tokens/", {"expired_at": 10**25}),
    ("/api/tokens/", {"expired_at": -1}),
    ("/api/tokens/", {"quota": -1}),
    ("/api/tokens/", {"quota": "1e400"}),
    ("/api/tokens/", {"name": "n" * 129}),
], ids=lambda v: json.dumps(v)[:40] if not isinstance(v, str) else v)
def test_out_of_bounds_values_are_400_and_nothing_is_saved(app_server, path, body):
    name = unique("bounds")
    valid = {"type": 1, "key": "k", "name": name}
    payload = [dict(valid, **b) for b in body] if isinstance(body, list) else dict(valid, **body)
    channels, tokens = len(all_channels(app_server)), ok(app_server.client.get("/api/tokens/"))["total"]
    fail(app_server.client.post(path, json=payload), 400)
    assert len(all_channels(app_server)) == channels
    assert ok(app_server.client.get("/api/tokens/"))["total"] == tokens


def test_bounds_are_inclusive(app_server):
    (cid,) = create_channel(app_server, priority=1_000_000, weight=10_000, models=["m" * 191])
    assert (get_channel(app_server, cid)["priority"], get_channel(app_server, cid)["weight"]) == (1_000_000, 10_000)
    ok(app_server.client.post("/api/channels/batch_priority", json={"ids": [cid], "priority": -1_000_000}))
    assert get_channel(app_server, cid)["priority"] == -1_000_000
    token = create_token(app_server, expired_at=253_402_300_799_999, quota=1e15)
    assert (token["expired_at"], token["quota"]) == (253_402_300_799_999, 1e15)


@pytest.mark.parametrize("raw", ['"1e400"', "1e400", "-0.5", "1000001", '"Infinity"', '"NaN"'])
def test_a_price_must_be_finite_and_non_negative(app_server, upstream, raw):
    model = unique("price")
    create_channel(app_server, base_url=upstream.url(), models=[model])
    fail(app_server.client.post(f"/api/model_config/{model}", content=f'{{"input_price": {raw}}}',
                                headers={"Content-Type": "application/json"}), 400)
    assert ok(app_server.client.get(f"/api/model_config/{model}"))["input_price"] is None  # unset, unknown
    assert chat(app_server, model).status_code == 200


@pytest.mark.parametrize("params", [
    {"page": 2**64}, {"per_page": "1e400"}, {"p": -(2**64)}, {"channel": 2**64}, {"channel": "-1"},
    {"start_timestamp": "1" * 25}, {"start_timestamp": "inf"}, {"end_timestamp": "1e400"},
    {"start_timestamp": "-5"}, {"code_type": "bogus"},
], ids=lambda p: json.dumps(p))
def test_log_query_bounds(app_server, params):
    paging = {"page", "per_page", "p"} & set(params)
    for path in ("/api/logs/", "/api/logs/search") + (() if paging else ("/api/logs/export",)):
        fail(app_server.client.get(path, params=params), 400)


@pytest.mark.parametrize("method, path", [
    ("GET", f"/api/channel/{2**64}"), ("PUT", f"/api/channel/{2**64}"), ("DELETE", f"/api/tokens/{2**63}"),
    ("GET", f"/api/logs/detail/{2**64}"), ("GET", "/api/channel/-1"), ("DELETE", "/api/logs/?timestamp=inf"),
    ("DELETE", f"/api/logs/?timestamp={'9' * 20}"), ("GET", f"/api/dashboardv2/?end_timestamp={'1' * 25}"),
    ("GET", f"/api/model_config/{'m' * 192}"),
])
def test_ids_and_timestamps_beyond_int64_are_400(app_server, method, path):
    fail(app_server.client.request(method, path, json={"type": 1, "key": "k"}), 400)


@pytest.mark.parametrize("body", [[2**64], [-1], list(range(1001)), {"ids": [2**64], "status": 1}],
                         ids=["beyond-int64", "negative", "too-many", "batch-status"])
def test_batch_ids_are_bounded(app_server, body):
    path = "/api/channels/batch_status" if isinstance(body, dict) else "/api/channels/batch_delete"
    fail(app_server.client.post(path, json=body), 400)
    fail(app_server.client.post("/api/tokens/batch_delete", json=body if isinstance(body, list) else [2**64]), 400)


def test_python_callers_get_api_error_for_the_same_bounds():
    """The UI builds the bodies in Python: a bad value raises ApiError (its error toast), not pydantic's error."""
    for build in (lambda: app.ChannelIn(priority=2**64), lambda: app.TokenIn(quota=float("inf")),
                  lambda: app.ModelConfigIn(input_price=1e400), lambda: app.ChannelIn(models=["m"] * 2001)):
        with pytest.raises(app.ApiError) as info:
            build()
        assert info.value.status == 400 and info.value.message.startswith("invalid request: ")


# ---- channels ----

def test_multiline_key_creates_one_channel_per_line(app_server, upstream):
    name = unique("multi")
    ids = create_channel(app_server, name=name, key="key-a\nkey-b\n\n  key-c  \n", base_url=upstream.url())
    assert len(ids) == 3
    assert sorted(get_channel(app_server, i)["key"] for i in ids) == ["key-a", "key-b", "key-c"]


def test_batch_create_takes_an_array(app_server):
    names = [unique("batch"), unique("batch")]
    data = ok(app_server.client.post("/api/channels/", json=[{"type": 1, "key": "k1", "name": names[0]},
                                                           {"type": 1, "key": "k2", "name": names[1]}]))
    assert len(data["ids"]) == 2
    assert {ch["name"] for ch in all_channels(app_server)} >= set(names)


def test_batch_create_is_all_or_nothing(app_server):
    name = unique("atomic")
    fail(app_server.client.post("/api/channels/", json=[{"type": 1, "key": "k", "name": name},
                                                        {"type": 99999, "key": "k", "name": name}]), 400)
    assert name not in [ch["name"] for ch in all_channels(app_server)]


def test_channel_list_paging_with_page_and_p(app_server):
    name = unique("page")
    ids = create_channel(app_server, name=name, key="\n".join(f"k{i}" for i in range(12)))
    first = ok(app_server.client.get("/api/channels/", params={"name": name}))
    assert first["total"] == 12 and len(first["channels"]) == 10, "per_page defaults to 10"
    assert [c["id"] for c in first["channels"]] == sorted(ids, reverse=True)[:10], "id desc"
    for param in ("page", "p"):
        second = ok(app_server.client.get("/api/channels/", params={"name": name, param: 2}))
        assert [c["id"] for c in second["channels"]] == sorted(ids, reverse=True)[10:]
    five = ok(app_server.client.get("/api/channels/", params={"name": name, "per_page": 5, "p": 3}))
    assert len(five["channels"]) == 2
    beyond = ok(app_server.client.get("/api/channels/", params={"name": name, "page": 9}))
    assert beyond == {"channels": [], "total": 12}
    for odd in ({"per_page": 0}, {"per_page": -1}, {"page": 0}, {"page": -3}):
        data = ok(app_server.client.get("/api/channels/", params={"name": name, **odd}))
        assert [c["id"] for c in data["channels"]] == [c["id"] for c in first["channels"]], odd


def test_channel_list_per_page_is_capped_at_100(app_server):
    name = unique("cap")
    ids = create_channel(app_server, name=name, key="\n".join(f"k{i}" for i in range(101)))
    try:
        data = ok(app_server.client.get("/api/channels/", params={"name": name, "per_page": 500}))
        assert data["total"] == 101 and len(data["channels"]) == 100
    finally:
        ok(app_server.client.post("/api/channels/batch_delete", json=ids))


def test_channel_list_filters(app_server, upstream):
    name = unique("filt")
    (openai_id,) = create_channel(app_server, name=name, type=1, key="key-one", base_url=upstream.url())
    (other_id,) = create_channel(app_server, name=name, type=36, key="key-two")
    ok(app_server.client.post(f"/api/channel/{other_id}/status", json={"status": 2}))

    def ids(**params: Any) -> list[int]:
        data = ok(app_server.client.get("/api/channels/", params={"name": name, **params}))
        assert data["total"] == len(data["channels"])
        return sorted(c["id"] for c in data["channels"])

    assert ids() == sorted([openai_id, other_id])
    assert ids(channel_type=36) == [other_id]
    assert ids(type=1) == [openai_id]
    assert ids(status=2) == [other_id]
    assert ids(key="key-one") == [openai_id]
    assert ids(base_url=upstream.url()) == [openai_id]
    assert ids(id=openai_id) == [openai_id]
    assert ids(id="", channel_type="", status="") == sorted([openai_id, other_id]), "empty filter = no filter"
    assert ok(app_server.client.get("/api/channels/", params={"name": unique("none")})) == {"channels": [], "total": 0}


def test_channel_search_by_keyword(app_server):
    model = unique("searchmodel")
    name = unique("searchname")
    (by_model,) = create_channel(app_server, models=[model])
    (by_name,) = create_channel(app_server, name=name)
    found = ok(app_server.client.get("/api/channels/search", params={"keyword": model}))
    assert [c["id"] for c in found["channels"]] == [by_model] and found["total"] == 1
    found = ok(app_server.client.get("/api/channels/search", params={"keyword": name[4:]}))
    assert [c["id"] for c in found["channels"]] == [by_name]
    found = ok(app_server.client.get("/api/channels/search", params={"keyword": str(by_name), "name": name}))
    assert [c["id"] for c in found["channels"]] == [by_name]


@pytest.mark.parametrize("stored, keyword", [("Qwen/{u}-Instruct", "qwen/{u}-instruct"),
                                             ("通义千问-{u}", "千问-{u}")], ids=["case", "non-ascii"])
def test_channel_search_ignores_case_and_finds_non_ascii_models(app_server, stored, keyword):
    u = uuid.uuid4().hex[:8]
    (cid,) = create_channel(app_server, models=[stored.format(u=u)])
    found = ok(app_server.client.get("/api/channels/search", params={"keyword": keyword.format(u=u)}))
    assert [c["id"] for c in found["channels"]] == [cid]


@pytest.mark.parametrize("wildcard", ["%", "_"])
def test_search_wildcards_match_only_themselves(app_server, wildcard):
    u = uuid.uuid4().hex[:8]
    (literal,) = create_channel(app_server, name=f"{u}{wildcard}x")
    create_channel(app_server, name=f"{u}ax")
    found = ok(app_server.client.get("/api/channels/search", params={"keyword": f"{u}{wildcard}"}))
    assert [c["id"] for c in found["channels"]] == [literal]
    token = create_token(app_server, name=f"{u}{wildcard}k")
    create_token(app_server, name=f"{u}ak")
    found = ok(app_server.client.get("/api/tokens/search", params={"keyword": f"{u}{wildcard}"}))
    assert [t["id"] for t in found["tokens"]] == [token["id"]]


def test_channels_all_ignores_fastgpt_paging(app_server):
    ids = create_channel(app_server, key="\n".join(f"k{i}" for i in range(12)))
    listed = ok(app_server.client.get("/api/channels/all", params={"page": 1, "perPage": 10}))
    assert set(ids) <= {c["id"] for c in listed}


def test_null_models_and_mapping_become_empty(app_server):
    (cid,) = create_channel(app_server, models=None, model_mapping=None)
    ch = get_channel(app_server, cid)
    assert ch["models"] == [] and ch["model_mapping"] == {}


def test_json_body_labelled_as_form_is_read_as_json(app_server):
    name = unique("curl")
    resp = app_server.client.post("/api/channel/", content=json.dumps({"type": 1, "key": "k", "name": name}),
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    ok(resp)
    assert name in [ch["name"] for ch in all_channels(app_server)]


def test_channels_all_returns_plain_keys_and_never_null_lists(app_server):
    key = "sk-" + uuid.uuid4().hex * 2
    (cid,) = create_channel(app_server, key=key)
    channels = all_channels(app_server)
    assert [c["id"] for c in channels] == sorted((c["id"] for c in channels), reverse=True)
    (mine,) = [c for c in channels if c["id"] == cid]
    assert mine["key"] == key, "FastGPT copies the key back verbatim on edit: never mask it"
    assert mine["models"] == [] and mine["model_mapping"] == {} and mine["channel_tests"] == []
    for ch in channels:
        assert isinstance(ch["models"], list) and isinstance(ch["model_mapping"], dict)


def test_type_metas_cover_fastgpt_types(app_server):
    metas = ok(app_server.client.get("/api/channels/type_metas"))
    for type_id in FASTGPT_TYPES:
        meta = metas[str(type_id)]
        for field in ("name", "keyHelp", "defaultBaseUrl", "readme"):
            assert isinstance(meta[field], str) and meta[field], (type_id, field)


def test_channel_json_fields(app_server, upstream):
    model = unique("fields")
    before = now_ms()
    (cid,) = create_channel(app_server, key="k", base_url=upstream.url(), models=[model, f" {model} ", ""],
                            model_mapping={"alias": model}, priority=7)
    ch = get_channel(app_server, cid)
    assert CHANNEL_FIELDS <= set(ch)
    assert ch["type"] == 1 and ch["key"] == "k" and ch["base_url"] == upstream.url()
    assert ch["models"] == [model], "trimmed, no empties, no duplicates"
    assert ch["model_mapping"] == {"alias": model}
    assert ch["status"] == 1 and ch["priority"] == 7
    assert before <= ch["created_at"] <= now_ms(), "created_at is Unix ms"
    assert ch["request_count"] == 0 and ch["used_amount"] == 0 and ch["channel_tests"] == []


def test_get_missing_channel_is_404(app_server):
    fail(app_server.client.get("/api/channel/987654321"), 404)
    fail(app_server.client.put("/api/channel/987654321", json={"type": 1, "key": "k"}), 404)
    fail(app_server.client.delete("/api/channel/987654321"), 404)
    fail(app_server.client.post("/api/channel/987654321/status", json={"status": 1}), 404)


def test_put_replaces_fields_and_keeps_status_unless_sent(app_server, upstream):
    (cid,) = create_channel(app_server, name=unique("put"), key="old-key", models=["old-model"],
                            model_mapping={"a": "old-model"}, priority=1, base_url=upstream.url())
    ok(app_server.client.post(f"/api/channel/{cid}/status", json={"status": 2}))
    new_name = unique("renamed")
    updated = ok(app_server.client.put(f"/api/channel/{cid}", json={
        "type": 36, "name": new_name, "key": "new-key", "base_url": "https://example.invalid/v1",
        "models": ["new-model"], "model_mapping": {"b": "new-model"}, "priority": 9}))
    assert updated["id"] == cid
    stored = get_channel(app_server, cid)
    for ch in (updated, stored):
        assert (ch["type"], ch["name"], ch["key"], ch["base_url"]) == (36, new_name, "new-key",
                                                                       "https://example.invalid/v1")
        assert ch["models"] == ["new-model"] and ch["model_mapping"] == {"b": "new-model"}
        assert ch["priority"] == 9 and ch["status"] == 2, "status changes only when sent"
    ok(app_server.client.put(f"/api/channel/{cid}", json={"type": 36, "key": "new-key", "status": 1,
                                                          "models": [], "model_mapping": {}}))
    stored = get_channel(app_server, cid)
    assert stored["status"] == 1 and stored["models"] == [] and stored["model_mapping"] == {}
    assert stored["name"] == new_name, "an empty name keeps the stored one"
    message = fail(app_server.client.put(f"/api/channel/{cid}", json={"type": 36, "key": "k1\nk2"}), 400)
    assert "one key" in message


def test_put_without_type_keeps_type(app_server):
    (cid,) = create_channel(app_server, type=36, key="k")
    ok(app_server.client.put(f"/api/channel/{cid}", json={"key": "k2", "priority": 3}))
    stored = get_channel(app_server, cid)
    assert stored["type"] == 36 and stored["key"] == "k2" and stored["priority"] == 3


def test_channel_status_route(app_server):
    (cid,) = create_channel(app_server)
    ok(app_server.client.post(f"/api/channel/{cid}/status", json={"status": 2}))
    assert get_channel(app_server, cid)["status"] == 2
    ok(app_server.client.post(f"/api/channel/{cid}/status", json={"status": 1}))
    assert get_channel(app_server, cid)["status"] == 1
    fail(app_server.client.post(f"/api/channel/{cid}/status", json={"status": 7}), 400)


def test_delete_and_batch_delete(app_server):
    (single,) = create_channel(app_server)
    ok(app_server.client.delete(f"/api/channel/{single}"))
    fail(app_server.client.get(f"/api/channel/{single}"), 404)
    batch = create_channel(app_server, key="a\nb\nc")
    ok(app_server.client.post("/api/channels/batch_delete", json=batch[:2]))
    remaining = {c["id"] for c in all_channels(app_server)}
    assert not set(batch[:2]) & remaining and batch[2] in remaining


def test_invalid_type_is_400_with_clear_message(app_server):
    message = fail(app_server.client.post("/api/channel/", json={"type": 424242, "key": "k"}), 400)
    assert "invalid channel type" in message and "424242" in message
    (cid,) = create_channel(app_server)
    message = fail(app_server.client.put(f"/api/channel/{cid}", json={"type": 424242, "key": "k"}), 400)
    assert "invalid channel type" in message


def test_any_model_name_is_allowed(app_server):
    models = [unique("made-up"), "Qwen/Qwen2.5-7B-Instruct", "模型-中文", "a:b@c v1"]
    (cid,) = create_channel(app_server, models=models)
    assert get_channel(app_server, cid)["models"] == models


# ---- channel tests ----

def test_channel_test_one_model(app_server, upstream):
    model = unique("t1")
    name = unique("tested")
    (cid,) = create_channel(app_server, name=name, base_url=upstream.url("delay-200"), models=[model],
                            model_mapping={f"{model}-alias": model})
    result = ok(app_server.client.get(f"/api/channel/{cid}/test/{model}"))
    assert TEST_RESULT_FIELDS <= set(result)
    assert result["success"] is True and result["code"] == 200 and result["model"] == model
    assert result["actual_model"] == model and 0.2 <= result["took"] < 10, "took is in seconds"
    assert (result["channel_id"], result["channel_name"], result["channel_type"]) == (cid, name, 1)
    assert now_ms() - 60_000 < result["test_at"] <= now_ms()
    mapped = ok(app_server.client.get(f"/api/channel/{cid}/test/{model}-alias"))
    assert mapped["model"] == f"{model}-alias" and mapped["actual_model"] == model


def test_channel_test_failing_upstream(app_server, upstream):
    model = unique("t500")
    (cid,) = create_channel(app_server, base_url=upstream.url("status-500"), models=[model])
    result = ok(app_server.client.get(f"/api/channel/{cid}/test/{model}"))
    assert result["success"] is False and result["code"] == 500
    assert "fake upstream error 500" in result["response"]


def test_channel_test_model_with_slash_in_path(app_server, upstream):
    model = f"Qwen/{unique('Qwen2.5')}-7B"
    (cid,) = create_channel(app_server, base_url=upstream.url(), models=[model])
    result = ok(app_server.client.get(f"/api/channel/{cid}/test/{model}"))
    assert result["model"] == model and result["success"] is True
    assert any(r["json"] and r["json"].get("model") == model for r in upstream.requests())


def test_channel_keeps_the_latest_test_result(app_server, upstream):
    model = unique("stored")
    (cid,) = create_channel(app_server, base_url=upstream.url(), models=[model])
    first = ok(app_server.client.get(f"/api/channel/{cid}/test/{model}"))
    (stored,) = get_channel(app_server, cid)["channel_tests"]
    assert (stored["model"], stored["success"], stored["code"], stored["test_at"]) == (model, True, 200,
                                                                                      first["test_at"])
    ok(app_server.client.put(f"/api/channel/{cid}", json={"type": 1, "key": "k", "models": [model],
                                                          "base_url": upstream.url("status-503")}))
    second = ok(app_server.client.get(f"/api/channel/{cid}/test/{model}"))
    for ch in (get_channel(app_server, cid), next(c for c in all_channels(app_server) if c["id"] == cid)):
        (stored,) = ch["channel_tests"]
        assert (stored["success"], stored["code"], stored["test_at"]) == (False, 503, second["test_at"])


def test_channel_test_unknown_model_or_channel(app_server):
    (cid,) = create_channel(app_server, models=["only-this"])
    assert "does not offer" in fail(app_server.client.get(f"/api/channel/{cid}/test/not-on-channel"), 400)
    fail(app_server.client.get("/api/channel/987654321/test/x"), 404)


def test_channel_test_all_models(app_server, upstream):
    models = sorted(unique("all") for _ in range(3))
    (cid,) = create_channel(app_server, base_url=upstream.url(), models=models)
    results = ok(app_server.client.get(f"/api/channel/{cid}/test"))
    assert all(r["success"] is True for r in results)
    assert sorted(r["data"]["model"] for r in results) == models
    assert all(r["data"]["success"] and r["data"]["channel_id"] == cid for r in results)
    assert sorted(t["model"] for t in get_channel(app_server, cid)["channel_tests"]) == models


def test_channel_test_all_models_as_sse(app_server, upstream):
    models = sorted(unique("sse") for _ in range(3))
    (cid,) = create_channel(app_server, base_url=upstream.url(), models=models)
    with app_server.client.stream("GET", f"/api/channel/{cid}/test", params={"stream": "true"}) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        text = resp.read().decode()
    events = [line[len("data:"):].strip() for line in text.split("\n\n") if line.strip()]
    assert all(not e.startswith("[DONE]") for e in events)
    results = [json.loads(e) for e in events]
    assert len(results) == len(models)
    assert sorted(r["data"]["model"] for r in results) == models
    assert all(r["success"] and r["data"]["success"] for r in results)


# ---- models ----

def enabled_models(app_server: Any) -> set[str]:
    data = ok(app_server.client.get("/api/models/enabled"))
    return {m["model"] for m in data["default"]}


def test_models_enabled_and_model_configs_list_channel_models(app_server, upstream):
    model = unique("listed")
    create_channel(app_server, base_url=upstream.url(), models=[model])
    assert model in enabled_models(app_server)
    configs = ok(app_server.client.get("/api/model_configs/", params={"model": model}))
    assert configs["total"] == 1 and configs["configs"][0]["model"] == model
    assert configs["configs"][0]["enabled"] is True
    assert model in {m["model"] for m in ok(app_server.client.get("/api/model_configs/all"))}
    assert ok(app_server.client.get(f"/api/model_config/{model}"))["model"] == model


def test_model_of_disabled_channel_is_not_enabled(app_server, upstream):
    model = unique("offline")
    (cid,) = create_channel(app_server, base_url=upstream.url(), models=[model])
    ok(app_server.client.post(f"/api/channel/{cid}/status", json={"status": 2}))
    assert model not in enabled_models(app_server)


def test_disabling_a_model_hides_it_from_v1(app_server, upstream):
    model = f"org/{unique('switch')}"
    create_channel(app_server, base_url=upstream.url(), models=[model])
    client = app_server.openai()
    assert model in {m.id for m in client.models.list()}
    ok(app_server.client.post(f"/api/model_config/{model}", json={"enabled": False}))
    try:
        assert model not in {m.id for m in client.models.list()}
        assert model not in enabled_models(app_server)
        with pytest.raises(openai.NotFoundError) as info:
            client.chat.completions.create(model=model, messages=MESSAGES)
        assert info.value.code == "model_not_found"
    finally:
        ok(app_server.client.post(f"/api/model_config/{model}", json={"enabled": True}))
    assert model in {m.id for m in client.models.list()}
    assert client.chat.completions.create(model=model, messages=MESSAGES).model == model


# ---- tokens ----

def test_create_token_returns_sk_key(app_server):
    token = create_token(app_server)
    assert isinstance(token["id"], int)
    assert re.fullmatch(r"sk-[0-9A-Za-z]{48}", token["key"]), token["key"]


def test_create_token_needs_a_name(app_server):
    fail(app_server.client.post("/api/tokens/", json={"name": "  "}), 400)


def test_token_list_status_and_delete(app_server):
    token = create_token(app_server)
    listed = ok(app_server.client.get("/api/tokens/", params={"per_page": 100}))
    assert set(listed) == {"tokens", "total"} and listed["total"] >= 1
    assert token["id"] in {t["id"] for t in listed["tokens"]}
    ok(app_server.client.post(f"/api/tokens/{token['id']}/status", json={"status": 2}))
    assert ok(app_server.client.get(f"/api/tokens/{token['id']}"))["status"] == 2
    ok(app_server.client.delete(f"/api/tokens/{token['id']}"))
    fail(app_server.client.get(f"/api/tokens/{token['id']}"), 404)
    listed = ok(app_server.client.get("/api/tokens/", params={"per_page": 100}))
    assert token["id"] not in {t["id"] for t in listed["tokens"]}


def test_token_authenticates_on_v1(app_server, upstream):
    model = unique("tokmodel")
    create_channel(app_server, base_url=upstream.url(), models=[model])
    token = create_token(app_server)
    client = app_server.openai(api_key=token["key"])
    assert client.chat.completions.create(model=model, messages=MESSAGES).model == model
    bare = app_server.openai(api_key=token["key"][3:])
    assert model in {m.id for m in bare.models.list()}, "the key works without its sk- prefix too"


def test_token_model_allow_list(app_server, upstream):
    allowed, other = unique("allowed"), unique("forbidden")
    create_channel(app_server, base_url=upstream.url(), models=[allowed, other])
    token = create_token(app_server, models=[allowed])
    assert token["models"] == [allowed]
    client = app_server.openai(api_key=token["key"])
    assert client.chat.completions.create(model=allowed, messages=MESSAGES).model == allowed
    with pytest.raises(openai.PermissionDeniedError) as info:
        client.chat.completions.create(model=other, messages=MESSAGES)
    assert info.value.code == "model_not_allowed"
    assert {m.id for m in client.models.list()} == {allowed}


def test_disabled_token_gets_401(app_server, upstream):
    model = unique("distok")
    create_channel(app_server, base_url=upstream.url(), models=[model])
    token = create_token(app_server)
    client = app_server.openai(api_key=token["key"])
    ok(app_server.client.post(f"/api/tokens/{token['id']}/status", json={"status": 2}))
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model=model, messages=MESSAGES)
    ok(app_server.client.post(f"/api/tokens/{token['id']}/status", json={"status": 1}))
    assert client.chat.completions.create(model=model, messages=MESSAGES).model == model


def test_expired_token_gets_401(app_server, upstream):
    model = unique("exptok")
    create_channel(app_server, base_url=upstream.url(), models=[model])
    expired = create_token(app_server, expired_at=now_ms() - 1000)
    with pytest.raises(openai.AuthenticationError) as info:
        app_server.openai(api_key=expired["key"]).chat.completions.create(model=model, messages=MESSAGES)
    assert info.value.code == "token_expired"
    valid = create_token(app_server, expired_at=now_ms() + 3_600_000)
    assert app_server.openai(api_key=valid["key"]).chat.completions.create(model=model, messages=MESSAGES)


def test_deleted_token_gets_401(app_server, upstream):
    model = unique("deltok")
    create_channel(app_server, base_url=upstream.url(), models=[model])
    token = create_token(app_server)
    ok(app_server.client.delete(f"/api/tokens/{token['id']}"))
    with pytest.raises(openai.AuthenticationError):
        app_server.openai(api_key=token["key"]).chat.completions.create(model=model, messages=MESSAGES)


PRICES = {"input_price": 2.0, "output_price": 10.0}  # USD per 1K tokens
CALL_USD = (4 * 2.0 + 3 * 10.0) / 1000  # the fake upstream reports 4 prompt tokens for MESSAGES and 3 completion


def test_model_prices_set_used_amount_of_the_log_row_the_token_and_the_channel(app_server, upstream):
    model, free_model = unique("priced"), unique("free")
    (cid,) = create_channel(app_server, base_url=upstream.url(), models=[model, free_model])
    ok(app_server.client.post(f"/api/model_config/{model}", json=PRICES))
    token = create_token(app_server)
    client = app_server.openai(api_key=token["key"])
    for _ in range(2):
        usage = client.chat.completions.create(model=model, messages=MESSAGES).usage
        assert (usage.prompt_tokens, usage.completion_tokens) == (4, 3)
    client.chat.completions.create(model=free_model, messages=MESSAGES)
    rows = wait_logs(app_server, total=2, model_name=model)
    assert [r["used_amount"] for r in rows] == pytest.approx([CALL_USD, CALL_USD])
    # no price anywhere (no config, not in the model snapshot): the cost is unknown, not 0 (issue 17)
    assert wait_logs(app_server, total=1, model_name=free_model)[0]["used_amount"] is None
    assert ok(app_server.client.get(f"/api/tokens/{token['id']}"))["used_amount"] == pytest.approx(2 * CALL_USD)
    assert get_channel(app_server, cid)["used_amount"] == pytest.approx(2 * CALL_USD)
    points = ok(app_server.client.get("/api/dashboardv2/", params={"model": model, "timespan": "day"}))
    assert sum(i["used_amount"] for p in points for i in p["summary"]) == pytest.approx(2 * CALL_USD)


def test_token_over_its_quota_gets_401_insufficient_quota(app_server, upstream):
    model = unique("quota")
    create_channel(app_server, base_url=upstream.url(), models=[model])
    ok(app_server.client.post(f"/api/model_config/{model}", json=PRICES))
    token = create_token(app_server, quota=1.5 * CALL_USD)
    client = app_server.openai(api_key=token["key"])
    client.chat.completions.create(model=model, messages=MESSAGES)
    client.chat.completions.create(model=model, messages=MESSAGES)  # starts under the quota, ends over it
    with pytest.raises(openai.AuthenticationError) as info:
        client.chat.completions.create(model=model, messages=MESSAGES)
    assert info.value.status_code == 401 and info.value.code == "insufficient_quota"
    assert len(wait_logs(app_server, total=2, model_name=model)) == 2, "a refused call reaches no channel"
    ok(app_server.client.put(f"/api/tokens/{token['id']}", json={"quota": 1.0}))
    assert client.chat.completions.create(model=model, messages=MESSAGES).model == model


# ---- logs ----

class Traffic:
    """Calls made once for the log and dashboard tests: `ok_calls` succeed on `ok_channel` (the last two with
    `token`), then one call pinned to `error_channel` fails with 400. `request_ids` is in call order."""

    def __init__(self, app_server: Any, upstream: Any) -> None:
        self.model = unique("traffic")
        (self.ok_channel,) = create_channel(app_server, base_url=upstream.url(), models=[self.model], priority=10)
        (self.error_channel,) = create_channel(app_server, base_url=upstream.url("status-400"), models=[self.model])
        self.token = create_token(app_server)
        self.started_ms = now_ms()
        self.request_ids: list[str] = []
        for i in range(6):
            resp = chat(app_server, self.model, key=self.token["key"] if i >= 4 else None)
            assert resp.status_code == 200, resp.text
            self.request_ids.append(resp.headers["x-request-id"])
        resp = chat(app_server, self.model, channel=self.error_channel)
        assert resp.status_code == 400, resp.text
        self.request_ids.append(resp.headers["x-request-id"])
        self.rows = wait_logs(app_server, total=7, model_name=self.model)

    @property
    def total(self) -> int:
        return len(self.request_ids)


@pytest.fixture(scope="module")
def traffic(app_server, upstream) -> Traffic:
    return Traffic(app_server, upstream)


@pytest.mark.parametrize("path", ["/api/logs/", "/api/logs/search"])
@pytest.mark.parametrize("page_param", ["page", "p"])
def test_log_pages_are_newest_first_exact_and_disjoint(app_server, traffic, path, page_param):
    pages = [logs(app_server, path, model_name=traffic.model, per_page=3, **{page_param: n}) for n in (1, 2, 3, 4)]
    assert [len(p["logs"]) for p in pages] == [3, 3, 1, 0]
    assert all(p["total"] == traffic.total for p in pages)
    rows = [row for p in pages for row in p["logs"]]
    assert len({r["id"] for r in rows}) == traffic.total
    assert [r["request_id"] for r in rows] == traffic.request_ids[::-1], "newest first"


def test_log_rows_carry_fastgpt_fields(traffic):
    for row in traffic.rows:
        assert LOG_FIELDS <= set(row), LOG_FIELDS - set(row)
        assert USAGE_FIELDS <= set(row["usage"])
        assert row["prompt_tokens"] == row["usage"]["input_tokens"]
        assert row["completion_tokens"] == row["usage"]["output_tokens"]
        assert row["model"] == traffic.model and row["endpoint"] == "/v1/chat/completions"
        assert traffic.started_ms <= row["request_at"] <= row["created_at"] <= now_ms()
        assert row["ip"] == "127.0.0.1"
    ok_row = next(r for r in traffic.rows if r["code"] == 200)
    assert ok_row["usage"]["input_tokens"] > 0 and ok_row["usage"]["output_tokens"] == 3
    assert ok_row["usage"]["total_tokens"] == ok_row["usage"]["input_tokens"] + 3 and ok_row["content"] == ""
    error_row = next(r for r in traffic.rows if r["code"] != 200)
    assert error_row["code"] == 400 and "fake upstream error 400" in error_row["content"]


def test_channel_counters_follow_calls(app_server, traffic):
    assert get_channel(app_server, traffic.ok_channel)["request_count"] == 6
    assert get_channel(app_server, traffic.error_channel)["request_count"] == 1
    token = ok(app_server.client.get(f"/api/tokens/{traffic.token['id']}"))
    assert token["request_count"] == 2


def test_x_request_id_is_the_log_request_id(traffic):
    assert sorted(r["request_id"] for r in traffic.rows) == sorted(traffic.request_ids)


@pytest.mark.parametrize("path", ["/api/logs/", "/api/logs/search"])
def test_log_filters(app_server, traffic, path):
    def count(**params: Any) -> int:
        data = logs(app_server, path, per_page=100, **params)
        assert data["total"] == len(data["logs"])
        return data["total"]

    m = traffic.model
    assert count(model_name=m) == 7
    assert count(model_name=m, channel=traffic.ok_channel) == 6
    assert count(channel=traffic.error_channel) == 1
    assert count(model_name=m, token_name=traffic.token["name"]) == 2
    assert count(token_name=traffic.token["name"]) == 2
    assert count(request_id=traffic.request_ids[0]) == 1
    assert count(model_name=m, code_type="all") == 7
    assert count(model_name=m, code_type="success") == 6
    assert count(model_name=m, code_type="error") == 1
    assert count(keyword=m) == 7
    assert count(keyword=traffic.request_ids[2]) == 1
    assert count(keyword=traffic.token["name"]) == 2
    assert count(model_name=unique("nothing")) == 0
    fail(app_server.client.get(path, params={"code_type": "bogus"}), 400)


def test_log_time_range_in_seconds_and_ms(app_server, traffic):
    first = min(r["created_at"] for r in traffic.rows)
    last = max(r["created_at"] for r in traffic.rows)

    def count(start: int | str, end: int | str) -> int:
        return logs(app_server, model_name=traffic.model, start_timestamp=start, end_timestamp=end)["total"]

    assert count(first, last) == 7, "ms, 13 digits"
    assert count(first // 1000, last // 1000 + 1) == 7, "seconds, 10 digits"
    assert count(first * 1000, last * 1000) == 7, "µs, 16 digits"
    assert count(last + 1, last + 10_000) == 0
    assert count(first - 10_000, first - 1) == 0
    assert count(first // 1000 - 100, first // 1000 - 1) == 0
    assert count("", "") == 7
    fail(app_server.client.get("/api/logs/", params={"start_timestamp": "yesterday"}), 400)


def test_fastgpt_log_search_query(app_server, traffic):
    """The exact query FastGPT's log tab sends (M7), with its empty request_id and ignored result_only."""
    day = 86_400_000
    params = {"result_only": "true", "request_id": "", "channel": traffic.ok_channel, "model_name": traffic.model,
              "code_type": "all", "start_timestamp": traffic.started_ms - day, "end_timestamp": now_ms() + day,
              "p": 1, "per_page": 20}
    data = logs(app_server, "/api/logs/search", **params)
    assert data["total"] == 6 and len(data["logs"]) == 6
    assert [r["request_id"] for r in data["logs"]] == traffic.request_ids[:6][::-1]


def test_empty_log_filters_mean_no_filter(app_server, traffic):
    everything = logs(app_server, per_page=1)["total"]
    empty = {"request_id": "", "model_name": "", "channel": "", "token_name": "", "code_type": "",
             "keyword": "", "start_timestamp": "", "end_timestamp": ""}
    for path in ("/api/logs/", "/api/logs/search"):
        assert logs(app_server, path, per_page=1, **empty)["total"] == everything
    assert everything >= traffic.total


def test_log_per_page_default_and_cap(app_server, traffic):
    assert len(logs(app_server)["logs"]) == min(10, logs(app_server)["total"])
    many = logs(app_server, per_page=1000)
    assert len(many["logs"]) == min(100, many["total"])


def test_failed_call_detail_has_bodies(app_server, traffic):
    error_row = next(r for r in traffic.rows if r["code"] != 200)
    detail = ok(app_server.client.get(f"/api/logs/detail/{error_row['id']}"))
    assert json.loads(detail["request_body"])["model"] == traffic.model
    assert "fake upstream error 400" in detail["response_body"]
    assert detail["request_body_truncated"] is False
    fail(app_server.client.get("/api/logs/detail/987654321"), 404)


def test_big_failed_request_body_is_cut_at_8_kib(app_server, upstream):
    model = unique("bigbody")
    create_channel(app_server, base_url=upstream.url("status-500"), models=[model])
    resp = chat(app_server, model, messages=[{"role": "user", "content": "x" * 20_000}])
    assert resp.status_code == 500
    (row,) = wait_logs(app_server, total=1, model_name=model)
    assert row["code"] == 500 and row["request_id"] == resp.headers["x-request-id"]
    detail = ok(app_server.client.get(f"/api/logs/detail/{row['id']}"))
    assert detail["request_body_truncated"] is True
    assert len(detail["request_body"].encode()) == 8 * 1024
    assert "fake upstream error 500" in detail["response_body"]


def test_delete_logs_before_timestamp(start_app, upstream):
    app = start_app(args=["--no-ui"])
    model = unique("purge")
    create_channel(app, base_url=upstream.url("status-500"), models=[model])
    assert chat(app, model).status_code == 500
    (old,) = wait_logs(app, total=1, model_name=model)
    cutoff = old["created_at"] + 1
    time.sleep(0.01)
    assert chat(app, model).status_code == 500
    wait_logs(app, total=2, model_name=model)
    assert ok(app.client.delete("/api/logs/", params={"timestamp": cutoff})) == 1
    (kept,) = wait_logs(app, total=1, model_name=model)
    assert kept["created_at"] >= cutoff
    fail(app.client.get(f"/api/logs/detail/{old['id']}"), 404)
    assert ok(app.client.get(f"/api/logs/detail/{kept['id']}"))["request_body"]
    fail(app.client.delete("/api/logs/"), 400)


def test_csv_export_is_spreadsheet_safe_with_local_times_and_channel_names(app_server, upstream):
    """OWASP's CSV-injection rule, times in the `timezone` asked for, and a deleted channel's name kept."""
    u = uuid.uuid4().hex[:8]
    models = [f"={u}", f"+{u}", f"-{u}", f"@{u}"]
    name = f"=HYPERLINK(\"http://evil.example\",\"{u}\")"
    (cid,) = create_channel(app_server, name=name, base_url=upstream.url(), models=models)
    for model in models:
        assert chat(app_server, model).status_code == 200
    rows = {r["model"]: r for r in wait_logs(app_server, total=4, channel=cid)}
    ok(app_server.client.delete(f"/api/channel/{cid}"))
    resp = app_server.client.get("/api/logs/export", params={"channel": cid, "timezone": "Asia/Shanghai"})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/csv")
    header, *lines = list(csv.reader(io.StringIO(resp.text)))
    assert header[:4] == ["id", "request_id", "request_at (Asia/Shanghai)", "created_at (Asia/Shanghai)"]
    shanghai = ZoneInfo("Asia/Shanghai")
    assert len(lines) == 4
    for line in lines:
        cells = dict(zip(header, line))
        model = cells["model"].removeprefix("'")
        assert cells["model"] == "'" + model and model in rows
        assert (cells["channel"], cells["channel_id"]) == ("'" + name, str(cid))
        created = datetime.fromtimestamp(rows[model]["created_at"] / 1000, shanghai)
        assert cells["created_at (Asia/Shanghai)"] == created.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    fail(app_server.client.get("/api/logs/export", params={"timezone": "Mars/Olympus_Mons"}), 400)


def write_logs(dsn: str, rows: list[dict[str, Any]]) -> None:
    """Rows as the app's log writer writes them (with their summaries), straight into the app's database."""
    engine = app.make_engine(dsn)
    try:
        assert app.LogWriter(engine).write_batch([app.LogEntry({**app.LOG_DEFAULTS, **r}, None, 0) for r in rows]) == []
    finally:
        engine.dispose()


def test_csv_export_streams_every_row_and_says_when_max_entries_stops_it(app_server, upstream):
    """Keyset pages of EXPORT_PAGE_ROWS, newest id first, each row once, no silent cap; the first bytes leave
    before the last page is read, and the relay answers while the export is open."""
    model, now = unique("export"), now_ms()
    count = 2 * app.EXPORT_PAGE_ROWS + 37
    write_logs(app_server.dsn, [{"request_id": f"{model}-{i}", "request_at": now - 60_000 + i,
                                 "created_at": now - 60_000 + i, "model": model, "code": 200} for i in range(count)])
    (cid,) = create_channel(app_server, base_url=upstream.url(), models=[model])
    params = {"model_name": model, "start_timestamp": now - 3_600_000, "end_timestamp": now}
    with app_server.client.stream("GET", "/api/logs/export", params=params) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/csv")
        chunks = resp.iter_bytes()
        first = next(chunks)
        assert first.startswith(b"id,request_id")
        assert chat(app_server, model).status_code == 200  # while the export is open
        text = (first + b"".join(chunks)).decode()
    header, *lines = list(csv.reader(io.StringIO(text)))
    ids = [int(line[0]) for line in lines]
    assert len(lines) == count and ids == sorted(set(ids), reverse=True), "every row, once, newest id first"
    assert {line[1] for line in lines} == {f"{model}-{i}" for i in range(count)}
    capped = app_server.client.get("/api/logs/export", params={**params, "max_entries": 1000})
    *rows, last = list(csv.reader(io.StringIO(capped.text)))[1:]
    assert len(rows) == 1000 and last[0].startswith("# stopped at max_entries=1000: more rows match")
    exact = app_server.client.get("/api/logs/export", params={**params, "max_entries": count})
    assert len(list(csv.reader(io.StringIO(exact.text)))) == count + 1, "exactly the cap: nothing to say"
    del cid


def test_admin_queries_wait_in_threads_while_the_relay_answers(app_server, upstream, backend):
    """The dashboard's and the log search's queries run off the event loop: while they wait for a table lock
    another session holds, relay calls are answered."""
    if backend == "sqlite":
        pytest.skip("SQLite readers never wait (WAL); a server database can hold them on a lock")
    model = unique("busy")
    create_channel(app_server, base_url=upstream.url(), models=[model])
    engine = sa.create_engine(app.with_default_driver(app_server.dsn), poolclass=sa.pool.NullPool)
    postgres = engine.dialect.name == "postgresql"
    waiting = ("SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'" if postgres else
               "SELECT COUNT(*) FROM information_schema.processlist WHERE state LIKE 'Waiting for table%'")
    span = {"start_timestamp": now_ms() - 30 * 86_400_000, "end_timestamp": now_ms()}
    with engine.connect() as holder, engine.connect() as watcher, \
            concurrent.futures.ThreadPoolExecutor(2) as pool:
        holder.begin()
        holder.exec_driver_sql("LOCK TABLE summary_hours, logs IN ACCESS EXCLUSIVE MODE" if postgres else
                               "LOCK TABLES summary_hours WRITE, logs WRITE")
        try:
            dashboard = pool.submit(app_server.client.get, "/api/dashboardv2/", params={**span, "timespan": "day"})
            search = pool.submit(app_server.client.get, "/api/logs/search", params={**span, "channel": 1})
            deadline = time.monotonic() + 30
            while watcher.execute(sa.text(waiting)).scalar_one() < 2:  # both queries wait on the lock
                assert time.monotonic() < deadline and not dashboard.done() and not search.done()
            for _ in range(3):
                assert chat(app_server, model).status_code == 200
            assert not dashboard.done() and not search.done()
        finally:
            if not postgres:
                holder.exec_driver_sql("UNLOCK TABLES")
            holder.rollback()
        assert isinstance(ok(dashboard.result(timeout=60)), list) and "total" in ok(search.result(timeout=60))
    engine.dispose()


def test_csv_cell_escaping():
    assert [app.csv_cell(v) for v in ("=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "gpt-4o", "", 5, -5)] == [
        "'=1+1", "'+1", "'-1", "'@SUM(A1)", "'\tx", "'\rx", "gpt-4o", "", 5, -5]


@pytest.mark.parametrize("zone", ["UTC", "America/New_York", "Asia/Kathmandu", "Asia/Shanghai", "Australia/Lord_Howe"])
def test_export_times_are_each_times_own_local_time(zone):
    """The export formats each minute once: across daylight saving (New York, Lord Howe's half hour), a +5:45 zone,
    an offset with seconds (Shanghai's LMT before 1901), negative and out-of-range times, it says what the
    one-at-a-time formatting says."""
    tz, many = ZoneInfo(zone), app.local_times(ZoneInfo(zone))
    spring, autumn = 1_773_550_800_000, 1_793_512_800_000  # 2026-03-15 05:00 and 2026-11-01 06:00 UTC, near changes
    times = [t + step for t in (spring, autumn, 1_775_318_400_000, 1_791_000_000_000)
             for step in range(-7_200_000, 7_200_001, 59_999)]
    times += [-2_300_000_000_000 + i * 61_001 for i in range(200)]  # 1897: local mean time, offsets with seconds
    times += [-1, -60_001, 0, 59_999, 10**17, -(10**17)]
    assert [many(t) for t in times] == [app._local_time(t, tz) for t in times]


# ---- dashboard ----

def dashboard(app_server: Any, **params: Any) -> list[dict[str, Any]]:
    return ok(app_server.client.get("/api/dashboardv2/", params=params))


def window(traffic: Traffic) -> dict[str, int]:
    return {"start_timestamp": traffic.started_ms - 2 * 86_400_000, "end_timestamp": now_ms() + 60_000}


def summed(points: list[dict[str, Any]], field: str, channel: int | None = None) -> int:
    return sum(item[field] for p in points for item in p["summary"] if channel in (None, item["channel_id"]))


@pytest.mark.parametrize("timespan, timezone, period, offset", [
    ("minute", "UTC", 60, 0),
    ("hour", "UTC", 3600, 0),
    ("hour", "Asia/Kolkata", 3600, 1800),
    ("day", "UTC", 86400, 0),
    ("day", "Asia/Shanghai", 86400, 57600),
])
def test_dashboard_buckets_are_aligned_and_counts_match(app_server, traffic, timespan, timezone, period, offset):
    points = dashboard(app_server, model=traffic.model, timespan=timespan, timezone=timezone, **window(traffic))
    assert points and [p["timestamp"] for p in points] == sorted({p["timestamp"] for p in points})
    for point in points:
        assert len(str(point["timestamp"])) == 10, "bucket timestamps are Unix seconds"
        assert point["timestamp"] % period == offset, (timespan, timezone, point["timestamp"])
        for item in point["summary"]:
            assert SUMMARY_FIELDS <= set(item) and item["model"] == traffic.model
    assert summed(points, "request_count") == traffic.total
    assert summed(points, "exception_count") == 1
    assert summed(points, "request_count", traffic.ok_channel) == 6
    assert summed(points, "exception_count", traffic.error_channel) == 1
    for field in ("input_tokens", "output_tokens", "total_tokens"):
        assert summed(points, field) == sum(r["usage"][field] for r in traffic.rows), field
    total_ms = summed(points, "total_time_milliseconds")
    assert total_ms == sum(r["created_at"] - r["request_at"] for r in traffic.rows)
    assert summed(points, "total_ttfb_milliseconds") == sum(r["ttfb_milliseconds"] for r in traffic.rows) <= total_ms


def test_dashboard_filters_and_time_units(app_server, traffic):
    span = window(traffic)
    by_channel = dashboard(app_server, model=traffic.model, channel=traffic.ok_channel, timespan="hour", **span)
    assert {item["channel_id"] for p in by_channel for item in p["summary"]} == {traffic.ok_channel}
    in_seconds = dashboard(app_server, model=traffic.model, timespan="hour",
                           start_timestamp=span["start_timestamp"] // 1000, end_timestamp=span["end_timestamp"] // 1000)
    assert summed(in_seconds, "request_count") == traffic.total
    before = dashboard(app_server, model=traffic.model, start_timestamp=traffic.started_ms - 3_600_000,
                       end_timestamp=traffic.started_ms - 120_000)
    assert before == []
    assert dashboard(app_server, model=unique("silent"), **span) == []
    point = next(p for p in dashboard(app_server, model=traffic.model, timespan="day", **span))
    item = next(i for i in point["summary"] if i["channel_id"] == traffic.ok_channel)
    assert 1 <= item["max_rpm"] <= 6 and item["max_tpm"] > 0


def test_dashboard_without_filters_and_with_empty_model(app_server, traffic):
    points = dashboard(app_server, model="", timezone="Asia/Shanghai", timespan="hour", **window(traffic))
    assert summed(points, "request_count", traffic.error_channel) == 1
    assert all(isinstance(p["summary"], list) for p in points)


@pytest.mark.parametrize("params", [{"timezone": "Mars/Olympus_Mons"}, {"timespan": "fortnight"},
                                    {"start_timestamp": "soon"}, {"channel": "first"}])
def test_dashboard_bad_parameters_are_400(app_server, params):
    fail(app_server.client.get("/api/dashboardv2/", params=params), 400)


# ---- options ----

def test_options_get_and_put_retry_times(app_server):
    options = ok(app_server.client.get("/api/option/"))
    original = options["retry_times"]
    try:
        ok(app_server.client.put("/api/option/", json={"key": "retry_times", "value": 2}))
        assert ok(app_server.client.get("/api/option/"))["retry_times"] == 2
        ok(app_server.client.put("/api/option/", json={"key": "retry_times", "value": "1"}))
        assert ok(app_server.client.get("/api/option"))["retry_times"] == 1
    finally:
        ok(app_server.client.put("/api/option/", json={"key": "retry_times", "value": original}))
    assert ok(app_server.client.get("/api/option/"))["retry_times"] == original


def test_options_reject_unknown_key_and_bad_value(app_server):
    fail(app_server.client.put("/api/option/", json={"key": "no_such_option", "value": 1}), 400)
    fail(app_server.client.put("/api/option/", json={"key": "retry_times", "value": "many"}), 400)
    fail(app_server.client.put("/api/option/", json={"key": "retry_times", "value": -1}), 400)


@pytest.mark.parametrize("key, value", [
    ("retry_times", 2**64), ("retry_times", 11), ("retry_times", "inf"), ("retry_times", 2.5), ("retry_times", True),
    ("retry_times", None), ("retry_times", [1]), ("log_retention_days", 1e17), ("log_retention_days", 3651),
    ("log_retention_days", "1e400"),
])
def test_out_of_bounds_options_are_refused_and_not_saved(app_server, key, value):
    before = ok(app_server.client.get("/api/option/"))
    assert "from 0 to" in fail(app_server.client.put("/api/option/", json={"key": key, "value": value}), 400)
    assert ok(app_server.client.get("/api/option/")) == before


def test_option_bounds_are_inclusive(app_server):
    before = ok(app_server.client.get("/api/option/"))
    try:
        for key, value in (("retry_times", 10), ("retry_times", 0), ("log_retention_days", 3650)):
            ok(app_server.client.put("/api/option/", json={"key": key, "value": value}))
            assert ok(app_server.client.get("/api/option/"))[key] == value
    finally:
        for key, value in before.items():
            ok(app_server.client.put("/api/option/", json={"key": key, "value": value}))


def test_an_out_of_bounds_option_stored_by_an_older_version_falls_back_to_the_default(start_app, upstream):
    first = start_app(args=["--no-ui"], env={"SQL_DSN": None})
    first.stop()
    with sqlite3.connect(first.data_dir / "aiproxy.db") as conn:
        conn.executemany("INSERT INTO options (key, value) VALUES (?, ?)",
                         [("retry_times", str(2**64)), ("log_retention_days", "1e+17")])
    again = start_app(args=["--no-ui"], env={"SQL_DSN": None})
    assert ok(again.client.get("/api/option/")).items() >= {"retry_times": 3, "log_retention_days": 30}.items()
    log = again.output_tail()
    assert "ignoring the stored option retry_times" in log and "ignoring the stored option log_retention_days" in log
    model = unique("afterbad")
    create_channel(again, base_url=upstream.url(), models=[model])
    assert chat(again, model).status_code == 200
    ok(again.client.put("/api/option/", json={"key": "retry_times", "value": 2}))
    assert ok(again.client.get("/api/option/"))["retry_times"] == 2


# ---- admin key ----

def test_rotating_the_admin_key(start_app, upstream):
    app_ = start_app(admin_key=None, args=["--no-ui"])
    old = app_.admin_key
    data = ok(app_.client.post("/api/admin_key/rotate"))
    new = data["key"]
    assert re.fullmatch(r"[0-9A-Za-z]{48}", new) and new != old and data["kept_after_restart"] is True
    key_file = app_.data_dir / "admin_key"
    assert key_file.read_text().strip() == new and key_file.stat().st_mode & 0o777 == 0o600
    fail(app_.client.get("/api/channels/all"), 401)  # this client still sends the old key
    assert isinstance(ok(httpx.get(f"{app_.url}/api/channels/all", headers={"Authorization": f"Bearer {new}"})), list)
    with pytest.raises(openai.AuthenticationError):
        app_.openai(api_key=old).models.list()
    app_.openai(api_key=new).models.list()
    app_.stop()
    assert start_app(admin_key=None, args=["--no-ui"]).admin_key == new, "the new key survives a restart"


def test_rotating_a_key_from_the_environment_lasts_until_restart(start_app):
    app_ = start_app(admin_key="fixed-admin-key-from-env", args=["--no-ui"])
    data = ok(app_.client.post("/api/admin_key/rotate"))
    assert data["kept_after_restart"] is False
    assert isinstance(ok(httpx.get(f"{app_.url}/api/channels/all",
                                   headers={"Authorization": f"Bearer {data['key']}"})), list)
    app_.stop()
    again = start_app(admin_key="fixed-admin-key-from-env", args=["--no-ui"])
    assert isinstance(ok(again.client.get("/api/channels/all")), list), "ADMIN_KEY wins again"


# ---- FastGPT's newer client (main after 4.14): it edits channels itself (fastgpt-client.md §8) ----

#: what FastGPT's full PUT /api/channel/{id} carries besides models (thirdProvider/aiproxy/channel.ts)
FASTGPT_PUT_FIELDS = ("type", "name", "base_url", "proxy_url", "model_mapping", "configs", "key", "status", "priority",
                      "sets", "enabled_auto_balance_check", "skip_tls_verify", "enabled_no_permission_ban",
                      "warn_error_rate", "max_error_rate")
#: the fields a PUT must keep as they came: the six FastGPT 4.14+ sends that aiproxy v0.6.5 has
FASTGPT_ROUND_TRIP = {"proxy_url": "http://127.0.0.1:9/", "skip_tls_verify": True, "enabled_auto_balance_check": True,
                      "enabled_no_permission_ban": True, "warn_error_rate": 0.3, "max_error_rate": 0.6}


def check_aiproxy_channel_schema(body: dict) -> list[dict]:
    """FastGPT's AIProxyChannelSchema (zod, .passthrough()) on GET /api/channels/all: one null in a
    non-nullable field makes every model save in FastGPT fail."""
    assert body["success"] is True and isinstance(body["data"], list), body
    for ch in body["data"]:
        assert isinstance(ch["id"], int) and ch["id"] > 0 and isinstance(ch["type"], int), ch
        assert isinstance(ch["name"], str) and isinstance(ch["status"], int), ch
        assert isinstance(ch["models"], list) and all(isinstance(m, str) for m in ch["models"]), ch
        assert isinstance(ch["priority"], (int, float)), ch
        for name in ("base_url", "key"):  # a string or absent, never null
            assert name not in ch or isinstance(ch[name], str), (name, ch)
        for name in ("enabled_auto_balance_check", "skip_tls_verify", "enabled_no_permission_ban"):
            assert isinstance(ch[name], bool), (name, ch)
        for name in ("warn_error_rate", "max_error_rate", "balance_threshold", "created_at"):
            assert isinstance(ch[name], (int, float)) and not isinstance(ch[name], bool), (name, ch)
        assert ch["balance_threshold"] == 0, "FastGPT refuses to write a channel whose balance_threshold is not 0"
        for name in ("proxy_url", "model_mapping", "configs", "sets"):
            assert name in ch, (name, ch)
    return body["data"]


def fastgpt_put(app_server, channel: dict, models: list[str]) -> None:
    body = app_server.api("PUT", f"/api/channel/{channel['id']}",
                          json={**{k: channel.get(k) for k in FASTGPT_PUT_FIELDS}, "models": models})
    assert body.get("success") is True, body  # FastGPT checks it with z.literal(true)


def sync_model_in_channels(app_server, old: str | None, new: str | None, channel_ids: set[int]) -> None:
    """FastGPT's syncModelInAIProxyChannels: read every channel, then a full PUT of each one whose models change
    (rename old → new where old is; add new to the chosen channels; remove old when new is None)."""
    for ch in check_aiproxy_channel_schema(app_server.api("GET", "/api/channels/all")):
        models = list(ch["models"])
        if old in models:
            models = [new if m == old else m for m in models] if new else [m for m in models if m != old]
        elif new and ch["id"] in channel_ids and new not in models:
            models.append(new)
        if models != ch["models"]:
            fastgpt_put(app_server, ch, list(dict.fromkeys(models)))


def test_fastgpt_sync_model_in_channels_round_trips_every_field(app_server, upstream):
    # proxy_url and skip_tls_verify are stored once the channel has them (the proxy work makes them real)
    round_trip = {k: v for k, v in FASTGPT_ROUND_TRIP.items() if k in app.Channel.model_fields}
    assert len(round_trip) >= 4
    a, b, c = unique("fg-a"), unique("fg-b"), unique("fg-c")
    first = app_server.add_channel(base_url=upstream.url("ok"), models=[a, b])
    second = app_server.add_channel(base_url=upstream.url("ok"), models=[a])
    for channel_id in (first, second):
        stored = app_server.api("GET", f"/api/channel/{channel_id}")["data"]
        fastgpt_put(app_server, {**stored, **round_trip}, stored["models"])
    sync_model_in_channels(app_server, a, f"{a}-renamed", set())  # rename, on both channels
    sync_model_in_channels(app_server, None, c, {first})  # append to the chosen channel
    sync_model_in_channels(app_server, b, None, set())  # remove
    channels = {ch["id"]: ch for ch in check_aiproxy_channel_schema(app_server.api("GET", "/api/channels/all"))}
    assert channels[first]["models"] == [f"{a}-renamed", c] and channels[second]["models"] == [f"{a}-renamed"]
    for channel_id in (first, second):
        kept = {k: channels[channel_id][k] for k in round_trip}
        assert kept == round_trip, kept
        assert channels[channel_id]["key"] == "sk-fake"


def test_fastgpt_branch_client_search_and_batch_delete(app_server):
    name = unique("fg-search")
    ids = [app_server.add_channel(name=f"{name}-{i}", models=[unique()]) for i in range(3)]
    found = app_server.api("GET", "/api/channels/", params={"search": name, "page": 1, "per_page": 100})["data"]
    assert found["total"] == 3 and {ch["id"] for ch in found["channels"]} == set(ids)
    assert app_server.api("POST", "/api/channels/batch_delete", json={"ids": ids[:2]})["success"] is True
    assert app_server.api("POST", "/api/channels/batch_delete", json=ids[2:])["success"] is True
    assert app_server.api("GET", "/api/channels/", params={"search": name})["data"]["total"] == 0


def test_fastgpt_no_channel_answers_are_404_with_its_phrase(app_server, upstream):
    """FastGPT shows 当前模型暂无可用渠道 only for a 404 matching its pattern (error.ts): an unknown model and a
    model whose channels are all disabled, on the relay."""
    phrase = re.compile(r"no available channel|无可用渠道|channel not found|channel_not_found", re.I)
    disabled = unique("fg-off")
    app_server.add_channel(base_url=upstream.url("ok"), models=[disabled], status=2)
    for model in (unique("fg-none"), disabled):
        response = httpx.post(f"{app_server.url}/v1/chat/completions", json={"model": model, "messages": MESSAGES},
                              headers=app_server.headers)
        assert response.status_code == 404 and phrase.search(response.json()["error"]["message"]), response.text
