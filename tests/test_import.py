"""Import: OneAPI, new-api and labring/aiproxy (`POST /api/channels/import/oneapi` and
`/import/aiproxy`).

Pure tests call the row-mapping functions directly (type tables, base URLs, credentials, models, status, tokens,
aiproxy's JSON columns, priorities and prices, DSN parsing, config.yaml). End-to-end tests build a one-api and a
new-api schema from their documented DDL in a real MariaDB (127.0.0.1:3306, root, no password), a one-api SQLite
file, a one-api and an aiproxy PostgreSQL database (aiproxy's from its GORM models, tests/aiproxy_sources.py) and
aiproxy's config.yaml (tests/fixtures/), import them into the shared app process, check every field, and call a
migrated channel with a migrated token through the official `openai` SDK. Without MariaDB/PostgreSQL those tests
skip, unless CI is set: then they fail.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pymysql
import pytest

import aiproxy_local as app
from conftest import AppServer, free_port
from fake_upstream import reply_text
from aiproxy_sources import AIPROXY_OLD_TOKEN_EXPIRY, AIPROXY_POSTGRES_DDL
from oneapi_sources import ONEAPI_SQLITE_DDL

SOURCE_PASSWORD = "Zq9-secret_pw!"  # must never show up in an answer or the app's log
ADC = {"type": "service_account", "project_id": "proj-1", "private_key": "-----BEGIN KEY-----\\nabc\\n-----END KEY-----"}
MESSAGES = [{"role": "user", "content": "hello from a migrated key"}]
RUN = os.getpid()
AIPROXY_YAML = Path(__file__).parent / "fixtures" / "aiproxy-config.yaml"


# ---- pure mapping: type tables ----

ONEAPI_EXPECTED = {
    0: None, 1: 1, 2: 1, 3: 3, 4: 1, 5: 1, 6: 1, 7: 1, 8: 1, 9: 1, 10: 1, 11: 1, 12: 1, 13: 1, 14: 14, 15: 15,
    16: 16, 17: 17, 18: 18, 19: 19, 20: 20, 21: 1, 22: 1, 23: 23, 24: 24, 25: 25, 26: 26, 27: 27, 28: 28, 29: 29,
    30: 30, 31: 31, 32: 32, 33: 33, 34: 34, 35: 35, 36: 36, 37: 37, 38: None, 39: 1, 40: 40, 41: 41, 42: 42,
    43: None, 44: 43, 45: 45, 46: 1, 47: 49, 48: 18, 49: 17, 50: 1, 51: 12,
}
NEWAPI_EXPECTED = {
    0: None, 1: 1, 2: None, 3: 3, 4: 30, 5: None, 6: 1, 7: 1, 8: 1, 9: 1, 10: 1, 11: 1, 12: 1, 13: 1, 14: 14,
    15: 15, 16: 16, 17: 17, 18: 18, 19: 19, 20: 20, 21: 1, 22: 1, 23: 23, 24: 24, 25: 25, 26: 16, 27: 1, 31: 31,
    33: 33, 34: 35, 35: 27, 36: None, 37: None, 38: 47, 39: 37, 40: 43, 41: 42, 42: 28, 43: 36, 44: None, 45: 40,
    46: 49, 47: 1, 48: 45, 49: 34, 50: None, 51: None, 52: None, 53: 1, 54: None, 55: None, 56: 1, 57: None,
    58: None,
}


@pytest.fixture(scope="module")
def catalog() -> dict[int, Any]:
    return app.load_catalog()


@pytest.fixture(scope="module")
def types() -> dict[str, Any]:
    return app.load_oneapi_types()


def channel_row(type_: int, **kw: Any) -> dict[str, Any]:
    """A source row with every credential a type could need, so only the mapping decides."""
    row = {"id": 7, "type": type_, "name": "row", "key": "sk-k", "status": 1, "models": "m1", "model_mapping": "",
           "priority": 0, "weight": 0, "base_url": "https://up.example.com",
           "config": json.dumps({"region": "us-east-1", "ak": "AK", "sk": "SK", "user_id": "acct",
                                 "vertex_ai_adc": json.dumps(ADC)}), "other": ""}
    return row | kw


def one(row: dict[str, Any], catalog: dict[int, Any], types: dict[str, Any], flavour: str = "oneapi") -> Any:
    return app.map_oneapi_channel(row, flavour, types, catalog)


def test_type_tables_cover_every_source_type(types: dict[str, Any]) -> None:
    assert {int(k) for k in types["oneapi"]} == set(ONEAPI_EXPECTED)
    assert {int(k) for k in types["newapi"]} == set(NEWAPI_EXPECTED)
    assert types["_comment"]


def test_type_table_targets_exist_and_match_the_catalog(types: dict[str, Any], catalog: dict[int, Any]) -> None:
    targets = {e[k] for t in ("oneapi", "newapi") for e in types[t].values() for k in ("to", "pipe_to") if k in e}
    assert targets <= set(catalog)
    assert targets <= {int(k) for k in types["version_path"]}
    for our_id, path in types["version_path"].items():
        default = catalog[int(our_id)].default_base_url
        assert default.endswith(path) or not default, (our_id, default, path)  # a host root + path = our default
    for flavour in ("oneapi", "newapi"):
        for number, e in types[flavour].items():
            assert ("skip" in e) != ("to" in e), (flavour, number)
            assert set(e) <= {"name", "to", "host", "compat", "as_is", "default_base", "pipe_to", "skip", "note", "keyLayouts", "keyTemplate",
                              "other"}, (flavour, number)


@pytest.mark.parametrize("source_type,expected", sorted(ONEAPI_EXPECTED.items()))
def test_oneapi_type_maps_to_our_provider(source_type: int, expected: int | None, catalog, types) -> None:
    r = one(channel_row(source_type), catalog, types)
    assert r.source_type == source_type
    if expected is None:
        assert r.reason and not r.items
    else:
        assert not r.reason, r.reason
        assert r.type == expected and {c.type for c in r.items} == {expected}


@pytest.mark.parametrize("source_type,expected", sorted(NEWAPI_EXPECTED.items()))
def test_newapi_type_maps_to_our_provider(source_type: int, expected: int | None, catalog, types) -> None:
    row = channel_row(source_type, config=None, other="us-central1" if source_type == 41 else "acct",
                      key=json.dumps(ADC) if source_type == 41 else "AK|SK|us-east-1" if source_type == 33 else "k")
    r = one(row, catalog, types, "newapi")
    if expected is None:
        assert r.reason and not r.items
    else:
        assert not r.reason, r.reason
        assert r.type == expected


def test_unknown_types_are_skipped_with_a_reason(catalog, types) -> None:
    assert "unknown OneAPI channel type 99" in one(channel_row(99), catalog, types).reason
    assert "new-api" in one(channel_row(99), catalog, types, "newapi").reason


def test_flavours_disagree_where_the_numbering_diverges(catalog, types) -> None:
    pairs = {2: (1, None), 4: (1, 30), 5: (1, None), 26: (26, 16), 27: (27, 1), 28: (28, None), 34: (34, 35),
             35: (35, 27), 36: (36, None), 37: (37, None), 40: (40, 43), 41: (41, 42), 42: (42, 28), 43: (None, 36),
             44: (43, None), 45: (45, 40), 48: (18, 45), 49: (17, 34)}
    for number, (oneapi, newapi) in pairs.items():
        got = one(channel_row(number), catalog, types)
        assert (None if got.reason else got.type) == oneapi, number
        got = one(channel_row(number, other="us-central1", key=json.dumps(ADC) if number == 41 else "k"),
                  catalog, types, "newapi")
        assert (None if got.reason else got.type) == newapi, number


@pytest.mark.parametrize("columns,flavour", [
    ({"id", "type", "key", "config", "other", "system_prompt"}, "oneapi"),
    ({"id", "type", "key", "other", "tag", "setting", "auto_ban"}, "newapi"),
    ({"id", "type", "key", "other", "tag"}, "newapi"),
    ({"id", "type", "key", "config", "tag", "setting", "auto_ban", "other_info"}, "newapi"),  # one-api DB run by new-api
    ({"ID", "TYPE", "CONFIG"}, "oneapi"),
])
def test_detect_flavour(columns: set[str], flavour: str) -> None:
    assert app.detect_flavour({"channels": columns}) == flavour


# ---- pure mapping: base URLs ----

@pytest.mark.parametrize("type_,stored,expected", [
    (1, "https://api.openai.com", ""),  # the source's default host = our default
    (1, "", ""),
    (1, "http://h:1/root", "http://h:1/root/v1"),  # host roots get the version path
    (1, "http://h:1/v1/", "http://h:1/v1"),  # never doubled
    (1, "https://gateway.ai.cloudflare.com/v1/a/g/openai", "https://gateway.ai.cloudflare.com/v1/a/g/openai"),
    (50, "http://h:1/v1", "http://h:1/v1"),  # OpenAI-compatible already includes /v1
    (50, "http://h:1/api/v2", "http://h:1/api/v2"),
    (2, "", "https://oa.api2d.net/v1"),  # resellers keep their concrete old host
    (2, "https://mirror.example", "https://mirror.example/v1"),
    (4, "", "https://api.closeai-proxy.xyz/v1"),
    (8, "http://custom.example", "http://custom.example/v1"),
    (22, "", "https://fastgpt.run/api/openapi/v1"),
    (39, "", "https://api.together.xyz/v1"),
    (46, "", "https://api.replicate.com/v1"),
    (14, "https://api.anthropic.com", ""),
    (14, "https://claude.example", "https://claude.example/v1"),
    (16, "https://glm.example", "https://glm.example/api/paas/v4"),
    (17, "https://dashscope.aliyuncs.com", ""),
    (17, "https://ali.example", "https://ali.example/compatible-mode/v1"),
    (20, "https://openrouter.ai/api", ""),
    (23, "https://hunyuan.tencentcloudapi.com", ""),
    (24, "https://gemini.example", "https://gemini.example"),
    (29, "https://api.groq.com/openai", ""),
    (30, "http://gpu:11434", "http://gpu:11434/v1"),
    (35, "https://cohere.example", "https://cohere.example/compatibility/v1"),
    (36, "https://api.deepseek.com", ""),
    (40, "https://ark.example", "https://ark.example/api/v3"),
    (41, "https://api.novita.ai/v3/openai", ""),
    (44, "https://sf.example", "https://sf.example/v1"),
    (47, "https://qianfan.baidubce.com", ""),
    (51, "", ""),
    (51, "https://g.example/v1beta/openai/", "https://g.example/v1beta/openai"),
    (3, "https://res.openai.azure.com/", "https://res.openai.azure.com"),
])
def test_oneapi_base_url(type_: int, stored: str, expected: str, catalog, types) -> None:
    r = one(channel_row(type_, base_url=stored, key="bce-v3/a/b" if type_ == 47 else "k"), catalog, types)
    assert not r.reason, r.reason
    assert {c.base_url for c in r.items} == {expected}


@pytest.mark.parametrize("type_", [8, 50, 3])
def test_no_usable_base_url_is_a_skip(type_: int, catalog, types) -> None:
    r = one(channel_row(type_, base_url=""), catalog, types)
    assert not r.items and ("base URL" in r.reason or "endpoint" in r.reason)


def test_cloudflare_account_goes_into_the_url(catalog, types) -> None:
    r = one(channel_row(37, base_url="", config='{"user_id": "acc-9"}', key="cf-token"), catalog, types)
    assert r.items[0].base_url == "https://api.cloudflare.com/client/v4/accounts/acc-9/ai/v1"
    assert r.items[0].key == "cf-token" and r.items[0].config == {"user_id": "acc-9"}
    r = one(channel_row(39, base_url="", config=None, other="acc-new", key="t"), catalog, types, "newapi")
    assert r.items[0].base_url.endswith("/accounts/acc-new/ai/v1") and r.items[0].config["user_id"] == "acc-new"
    r = one(channel_row(37, base_url="", config="", key="t"), catalog, types)
    assert "{account_id}" in r.items[0].base_url and any("account id" in w for w in r.warnings)


def test_newapi_specific_hosts(catalog, types) -> None:
    assert one(channel_row(27, base_url=""), catalog, types, "newapi").items[0].base_url == "https://api.perplexity.ai"
    coze = one(channel_row(49, base_url="", config=None), catalog, types, "newapi").items[0]
    assert coze.type == 34 and coze.base_url == "https://api.coze.cn"  # new-api's default is the .cn site
    ollama = one(channel_row(4, base_url="http://gpu:11434"), catalog, types, "newapi").items[0]
    assert (ollama.type, ollama.base_url) == (30, "http://gpu:11434/v1")


# ---- pure mapping: credentials ----

def test_azure_api_version_from_config_then_other(catalog, types) -> None:
    base = "https://res.openai.azure.com"
    c = one(channel_row(3, base_url=base, key="az", config='{"api_version": "2024-06-01"}', other="x"), catalog, types)
    assert c.items[0].key == "az|2024-06-01" and c.items[0].config == {"api_version": "2024-06-01"}
    c = one(channel_row(3, base_url=base, key="az", config="", other="2024-03-01-preview"), catalog, types)
    assert c.items[0].key == "az|2024-03-01-preview" and c.items[0].config == {"api_version": "2024-03-01-preview"}
    c = one(channel_row(3, base_url=base, key="az", config=None, other="2024-02-01"), catalog, types, "newapi")
    assert c.items[0].key == "az|2024-02-01"


def test_aws_credentials(catalog, types) -> None:
    cfg = '{"region": "us-west-2", "ak": "AKIA1", "sk": "SECRET1"}'
    c = one(channel_row(33, key="", base_url="", config=cfg), catalog, types).items
    assert [x.key for x in c] == ["us-west-2|AKIA1|SECRET1"]
    assert c[0].config == {"region": "us-west-2", "ak": "AKIA1", "sk": "SECRET1"}
    c = one(channel_row(33, key="AKIA2|SECRET2|eu-west-1", base_url="", config=""), catalog, types).items
    assert c[0].key == "eu-west-1|AKIA2|SECRET2"  # one-api UI / new-api order AK|SK|Region
    c = one(channel_row(33, key="APIKEY|ap-south-1", base_url="", config=None), catalog, types, "newapi").items
    assert c[0].key == "ap-south-1|APIKEY"
    r = one(channel_row(33, key="lonely", base_url="", config=""), catalog, types)
    assert r.items and any("AWS" in w for w in r.warnings)


def test_vertex_credentials(catalog, types) -> None:
    adc = json.dumps(ADC)
    cfg = json.dumps({"region": "us-central1", "vertex_ai_project_id": "proj-1", "vertex_ai_adc": adc})
    c = one(channel_row(42, key="", base_url="", config=cfg), catalog, types).items
    assert [x.key for x in c] == [f"us-central1|{adc}"] and c[0].config["vertex_ai_project_id"] == "proj-1"
    pretty = json.dumps(ADC, indent=2)  # a multi-line ADC is one key, not one channel per line
    c = one(channel_row(41, key=pretty, base_url="", config=None, other="europe-west4"), catalog, types, "newapi")
    assert len(c.items) == 1 and c.items[0].key == "europe-west4|" + json.dumps(ADC, separators=(",", ":"))
    two = json.dumps([ADC, dict(ADC, project_id="proj-2")])  # new-api multi-key: a JSON array
    c = one(channel_row(41, key=two, base_url="", config=None, other="us-east5"), catalog, types, "newapi")
    assert len(c.items) == 2 and all(x.key.startswith("us-east5|{") for x in c.items)
    regions = json.dumps({"default": "us-central1", "claude-3-5": "us-east5"})
    c = one(channel_row(41, key=json.dumps(ADC), base_url="", config=None, other=regions), catalog, types, "newapi")
    assert c.items[0].key.startswith("us-central1|") and c.items[0].config["regions"]["claude-3-5"] == "us-east5"
    assert c.warnings


def test_coze_xunfei_baidu_and_legacy_other(catalog, types) -> None:
    assert one(channel_row(34, key="pat", config='{"user_id": "u1"}', base_url=""), catalog, types).items[0].key == "pat|u1"
    r = one(channel_row(34, key="pat", config="", base_url=""), catalog, types)
    assert r.items[0].key == "pat" and any("Coze user id" in w for w in r.warnings)
    x = one(channel_row(18, key="APPID|APISECRET|APIKEY", config="", other="v3.5", base_url=""), catalog, types)
    assert x.items[0].key == "APIKEY:APISECRET" and x.items[0].config == {"api_version": "v3.5"} and x.warnings
    assert one(channel_row(47, key="AK|SK", base_url=""), catalog, types).type == 13  # ak|sk form -> baidu v2
    assert one(channel_row(47, key="bce-v3/ALTAK/x", base_url=""), catalog, types).type == 49  # bearer -> qianfan
    g = one(channel_row(24, key="AIza", config="", other="v1beta", base_url=""), catalog, types).items[0]
    assert g.config == {"api_version": "v1beta"} and g.key == "AIza"
    a = one(channel_row(17, key="sk", config="", other="web_search", base_url=""), catalog, types).items[0]
    assert a.config == {"plugin": "web_search"}
    lib = one(channel_row(21, key="k", config="", other="lib-1", base_url=""), catalog, types).items[0]
    assert lib.config == {"library_id": "lib-1"} and lib.base_url == "https://api.aiproxy.io/v1"


@pytest.mark.parametrize("aiproxy_type", [15, 34, 44, 46])
def test_a_row_of_a_type_not_supported_yet_is_imported_with_a_warning(aiproxy_type: int, catalog, types) -> None:
    """Baidu legacy, Coze, Doubao speech, Doc2X: the row is kept (nothing stored is lost) and the report says its
    calls will answer 501 (issue 17)."""
    r = app.map_aiproxy_channel(aiproxy_row(type=aiproxy_type, key="k|x"), catalog)
    assert r.items and any("not supported yet" in w and "501" in w for w in r.warnings), r.warnings
    coze = one(channel_row(34, key="pat", config='{"user_id": "u1"}', base_url=""), catalog, types)
    assert any("not supported yet" in w for w in coze.warnings)
    assert not any("not supported yet" in w for w in one(channel_row(1), catalog, types).warnings)


def test_a_dropped_group_is_warned(catalog, types) -> None:
    """Issue 19: a one-api group other than "default" vanished without a word (a legacy Baidu row, our 15, is
    warned of its 501 by the test above)."""
    vip = one(channel_row(1, group="default,vip"), catalog, types)
    assert vip.items and any(w.startswith("group vip not imported") for w in vip.warnings), vip.warnings
    assert not any("group" in w for w in one(channel_row(1, group="default"), catalog, types).warnings)
    baidu = one(channel_row(15, key="ak|sk", base_url=""), catalog, types)
    assert baidu.items and any("not supported yet" in w and "501" in w for w in baidu.warnings), baidu.warnings


def test_invalid_config_is_kept_as_text(catalog, types) -> None:
    r = one(channel_row(1, config="{broken"), catalog, types)
    assert r.items[0].config == {"raw": "{broken"} and any("config" in w for w in r.warnings)


# ---- pure mapping: models, mapping, status, priority, keys ----

def test_models_are_split_trimmed_and_deduplicated(catalog, types) -> None:
    r = one(channel_row(1, models=" gpt-4o , gpt-4o-mini,,gpt-4o ,  "), catalog, types)
    assert r.items[0].models == ["gpt-4o", "gpt-4o-mini"] and not r.warnings


@pytest.mark.parametrize("models", ["", None, " , ,"])
def test_no_models_is_imported_with_a_warning(models: Any, catalog, types) -> None:
    r = one(channel_row(1, models=models), catalog, types)
    assert not r.reason and r.items[0].models == [] and any("no models" in w for w in r.warnings)


@pytest.mark.parametrize("text,mapping,warned", [
    ("", {}, False), ("{}", {}, False), (None, {}, False),
    ('{"gpt-4": "gpt-4o"}', {"gpt-4": "gpt-4o"}, False),
    ("{not json", {}, True), ('["a"]', {}, True), ('{"a": "b", "c": 1, "d": ""}', {"a": "b"}, True),
])
def test_model_mapping(text: Any, mapping: dict[str, str], warned: bool, catalog, types) -> None:
    r = one(channel_row(1, model_mapping=text), catalog, types)
    assert not r.reason and r.items[0].model_mapping == mapping
    assert any("model_mapping" in w for w in r.warnings) == warned


@pytest.mark.parametrize("status,ours,reason", [
    (1, 1, ""), (2, 2, ""), (3, 2, "auto-disabled in OneAPI"), (0, 1, ""), (None, 1, ""),
])
def test_status(status: Any, ours: int, reason: str, catalog, types) -> None:
    c = one(channel_row(1, status=status), catalog, types).items[0]
    assert (c.status, c.status_reason) == (ours, reason)


def test_newapi_auto_disabled_carries_its_reason(catalog, types) -> None:
    info = json.dumps({"status_reason": "invalid api key", "status_time": 1})
    c = one(channel_row(1, status=3, other_info=info, config=None), catalog, types, "newapi").items[0]
    assert c.status == 2 and c.status_reason == "auto-disabled in new-api: invalid api key"


def test_priority_weight_name_and_multi_line_keys(catalog, types) -> None:
    r = one(channel_row(1, id=42, name="  main  ", priority=7, weight=3, key="k1\n k2 \n\n\nk3\n"), catalog, types)
    assert [c.key for c in r.items] == ["k1", "k2", "k3"]
    assert {(c.name, c.priority, c.weight, c.source_id) for c in r.items} == {("main", 7, 3, "42")}
    c = one(channel_row(1, name="", priority=None, weight=None), catalog, types).items[0]
    assert (c.name, c.priority, c.weight) == ("OpenAI #7", 0, 1)  # one-api leaves weight 0: ours means "1 share"
    assert one(channel_row(1, priority=-5), catalog, types).items[0].priority == -5
    assert "no key" in one(channel_row(1, key=" \n "), catalog, types).reason


def test_extra_columns_are_kept_or_reported(catalog, types) -> None:
    r = one(channel_row(1, system_prompt="Be brief.", param_override='{"temperature": 0}',
                        openai_organization="org-1"), catalog, types)
    c = r.items[0]
    assert c.config["system_prompt"] == "Be brief." and c.config["openai_organization"] == "org-1"
    assert any("param_override" in w for w in r.warnings) and any("system_prompt" in w for w in r.warnings)


def test_type_notes_become_warnings(catalog, types) -> None:
    assert one(channel_row(23, key="AppId|SecretId|SecretKey"), catalog, types).warnings
    assert one(channel_row(11), catalog, types).warnings
    assert not one(channel_row(1), catalog, types).warnings


# ---- pure mapping: tokens ----

def token_row(**kw: Any) -> dict[str, Any]:
    row = {"id": 3, "name": "t", "key": "k" * 48, "status": 1, "created_time": 1_700_000_000,
           "expired_time": -1, "remain_quota": 0, "unlimited_quota": 1, "used_quota": 0, "models": ""}
    return row | kw


def test_token_mapping_basics() -> None:
    r = app.map_oneapi_token(token_row(key="sk-" + "a" * 48, models="gpt-4o, gpt-4o-mini"), "oneapi", 500_000)
    t = r.items[0]
    assert t["key"] == "a" * 48 and t["status"] == 1 and t["quota"] == 0 and t["expired_at"] == 0
    assert t["models"] == ["gpt-4o", "gpt-4o-mini"] and t["created_at"] == 1_700_000_000_000
    assert t["source_id"] == "3" and not r.warnings


def test_token_quota_units_and_expiry() -> None:
    t = app.map_oneapi_token(token_row(unlimited_quota=0, remain_quota=1_000_000, used_quota=500_000,
                                       expired_time=1_900_000_000), "oneapi", 500_000).items[0]
    assert (t["quota"], t["used_amount"], t["expired_at"]) == (3.0, 1.0, 1_900_000_000_000)
    t = app.map_oneapi_token(token_row(unlimited_quota=0, remain_quota=1_000_000), "oneapi", 1_000_000).items[0]
    assert t["quota"] == 1.0


def test_token_with_nothing_left_is_disabled_not_unlimited() -> None:
    r = app.map_oneapi_token(token_row(unlimited_quota=0, remain_quota=0, used_quota=0), "oneapi", 500_000)
    assert r.items[0]["status"] == 2 and r.items[0]["quota"] == 0 and r.warnings


@pytest.mark.parametrize("status,ours,warned", [(1, 1, False), (2, 2, False), (3, 2, True), (4, 2, True)])
def test_token_status(status: int, ours: int, warned: bool) -> None:
    r = app.map_oneapi_token(token_row(status=status), "oneapi", 500_000)
    assert r.items[0]["status"] == ours and bool(r.warnings) == warned


def test_newapi_token_limits_and_soft_delete() -> None:
    row = token_row(models=None, model_limits_enabled=1, model_limits="a,b", allow_ips="10.0.0.1")
    r = app.map_oneapi_token(row, "newapi", 500_000)
    assert r.items[0]["models"] == ["a", "b"] and any("allow" in w for w in r.warnings)
    assert app.map_oneapi_token(token_row(model_limits_enabled=0, model_limits="a"), "newapi", 1).items[0]["models"] == []
    assert app.map_oneapi_token(token_row(deleted_at="2025-01-01"), "newapi", 1).reason == "deleted in the source"
    assert app.map_oneapi_token(token_row(key=""), "oneapi", 1).reason


# ---- pure: DSN parsing and secrets ----

@pytest.mark.parametrize("dsn", [
    "root:p@ss:w0rd@tcp(db.example:3307)/oneapi?charset=utf8mb4&parseTime=True&loc=Local",
    "mysql://root:p@ss:w0rd@tcp(db.example:3307)/oneapi?parseTime=True",
    "mysql://root:p%40ss%3Aw0rd@db.example:3307/oneapi",
])
def test_parse_mysql_dsn(dsn: str) -> None:
    src = app.parse_source_dsn(dsn)
    assert src.kind == "mysql" and src.url.drivername == "mysql+pymysql"
    assert (src.url.username, src.url.password, src.url.host, src.url.port, src.url.database) == \
           ("root", "p@ss:w0rd", "db.example", 3307, "oneapi")
    assert dict(src.url.query) == {"charset": src.url.query.get("charset", "utf8mb4")}  # Go-only params dropped
    assert src.safe == "mysql://root@db.example:3307/oneapi" and src.tag("oneapi") == "oneapi:db.example:3307/oneapi"
    assert "w0rd" not in repr(src) + src.safe + src.source


def test_parse_other_dsns(tmp_path: Path) -> None:
    go = app.parse_source_dsn("oneapi:pw@tcp(10.0.0.5)/one")
    assert (go.url.host, go.url.port, go.url.database) == ("10.0.0.5", 3306, "one")
    pg = app.parse_source_dsn("postgres://u:pw@pg.example/oneapi?sslmode=disable")
    assert pg.kind == "postgres" and pg.url.port == 5432 and pg.url.query["sslmode"] == "disable"
    assert pg.safe == "postgres://u@pg.example:5432/oneapi"
    db = tmp_path / "one-api.db"
    sqlite3.connect(db).close()
    for dsn in (str(db), f"sqlite:///{db}"):
        src = app.parse_source_dsn(dsn)
        assert src.kind == "sqlite" and src.tag("newapi") == f"oneapi:sqlite:{db.resolve()}"


@pytest.mark.parametrize("dsn,message", [
    ("", "dsn is required"),
    ("   ", "dsn is required"),
    ("hello world", "unrecognised dsn"),
    ("/no/such/one-api.db", "SQLite file not found"),
    ("sqlite:///no/such.db", "SQLite file not found"),
    ("http://example.com/x", "unsupported dsn scheme"),
    ("mysql://u:pw@h:notaport/db", "invalid port"),
    ("mysql://u:pw@h:3306/", "names no database"),
])
def test_bad_dsns(dsn: str, message: str) -> None:
    with pytest.raises(app.ApiError, match=message) as info:
        app.parse_source_dsn(dsn)
    assert "pw" not in info.value.message


def test_postgres_without_a_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(app.ApiError, match="psycopg"):
        app.parse_source_dsn("postgres://u:pw@h/db")


def test_scrub_secret() -> None:
    assert app.scrub_secret("user x p@ss:1 and p%40ss%3A1 here", "p@ss:1") == "user x *** and *** here"
    assert app.scrub_secret("nothing", "") == "nothing"


# ---- source databases: documented DDL ----

ONEAPI_MYSQL_DDL = [
    """CREATE TABLE channels (
        id bigint AUTO_INCREMENT PRIMARY KEY, type bigint DEFAULT 0, `key` text, status bigint DEFAULT 1,
        name varchar(191), weight bigint unsigned DEFAULT 0, created_time bigint, test_time bigint,
        response_time bigint, base_url varchar(191) DEFAULT '', other longtext, balance double,
        balance_updated_time bigint, models longtext, `group` varchar(32) DEFAULT 'default',
        used_quota bigint DEFAULT 0, model_mapping varchar(1024) DEFAULT '', priority bigint DEFAULT 0,
        config longtext, system_prompt text, INDEX idx_channels_name (name))""",
    """CREATE TABLE tokens (
        id bigint AUTO_INCREMENT PRIMARY KEY, user_id bigint, `key` char(48), status bigint DEFAULT 1,
        name varchar(191), created_time bigint, accessed_time bigint, expired_time bigint DEFAULT -1,
        remain_quota bigint DEFAULT 0, unlimited_quota boolean DEFAULT false, used_quota bigint DEFAULT 0,
        models text, subnet varchar(191) DEFAULT '', UNIQUE INDEX idx_tokens_key (`key`),
        INDEX idx_tokens_name (name))""",
    "CREATE TABLE options (`key` varchar(191) PRIMARY KEY, value longtext)",
]
NEWAPI_MYSQL_DDL = [
    """CREATE TABLE channels (
        id bigint AUTO_INCREMENT PRIMARY KEY, type bigint DEFAULT 0, `key` longtext NOT NULL,
        openai_organization longtext, test_model longtext, status bigint DEFAULT 1, name varchar(191),
        weight bigint unsigned DEFAULT 0, created_time bigint, test_time bigint, response_time bigint,
        base_url varchar(191) DEFAULT '', other longtext, balance double, balance_updated_time bigint,
        models longtext, `group` varchar(64) DEFAULT 'default', used_quota bigint DEFAULT 0, model_mapping text,
        status_code_mapping varchar(1024) DEFAULT '', priority bigint DEFAULT 0, auto_ban bigint DEFAULT 1,
        other_info longtext, tag varchar(191), setting text, param_override text, INDEX idx_channels_tag (tag))""",
    """CREATE TABLE tokens (
        id bigint AUTO_INCREMENT PRIMARY KEY, user_id bigint, `key` char(48), status bigint DEFAULT 1,
        name varchar(191), created_time bigint, accessed_time bigint, expired_time bigint DEFAULT -1,
        remain_quota bigint DEFAULT 0, unlimited_quota boolean DEFAULT false, model_limits_enabled boolean,
        model_limits varchar(1024) DEFAULT '', allow_ips text, used_quota bigint DEFAULT 0,
        `group` varchar(64) DEFAULT '', deleted_at datetime(3) NULL, UNIQUE INDEX idx_tokens_key (`key`))""",
    "CREATE TABLE options (`key` varchar(191) PRIMARY KEY, value longtext)",
]


def mig_key(tag: str) -> str:
    """A 48-character token key, unique per test run."""
    return f"mig{tag}{RUN}".ljust(48, "x")[:48]


def oneapi_channels(upstream: Any) -> list[dict[str, Any]]:
    root = f"{upstream.base}/ok"  # one-api stores host roots; the fake serves /ok/v1/...
    adc = json.dumps(ADC)
    return [
        dict(id=1, type=1, name="mig-openai", key="sk-up-1", base_url=root, models=" mig-gpt , mig-gpt-4,,",
             model_mapping='{"mig-gpt": "gpt-4o-mini"}', priority=5, weight=3, status=1),
        dict(id=2, type=50, name="mig-compat", key="sk-up-2", base_url=upstream.url("ok"), models="mig-compat",
             priority=1, status=1),
        dict(id=3, type=2, name="mig-reseller", key="sk-up-3", base_url=root, models="mig-reseller", status=1),
        dict(id=4, type=2, name="mig-api2d", key="sk-a2d", base_url="", models="gpt-4o", status=1),
        dict(id=5, type=8, name="mig-custom-empty", key="sk-c", base_url="", models="gpt-4o", status=1),
        dict(id=6, type=3, name="mig-azure", key="az-key", base_url="https://res.openai.azure.com",
             other="2024-03-01-preview", models="gpt-4o", status=1),
        dict(id=7, type=33, name="mig-aws", key="", models="claude-3-5-sonnet", status=1,
             config=json.dumps({"region": "us-east-1", "ak": "AKIAEXAMPLE", "sk": "aws-secret"})),
        dict(id=8, type=42, name="mig-vertex", key="", models="gemini-1.5-pro", status=1,
             config=json.dumps({"region": "us-central1", "vertex_ai_project_id": "proj-1", "vertex_ai_adc": adc})),
        dict(id=9, type=37, name="mig-cloudflare", key="cf-token", models="@cf/meta/llama-3-8b-instruct", status=1,
             config=json.dumps({"user_id": "acct-42"})),
        dict(id=10, type=34, name="mig-coze", key="pat-1", models="bot-1", status=1,
             config=json.dumps({"user_id": "coze-user"})),
        dict(id=11, type=1, name="mig-multikey", key="sk-m1\nsk-m2\n\nsk-m3\n", base_url="", models="gpt-4o",
             status=1),
        dict(id=12, type=1, name="mig-bad-mapping", key="sk-b", models="gpt-4o", model_mapping="{oops", status=1),
        dict(id=13, type=1, name="mig-auto-disabled", key="sk-ad", models="gpt-4o", status=3),
        dict(id=14, type=1, name="mig-disabled", key="sk-d", models="gpt-4o", status=2, priority=-2),
        dict(id=15, type=1, name="mig-no-models", key="sk-nm", models="", status=1),
        dict(id=16, type=38, name="mig-deepl", key="deepl", models="deepl-en", status=1),
        dict(id=17, type=44, name="mig-siliconflow", key="sk-sf", models="Qwen/Qwen2.5-7B-Instruct", status=1),
        dict(id=18, type=14, name="mig-claude-proxy", key="sk-ant", base_url="https://claude.example",
             models="claude-3-5-sonnet", status=1),
        dict(id=19, type=26, name="mig-baichuan", key="sk-bc", models="Baichuan4", status=1),
        dict(id=20, type=24, name="mig-gemini", key="AIza", other="v1beta", models="gemini-1.5-pro", status=1),
    ]


def oneapi_tokens() -> list[dict[str, Any]]:
    now = int(time.time())
    return [
        dict(id=1, user_id=1, key=mig_key("ok"), name="mig-tok-ok", status=1, unlimited_quota=1,
             models="mig-gpt,mig-compat", created_time=now, expired_time=-1),
        dict(id=2, user_id=1, key=mig_key("quota"), name="mig-tok-quota", status=1, unlimited_quota=0,
             remain_quota=1_000_000, used_quota=500_000, expired_time=now + 86_400, models=""),
        dict(id=3, user_id=1, key=mig_key("off"), name="mig-tok-off", status=2, unlimited_quota=1, models=""),
        dict(id=4, user_id=1, key=mig_key("old"), name="mig-tok-expired", status=3, unlimited_quota=1,
             expired_time=now - 86_400, models=""),
        dict(id=5, user_id=1, key=mig_key("narrow"), name="mig-tok-narrow", status=1, unlimited_quota=1,
             models="mig-compat", subnet="10.0.0.0/8"),
    ]


def newapi_channels() -> list[dict[str, Any]]:
    return [
        dict(id=1, type=4, name="nmig-ollama", key="any", base_url="http://gpu:11434", models="llama3", status=1,
             tag="local", setting='{"force_format": false}', auto_ban=1),
        dict(id=2, type=26, name="nmig-zhipu", key="id.secret", models="glm-4", status=1),
        dict(id=3, type=27, name="nmig-perplexity", key="pplx", models="sonar", status=1),
        dict(id=4, type=34, name="nmig-cohere", key="co", models="command-r", status=1),
        dict(id=5, type=35, name="nmig-minimax", key="mm", models="abab6.5s-chat", status=1),
        dict(id=6, type=39, name="nmig-cloudflare", key="cf", other="acct-7", models="@cf/x", status=1),
        dict(id=7, type=40, name="nmig-siliconflow", key="sf", models="Qwen/Qwen2.5-7B-Instruct", status=1),
        dict(id=8, type=41, name="nmig-vertex", key=json.dumps(ADC, indent=2), other="europe-west4",
             models="gemini-1.5-pro", status=1),
        dict(id=9, type=42, name="nmig-mistral", key="ms", models="mistral-large-latest", status=1),
        dict(id=10, type=43, name="nmig-deepseek", key="ds", models="deepseek-chat", status=3,
             other_info=json.dumps({"status_reason": "insufficient balance"})),
        dict(id=11, type=45, name="nmig-volc", key="ark", models="doubao-pro-32k", status=1),
        dict(id=12, type=48, name="nmig-xai", key="xai", models="grok-2", status=1),
        dict(id=13, type=2, name="nmig-midjourney", key="mj", models="mj_imagine", status=1),
        dict(id=14, type=33, name="nmig-aws", key="AKIANEW|new-secret|eu-central-1", models="claude-3-haiku",
             status=1),
        dict(id=15, type=3, name="nmig-azure", key="az", base_url="https://r.openai.azure.com", other="2024-06-01",
             models="gpt-4o", status=1, param_override='{"temperature": 0.2}'),
    ]


def newapi_tokens() -> list[dict[str, Any]]:
    return [
        dict(id=1, user_id=1, key=mig_key("nlim"), name="nmig-tok-limits", status=1, unlimited_quota=1,
             model_limits_enabled=1, model_limits="glm-4,sonar", allow_ips=""),
        dict(id=2, user_id=1, key=mig_key("ndel"), name="nmig-tok-deleted", status=1, unlimited_quota=1,
             model_limits_enabled=0, deleted_at="2025-01-02 03:04:05"),
    ]


# ---- source databases: fixtures ----

def _require(service: str, exc: Exception) -> None:
    message = f"{service} is not reachable ({exc}); these tests need it"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def insert_rows(execute: Any, table: str, rows: list[dict[str, Any]], quote: str) -> None:
    """INSERT each row through a DB-API `execute` (pymysql and psycopg both take %s); `quote` quotes the column
    names, since `key` and `group` are reserved words."""
    for row in rows:
        cols = ", ".join(f"{quote}{c}{quote}" for c in row)
        execute(f"INSERT INTO {table} ({cols}) VALUES ({', '.join(['%s'] * len(row))})", list(row.values()))


@pytest.fixture(scope="module")
def mariadb() -> Iterator[Any]:
    try:
        conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", connect_timeout=3,
                               autocommit=True)
    except pymysql.MySQLError as exc:
        _require("MariaDB at 127.0.0.1:3306 (root, no password)", exc)
    created: list[str] = []

    def make_db(name: str, ddl: list[str], data: dict[str, list[dict[str, Any]]]) -> str:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
            created.append(name)
            cur.execute(f"USE `{name}`")
            for statement in ddl:
                cur.execute(statement)
            for table, rows in data.items():
                insert_rows(cur.execute, table, rows, "`")
        return name

    yield make_db
    with conn.cursor() as cur:
        for name in created:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    conn.close()


@pytest.fixture(scope="module")
def postgres() -> Iterator[Any]:
    """Factory: a fresh PostgreSQL database built from `ddl` and `data`; its DSN. Dropped at the end."""
    try:
        import psycopg
    except ImportError as exc:
        _require("psycopg (the test extra)", exc)
    try:
        admin = psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres", connect_timeout=3,
                                autocommit=True)
    except psycopg.Error as exc:
        _require("PostgreSQL at 127.0.0.1:5432 (user postgres)", exc)
    created: list[str] = []

    def make_db(name: str, ddl: list[str], data: dict[str, list[dict[str, Any]]]) -> str:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        with psycopg.connect(host="127.0.0.1", user="postgres", dbname=name, autocommit=True) as conn:
            for statement in ddl:
                conn.execute(statement)
            for table, rows in data.items():
                insert_rows(conn.execute, table, rows, '"')
        return f"postgres://postgres:{SOURCE_PASSWORD}@127.0.0.1:5432/{name}"  # trust auth: any password works

    yield make_db
    for name in created:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def dsn(db: str) -> str:
    return f"root@tcp(127.0.0.1:3306)/{db}?charset=utf8mb4&parseTime=True&loc=Local"  # one-api's SQL_DSN form


def import_(server: AppServer, source: str, route: str = "oneapi", **kw: Any) -> dict[str, Any]:
    resp = server.client.post(f"/api/channels/import/{route}", json={"dsn": source, **kw})
    assert resp.status_code < 500, resp.text
    body = resp.json()
    assert body["success"] is True, body
    assert SOURCE_PASSWORD not in resp.text
    return body["data"]


def import_error(server: AppServer, source: str) -> tuple[str, float]:
    started = time.monotonic()
    resp = server.client.post("/api/channels/import/oneapi", json={"dsn": source})
    took = time.monotonic() - started
    assert resp.status_code == 400 and "Traceback" not in resp.text, resp.text
    body = resp.json()
    assert body["success"] is False and body["message"], body
    assert SOURCE_PASSWORD not in resp.text and "Zq9" not in resp.text
    return body["message"], took


def by_name(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in rows}


def source_channels(server: AppServer, source: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for ch in server.channels():
        if ch["source"] == source:
            out.setdefault(ch["name"], []).append(ch)
    return {k: sorted(v, key=lambda c: c["id"]) for k, v in out.items()}


def tokens_named(server: AppServer, prefix: str) -> dict[str, dict[str, Any]]:
    body = server.api("GET", "/api/tokens", params={"keyword": prefix, "per_page": 100})
    assert body["success"], body
    return {t["name"]: t for t in body["data"]["tokens"] if t["name"].startswith(prefix)}


@pytest.fixture(scope="module")
def oneapi_run(mariadb: Any, app_server: AppServer, upstream: Any) -> dict[str, Any]:
    """Dry run, real import and a second import of the same one-api database, in that order."""
    db = mariadb(f"oneapi_src_{RUN}", ONEAPI_MYSQL_DDL, {
        "channels": oneapi_channels(upstream), "tokens": oneapi_tokens(),
        "options": [{"key": "QuotaPerUnit", "value": "1000000"}, {"key": "RetryTimes", "value": "0"}]})
    source = f"oneapi:127.0.0.1:3306/{db}"
    dry = import_(app_server, dsn(db), dry_run=True, import_tokens=True)
    after_dry = source_channels(app_server, source), tokens_named(app_server, "mig-tok")
    first = import_(app_server, dsn(db), import_tokens=True)
    channels = source_channels(app_server, source)
    second = import_(app_server, "mysql://" + dsn(db), import_tokens=True)
    return {"db": db, "source": source, "dry": dry, "after_dry": after_dry, "first": first, "second": second,
            "channels": channels, "after_second": source_channels(app_server, source)}


# ---- end to end: one-api in MariaDB ----

def test_oneapi_report(oneapi_run: dict[str, Any]) -> None:
    report = oneapi_run["first"]
    assert report["flavour"] == "oneapi" and report["dry_run"] is False
    assert report["source"] == f"mysql://root@127.0.0.1:3306/{oneapi_run['db']}"
    rows = by_name(report["rows"])
    assert len(report["rows"]) == len(rows) == 20
    skipped = {n for n, r in rows.items() if r["status"] == "skipped"}
    assert skipped == {"mig-custom-empty", "mig-deepl"}
    assert all(rows[n]["reason"] for n in skipped) and all(not rows[n]["channel_ids"] for n in skipped)
    assert (report["imported"], report["skipped"], report["exists"]) == (18, 2, 0)
    for name, r in rows.items():
        assert set(r) >= {"source_id", "name", "source_type", "status", "channel_ids", "type", "warnings"}
        if r["status"] == "imported":
            assert "reason" not in r and r["channel_ids"]
    assert len(rows["mig-multikey"]["channel_ids"]) == 3
    assert rows["mig-siliconflow"]["source_type"] == 44 and rows["mig-siliconflow"]["type"] == 43
    for warned in ("mig-bad-mapping", "mig-no-models"):
        assert rows[warned]["warnings"], warned
    # AWS Bedrock rows say only, while the type is not served, that their calls answer 501 (issue 17)
    aws_warnings = [w for w in rows["mig-aws"]["warnings"] if "not supported yet" not in w]
    assert rows["mig-openai"]["warnings"] == [] and aws_warnings == []


def test_oneapi_channel_fields(oneapi_run: dict[str, Any], upstream: Any) -> None:
    ch = {name: chans[0] for name, chans in oneapi_run["channels"].items()}
    rows = by_name(oneapi_run["first"]["rows"])
    assert set(ch) == {n for n, r in rows.items() if r["status"] == "imported"}
    for name, c in ch.items():
        assert c["source"] == oneapi_run["source"] and c["source_id"] == rows[name]["source_id"]
        assert sorted(x["id"] for x in oneapi_run["channels"][name]) == sorted(rows[name]["channel_ids"])

    o = ch["mig-openai"]
    assert (o["type"], o["key"], o["base_url"]) == (1, "sk-up-1", f"{upstream.base}/ok/v1")
    assert o["models"] == ["mig-gpt", "mig-gpt-4"] and o["model_mapping"] == {"mig-gpt": "gpt-4o-mini"}
    assert (o["priority"], o["weight"], o["status"], o["status_reason"]) == (5, 3, 1, "")
    assert ch["mig-compat"]["base_url"] == upstream.url("ok")  # type 50: /v1 not doubled
    assert (ch["mig-reseller"]["type"], ch["mig-reseller"]["base_url"]) == (1, f"{upstream.base}/ok/v1")
    assert (ch["mig-api2d"]["type"], ch["mig-api2d"]["base_url"]) == (1, "https://oa.api2d.net/v1")
    az = ch["mig-azure"]
    assert (az["type"], az["key"], az["base_url"]) == (3, "az-key|2024-03-01-preview", "https://res.openai.azure.com")
    assert az["config"] == {"api_version": "2024-03-01-preview"}
    aws = ch["mig-aws"]
    assert (aws["type"], aws["key"]) == (33, "us-east-1|AKIAEXAMPLE|aws-secret")
    assert aws["config"] == {"region": "us-east-1", "ak": "AKIAEXAMPLE", "sk": "aws-secret"}
    vx = ch["mig-vertex"]
    assert (vx["type"], vx["key"]) == (42, "us-central1|" + json.dumps(ADC))
    assert vx["config"]["vertex_ai_project_id"] == "proj-1" and json.loads(vx["config"]["vertex_ai_adc"]) == ADC
    cf = ch["mig-cloudflare"]
    assert (cf["type"], cf["key"], cf["config"]) == (37, "cf-token", {"user_id": "acct-42"})
    assert cf["base_url"] == "https://api.cloudflare.com/client/v4/accounts/acct-42/ai/v1"
    assert (ch["mig-coze"]["type"], ch["mig-coze"]["key"]) == (34, "pat-1|coze-user")
    assert sorted(c["key"] for c in oneapi_run["channels"]["mig-multikey"]) == ["sk-m1", "sk-m2", "sk-m3"]
    assert ch["mig-bad-mapping"]["model_mapping"] == {} and ch["mig-bad-mapping"]["models"] == ["gpt-4o"]
    assert (ch["mig-auto-disabled"]["status"], ch["mig-auto-disabled"]["status_reason"]) == \
           (2, "auto-disabled in OneAPI")
    assert (ch["mig-disabled"]["status"], ch["mig-disabled"]["status_reason"], ch["mig-disabled"]["priority"]) == \
           (2, "", -2)
    assert ch["mig-no-models"]["models"] == []
    assert (ch["mig-siliconflow"]["type"], ch["mig-siliconflow"]["base_url"]) == (43, "")
    assert (ch["mig-claude-proxy"]["type"], ch["mig-claude-proxy"]["base_url"]) == (14, "https://claude.example/v1")
    assert ch["mig-baichuan"]["type"] == 26  # one-api 26 is Baichuan (new-api 26 is Zhipu v4)
    assert (ch["mig-gemini"]["type"], ch["mig-gemini"]["config"]) == (24, {"api_version": "v1beta"})


def test_oneapi_tokens_report_and_fields(oneapi_run: dict[str, Any], app_server: AppServer) -> None:
    report = oneapi_run["first"]["tokens"]
    assert (report["imported"], report["exists"], report["skipped"], report["quota_per_unit"]) == (5, 0, 0, 1e6)
    tok = tokens_named(app_server, "mig-tok")
    assert set(tok) == {"mig-tok-ok", "mig-tok-quota", "mig-tok-off", "mig-tok-expired", "mig-tok-narrow"}
    assert tok["mig-tok-ok"]["key"] == "sk-" + mig_key("ok") and tok["mig-tok-ok"]["models"] == ["mig-gpt", "mig-compat"]
    q = tok["mig-tok-quota"]
    assert (q["quota"], q["used_amount"], q["status"]) == (1.5, 0.5, 1)  # QuotaPerUnit from the source's options
    assert q["expired_at"] > time.time() * 1000
    assert tok["mig-tok-off"]["status"] == 2 and tok["mig-tok-expired"]["status"] == 2
    warned = by_name(report["rows"])
    assert warned["mig-tok-narrow"]["warnings"] and warned["mig-tok-expired"]["warnings"]


def test_migrated_channel_and_token_work_with_the_openai_sdk(oneapi_run: dict[str, Any], app_server: AppServer,
                                                             upstream: Any) -> None:
    client = app_server.openai(api_key="sk-" + mig_key("ok"))
    upstream.clear()
    answer = client.chat.completions.create(model="mig-gpt", messages=MESSAGES)
    assert answer.choices[0].message.content == reply_text(3)  # the fake upstream's own words
    seen = upstream.requests("ok")[-1]
    assert seen["path"] == "/ok/v1/chat/completions" and seen["json"]["model"] == "gpt-4o-mini"
    assert seen["headers"]["authorization"] == "Bearer sk-up-1"
    # type 50 (base URL already with /v1), and the bare key without "sk-"
    compat = app_server.openai(api_key=mig_key("ok")).chat.completions.create(model="mig-compat", messages=MESSAGES)
    assert compat.choices[0].message.content and upstream.requests("ok")[-1]["path"] == "/ok/v1/chat/completions"
    reseller = app_server.openai().chat.completions.create(model="mig-reseller", messages=MESSAGES)
    assert reseller.choices[0].message.content and upstream.requests("ok")[-1]["headers"]["authorization"] == \
           "Bearer sk-up-3"
    stream = client.chat.completions.create(model="mig-gpt", messages=MESSAGES, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def test_migrated_token_rules_hold(oneapi_run: dict[str, Any], app_server: AppServer) -> None:
    for tag in ("off", "old"):
        with pytest.raises(openai.AuthenticationError):
            app_server.openai(api_key="sk-" + mig_key(tag)).chat.completions.create(model="mig-gpt", messages=MESSAGES)
    with pytest.raises(openai.APIStatusError) as info:  # allow-list carried over
        app_server.openai(api_key="sk-" + mig_key("narrow")).chat.completions.create(model="mig-gpt",
                                                                                     messages=MESSAGES)
    assert (info.value.status_code, info.value.code) == (403, "model_not_allowed")
    ok = app_server.openai(api_key="sk-" + mig_key("quota")).chat.completions.create(model="mig-compat",
                                                                                      messages=MESSAGES)
    assert ok.choices


def test_second_import_is_a_no_op(oneapi_run: dict[str, Any]) -> None:
    first, second = oneapi_run["first"], oneapi_run["second"]
    assert (second["imported"], second["exists"], second["skipped"]) == (0, 18, 2)
    assert oneapi_run["after_second"] == oneapi_run["channels"]
    before = {r["source_id"]: r for r in first["rows"]}
    for r in second["rows"]:
        assert r["status"] == ("skipped" if before[r["source_id"]]["status"] == "skipped" else "exists")
        assert sorted(r["channel_ids"]) == sorted(before[r["source_id"]]["channel_ids"])
    assert (second["tokens"]["imported"], second["tokens"]["exists"]) == (0, 5)


def test_dry_run_reports_the_same_and_writes_nothing(oneapi_run: dict[str, Any]) -> None:
    dry, first = oneapi_run["dry"], oneapi_run["first"]
    assert dry["dry_run"] is True and oneapi_run["after_dry"] == ({}, {})
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("channel_ids", "token_ids")} for r in rows]
    assert strip(dry["rows"]) == strip(first["rows"]) and strip(dry["tokens"]["rows"]) == strip(first["tokens"]["rows"])
    assert (dry["imported"], dry["skipped"]) == (first["imported"], first["skipped"])
    assert all(r["channel_ids"] == [] for r in dry["rows"])


# ---- end to end: new-api in MariaDB ----

def test_newapi_import(mariadb: Any, app_server: AppServer) -> None:
    db = mariadb(f"newapi_src_{RUN}", NEWAPI_MYSQL_DDL, {"channels": newapi_channels(), "tokens": newapi_tokens()})
    report = import_(app_server, f"mysql://root@127.0.0.1:3306/{db}", import_tokens=True)
    assert report["flavour"] == "newapi"
    rows = by_name(report["rows"])
    assert rows["nmig-midjourney"]["status"] == "skipped" and "Midjourney" in rows["nmig-midjourney"]["reason"]
    assert rows["nmig-azure"]["warnings"]  # param_override could not be carried
    ch = {n: c[0] for n, c in source_channels(app_server, f"oneapi:127.0.0.1:3306/{db}").items()}
    expected = {"nmig-ollama": (30, "http://gpu:11434/v1"), "nmig-zhipu": (16, ""),
                "nmig-perplexity": (1, "https://api.perplexity.ai"), "nmig-cohere": (35, ""),
                "nmig-minimax": (27, ""), "nmig-siliconflow": (43, ""), "nmig-mistral": (28, ""),
                "nmig-deepseek": (36, ""), "nmig-volc": (40, ""), "nmig-xai": (45, ""),
                "nmig-cloudflare": (37, "https://api.cloudflare.com/client/v4/accounts/acct-7/ai/v1"),
                "nmig-vertex": (42, ""), "nmig-aws": (33, ""), "nmig-azure": (3, "https://r.openai.azure.com")}
    assert {n: (c["type"], c["base_url"]) for n, c in ch.items()} == expected
    assert ch["nmig-vertex"]["key"] == "europe-west4|" + json.dumps(ADC, separators=(",", ":"))
    assert ch["nmig-aws"]["key"] == "eu-central-1|AKIANEW|new-secret"
    assert ch["nmig-azure"]["key"] == "az|2024-06-01"
    assert (ch["nmig-deepseek"]["status"], ch["nmig-deepseek"]["status_reason"]) == \
           (2, "auto-disabled in new-api: insufficient balance")
    tokens = by_name(report["tokens"]["rows"])
    assert tokens["nmig-tok-deleted"]["status"] == "skipped"
    assert tokens_named(app_server, "nmig-tok")["nmig-tok-limits"]["models"] == ["glm-4", "sonar"]
    again = import_(app_server, f"mysql://root@127.0.0.1:3306/{db}")
    assert again["imported"] == 0 and again["exists"] == report["imported"]


# ---- end to end: SQLite and PostgreSQL sources ----



def test_sqlite_source(tmp_path: Path, app_server: AppServer, upstream: Any) -> None:
    path = tmp_path / "one-api.db"
    with sqlite3.connect(path) as conn:
        for statement in ONEAPI_SQLITE_DDL:
            conn.execute(statement)
        conn.execute("INSERT INTO channels (id, type, `key`, status, name, base_url, models, priority) "
                     "VALUES (1, 1, 'sk-lite', 1, 'lite-openai', ?, 'lite-model', 2)", (f"{upstream.base}/ok",))
        conn.execute("INSERT INTO channels (id, type, `key`, status, name, models) "
                     "VALUES (2, 36, 'sk-ds', 3, 'lite-deepseek', 'deepseek-chat')")
        conn.execute("INSERT INTO tokens (id, `key`, status, name, unlimited_quota, models) VALUES (1, ?, 1, 'lite-tok', 1, '')",
                     (mig_key("lite"),))
    report = import_(app_server, str(path), import_tokens=True)
    assert report["flavour"] == "oneapi" and (report["imported"], report["tokens"]["imported"]) == (2, 1)
    ch = {n: c[0] for n, c in source_channels(app_server, f"oneapi:sqlite:{path.resolve()}").items()}
    assert (ch["lite-openai"]["base_url"], ch["lite-openai"]["priority"]) == (f"{upstream.base}/ok/v1", 2)
    assert (ch["lite-deepseek"]["type"], ch["lite-deepseek"]["status_reason"]) == (36, "auto-disabled in OneAPI")
    answer = app_server.openai(api_key="sk-" + mig_key("lite")).chat.completions.create(model="lite-model",
                                                                                        messages=MESSAGES)
    assert answer.choices[0].message.content == reply_text(3)  # the fake upstream's own words
    again = import_(app_server, f"sqlite:///{path}", import_tokens=True)
    assert (again["imported"], again["exists"], again["tokens"]["exists"]) == (0, 2, 1)


def test_postgres_source(postgres: Any, app_server: AppServer) -> None:
    name = f"oneapi_pg_{RUN}"
    ddl = ["""CREATE TABLE channels (id bigserial PRIMARY KEY, type bigint DEFAULT 0, "key" text,
        status bigint DEFAULT 1, name varchar(191), weight bigint DEFAULT 0, base_url varchar(191) DEFAULT '',
        other text, models text, "group" varchar(32) DEFAULT 'default', model_mapping varchar(1024) DEFAULT '',
        priority bigint DEFAULT 0, config text, system_prompt text)"""]
    postgres(name, ddl, {"channels": [dict(type=33, key="", name="pg-aws", models="claude-3-haiku",
                                           config='{"region":"us-east-1","ak":"AK","sk":"SK"}')]})
    report = import_(app_server, f"postgres://postgres@127.0.0.1:5432/{name}")
    assert report["imported"] == 1 and report["flavour"] == "oneapi"
    ch = source_channels(app_server, f"oneapi:127.0.0.1:5432/{name}")["pg-aws"][0]
    assert (ch["type"], ch["key"]) == (33, "us-east-1|AK|SK")


# ---- end to end: errors ----

@pytest.fixture
def stalled_port() -> Iterator[int]:
    """A port that accepts TCP connections and then never speaks: the server greeting never comes."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield sock.getsockname()[1]
    sock.close()


def test_bad_sources_answer_clean_errors(mariadb: Any, app_server: AppServer, stalled_port: int) -> None:
    empty = mariadb(f"empty_src_{RUN}", [], {})
    pw = SOURCE_PASSWORD
    message, _ = import_error(app_server, "not a dsn at all")
    assert "unrecognised dsn" in message
    message, _ = import_error(app_server, f"root:{pw}@tcp(127.0.0.1:3306)/{empty}")
    assert "cannot log in" in message and f"mysql://root@127.0.0.1:3306/{empty}" in message
    message, _ = import_error(app_server, f"mysql://root:{pw.replace('!', '%21')}@127.0.0.1:3306/{empty}")
    assert "cannot log in" in message and "%21" not in message
    message, _ = import_error(app_server, f"root:{pw}@tcp(127.0.0.1:{free_port()})/x")
    assert "cannot reach" in message
    message, took = import_error(app_server, f"root:{pw}@tcp(127.0.0.1:{stalled_port})/x")
    assert "cannot reach" in message and took < 8
    message, _ = import_error(app_server, f"root@tcp(127.0.0.1:3306)/{empty}")
    assert "no channels table" in message
    message, _ = import_error(app_server, f"root@tcp(127.0.0.1:3306)/no_such_db_{RUN}")
    assert "database not found" in message
    message, _ = import_error(app_server, f"postgres://postgres:{pw}@127.0.0.1:{free_port()}/x")
    assert "cannot reach" in message
    message, _ = import_error(app_server, "/nonexistent/dir/one-api.db")
    assert "SQLite file not found" in message
    resp = app_server.client.post("/api/channels/import/oneapi", json={})
    assert resp.status_code == 400 and resp.json()["success"] is False
    resp = app_server.client.post("/api/channels/import/oneapi", json={"dsn": "x"}, headers={"Authorization": ""})
    assert resp.status_code == 401
    assert pw not in app_server.log_path.read_text(errors="replace")


# ---- labring/aiproxy: pure mapping ----

AIPROXY_SCHEMA = {
    "channels": {"id", "type", "key", "name", "base_url", "proxy_url", "models", "model_mapping", "status",
                 "priority", "configs", "sets", "deleted_at", "skip_tls_verify"},
    "tokens": {"id", "key", "name", "group_id", "subnets", "models", "status", "quota", "period_quota"},
    "groups": {"id", "status", "available_sets"}, "model_configs": {"model", "type", "input_price"},
}


@pytest.mark.parametrize("schema,flavour", [
    (AIPROXY_SCHEMA, "aiproxy"),
    ({"channels": AIPROXY_SCHEMA["channels"] - {"proxy_url"}, "tokens": AIPROXY_SCHEMA["tokens"]}, "aiproxy"),  # old
    ({"channels": {"id", "type", "key", "config", "sets", "proxy_url"}}, "oneapi"),  # a fork's stray columns
    ({"channels": {"id", "type", "config"}, "model_configs": {"model"}}, "oneapi"),  # e.g. our own database
])
def test_detect_aiproxy(schema: dict[str, set[str]], flavour: str) -> None:
    assert app.detect_flavour(schema) == flavour


def aiproxy_row(**kw: Any) -> dict[str, Any]:
    """An aiproxy `channels` row as psycopg reads it: JSON columns are text, `null` included."""
    row = {"id": 4, "type": 1, "name": "ap", "key": "sk-k", "base_url": "https://up.example/v1", "proxy_url": "",
           "models": '["ap-gpt","ap-embed"]', "model_mapping": "null", "status": 1, "priority": 0,
           "configs": "null", "sets": "null", "deleted_at": None, "skip_tls_verify": False}
    return row | kw


def test_aiproxy_channel_keeps_type_key_url_and_json_lists(catalog) -> None:
    r = app.map_aiproxy_channel(aiproxy_row(model_mapping='{"ap-gpt": "gpt-4o-mini"}',
                                            configs='{"api_version": "v1beta"}'), catalog)
    assert not r.reason and not r.warnings and (r.source_type, r.type, r.source_id) == (1, 1, "4")
    c = r.items[0]
    assert (c.type, c.key, c.base_url, c.status, c.status_reason) == (1, "sk-k", "https://up.example/v1", 1, "")
    assert c.models == ["ap-gpt", "ap-embed"]  # not split on commas out of the JSON text
    assert c.model_mapping == {"ap-gpt": "gpt-4o-mini"} and c.config == {"api_version": "v1beta"}
    for t in (3, 14, 24):
        assert app.map_aiproxy_channel(aiproxy_row(type=t, key="k|2024-06-01"), catalog).items[0].type == t
    assert app.map_aiproxy_channel(aiproxy_row(base_url=""), catalog).items[0].base_url == ""  # provider default


@pytest.mark.parametrize("models,mapping", [("null", "null"), ("", ""), (None, None), ("[]", "{}")])
def test_aiproxy_null_json_is_empty(models: Any, mapping: Any, catalog) -> None:
    r = app.map_aiproxy_channel(aiproxy_row(models=models, model_mapping=mapping), catalog)
    assert r.items[0].models == [] and r.items[0].model_mapping == {}
    assert r.warnings == ["no models in the source row; add models before this channel can serve requests"]


def test_aiproxy_bad_json_is_reported(catalog) -> None:
    r = app.map_aiproxy_channel(aiproxy_row(models='["a",', model_mapping='["x"]'), catalog)
    assert r.items[0].models == [] and r.items[0].model_mapping == {}
    assert any("models is not valid JSON" in w for w in r.warnings)
    assert any("model_mapping is not a JSON object" in w for w in r.warnings)


@pytest.mark.parametrize("priority,ours", [(0, 10), (None, 10), (10, 10), (100, 100), (5, 5), (2_000_000, 1_000_000)])
def test_aiproxy_priority_is_kept_with_0_as_10(priority: Any, ours: int, catalog) -> None:
    c = app.map_aiproxy_channel(aiproxy_row(priority=priority), catalog).items[0]
    assert (c.priority, c.weight) == (ours, 1)


@pytest.mark.parametrize("status,ours,reason", [(1, 1, ""), (2, 2, ""), (0, 1, ""), (3, 2, "status 3 in aiproxy")])
def test_aiproxy_status(status: int, ours: int, reason: str, catalog) -> None:
    c = app.map_aiproxy_channel(aiproxy_row(status=status), catalog).items[0]
    assert (c.status, c.status_reason) == (ours, reason)


def test_aiproxy_deleted_and_unknown_rows_are_skipped(catalog) -> None:
    r = app.map_aiproxy_channel(aiproxy_row(deleted_at=datetime.now(timezone.utc)), catalog)
    assert r.reason == "deleted in aiproxy" and not r.items
    r = app.map_aiproxy_channel(aiproxy_row(type=2), catalog)
    assert r.reason == "unknown aiproxy channel type 2" and r.source_type == 2


def test_aiproxy_settings_without_a_feature_here_are_warned(catalog) -> None:
    r = app.map_aiproxy_channel(aiproxy_row(
        proxy_url="socks5://user:hunter2@proxy:1080", sets='["default", "vip"]', skip_tls_verify=True,
        enabled_no_permission_ban=True, max_error_rate=Decimal("0.5"), warn_error_rate=Decimal("0"),
        enabled_auto_balance_check=True, balance_threshold=Decimal("3")), catalog)
    text = "\n".join(r.warnings)
    for setting in ("sets default, vip", "enabled_no_permission_ban, max_error_rate",
                    "enabled_auto_balance_check, balance_threshold"):
        assert setting in text, setting
    assert "warn_error_rate" not in text and "hunter2" not in text and len(r.warnings) == 3
    # a channel's own proxy and TLS setting are kept: channels here have them too
    assert (r.items[0].proxy_url, r.items[0].skip_tls_verify) == ("socks5://user:hunter2@proxy:1080", True)
    assert not app.map_aiproxy_channel(aiproxy_row(sets='["default"]', proxy_url=" "), catalog).warnings
    bad = app.map_aiproxy_channel(aiproxy_row(proxy_url="ftp://user:hunter2@proxy"), catalog)
    assert ["proxy_url" in w and "hunter2" not in w for w in bad.warnings] == [True] and bad.items[0].proxy_url == ""


def yaml_row(index: int = 0, **kw: Any) -> dict[str, Any]:
    return {"name": "y", "key": "k", "models": ["m"], "status": 1} | kw | {"id": -1 - index}


@pytest.mark.parametrize("type_name,ours", [("openai", 1), ("Claude", 14), (" google gemini ", 24), ("aliyun", 17),
                                            ("vertex", 42), ("蚂蚁百灵", 54)])
def test_yaml_type_names(type_name: str, ours: int, catalog) -> None:
    r = app.map_aiproxy_channel(yaml_row(type_name=type_name), catalog, from_yaml=True)
    assert (r.type, r.items[0].type, r.source_id) == (ours, ours, "-1")


def test_aiproxy_tables_point_at_what_we_have(types: dict[str, Any], catalog) -> None:
    assert set(types["aiproxy_type_names"].values()) <= set(catalog)
    assert all(name == name.lower().strip() for name in types["aiproxy_type_names"])
    assert set(types["aiproxy_mode_kinds"].values()) <= set(app.MODEL_KINDS)
    assert {str(m) for m in types["aiproxy_model_type_names"].values()} - set(types["aiproxy_mode_kinds"]) == {"2"}


def test_yaml_type_wins_and_unknown_names_are_skipped(catalog) -> None:
    assert app.map_aiproxy_channel(yaml_row(type=24, type_name="openai"), catalog, from_yaml=True).type == 24
    r = app.map_aiproxy_channel(yaml_row(type_name="nope"), catalog, from_yaml=True)
    assert r.reason == "unknown type_name 'nope'"
    assert app.map_aiproxy_channel(yaml_row(), catalog, from_yaml=True).reason == "unknown aiproxy channel type 0"


def test_yaml_channel_without_status_1_is_imported_disabled(catalog) -> None:
    r = app.map_aiproxy_channel(yaml_row(type=1, status=None), catalog, from_yaml=True)
    assert r.items[0].status == 2 and "aiproxy did not serve it" in r.items[0].status_reason and r.warnings
    r = app.map_aiproxy_channel(yaml_row(type=1, status=2), catalog, from_yaml=True)
    assert (r.items[0].status, r.items[0].status_reason, r.warnings) == (2, "", [])


def test_yaml_unknown_keys_are_named(catalog) -> None:
    r = app.map_aiproxy_channel(yaml_row(type=1, config={"spec": {}}, colour="red"), catalog, from_yaml=True)
    assert r.warnings == ["unknown keys ignored, as aiproxy ignores them: colour, config"]
    assert r.items[0].config == {}


def aiproxy_token(**kw: Any) -> dict[str, Any]:
    row = {"id": 9, "key": "a" * 48, "name": "fastgpt", "group_id": "g1", "subnets": "null", "models": "null",
           "status": 1, "quota": Decimal("0"), "used_amount": Decimal("0.25"), "request_count": 3,
           "period_quota": Decimal("0"), "period_type": None, "created_at": datetime(2025, 5, 1, tzinfo=timezone.utc)}
    return row | kw


def test_aiproxy_token_quota_0_is_no_cap_and_stays_enabled() -> None:
    r = app.map_aiproxy_token(aiproxy_token(), {"g1": {"id": "g1", "status": 1}})
    t = r.items[0]
    assert (t["key"], t["status"], t["quota"], t["used_amount"], t["request_count"]) == ("a" * 48, 1, 0, 0.25, 3)
    assert t["models"] == [] and t["expired_at"] == 0 and t["created_at"] == 1_746_057_600_000
    assert not r.warnings and t["source_id"] == "9"


def test_aiproxy_token_fields_and_warnings() -> None:
    future = datetime.now(timezone.utc) + timedelta(days=3)
    r = app.map_aiproxy_token(aiproxy_token(models='["ap-gpt", "ap-gpt", " "]', quota=Decimal("5.5"),
                                            subnets='["10.0.0.0/8"]', period_quota=Decimal("2"),
                                            period_type="daily", expired_at=future), {})
    t = r.items[0]
    assert (t["models"], t["quota"], t["expired_at"]) == (["ap-gpt"], 5.5, int(future.timestamp() * 1000))
    assert any("subnets 10.0.0.0/8" in w for w in r.warnings) and any("period_quota 2 (daily)" in w
                                                                       for w in r.warnings)
    zero = app.map_aiproxy_token(aiproxy_token(expired_at="0001-01-01 00:00:00+00:00"), {}).items[0]
    assert zero["expired_at"] == 0  # Go's zero time: never expires
    past = app.map_aiproxy_token(aiproxy_token(expired_at=datetime(2020, 1, 1)), {})
    assert past.items[0]["expired_at"] == 1_577_836_800_000 and "expired_at" in past.warnings[0]


def test_aiproxy_token_status_and_group() -> None:
    assert app.map_aiproxy_token(aiproxy_token(status=2), {}).items[0]["status"] == 2
    r = app.map_aiproxy_token(aiproxy_token(), {"g1": {"status": 2}})
    assert r.items[0]["status"] == 2 and "group 'g1' is disabled" in r.warnings[0]
    assert app.map_aiproxy_token(aiproxy_token(key="  "), {}).reason == "the token has no key"
    assert app.map_aiproxy_token(aiproxy_token(key="sk-" + "b" * 48), {}).items[0]["key"] == "b" * 48


@pytest.mark.parametrize("price,ours", [
    ({"input_price": Decimal("0.002"), "output_price": Decimal("0.004")}, (0.002, 0.004)),  # unit 0 = per 1K
    ({"input_price": 0.15, "input_price_unit": 1_000_000, "output_price": 0.6, "output_price_unit": 1_000_000},
     (0.00015, 0.0006)),
    ({"input_price": 1, "input_price_unit": 1}, (1000.0, 0.0)),
    ({"price": {"inputprice": 0.5, "inputpriceunit": 1_000_000, "outputprice": 1.5, "outputpriceunit": 1_000_000}},
     (0.0005, 0.0015)),  # config.yaml: Go's YAML decoder lower-cases the untagged field names
])
def test_aiproxy_prices_become_per_1k(price: dict[str, Any], ours: tuple[float, float]) -> None:
    r = app.map_aiproxy_model_config({"model": "m", "type": 1} | price)
    c = r.items[0]
    assert (c["model"], c["kind"], c["enabled"]) == ("m", "chat", True)
    assert (c["input_price"], c["output_price"]) == pytest.approx(ours)


@pytest.mark.parametrize("row,kind", [({"type": 3}, "embedding"), ({"type": 10}, "rerank"), ({"type": 7}, "tts"),
                                      ({"type_name": "Embeddings"}, "embedding"), ({"type_name": "speech"}, "tts"),
                                      ({"type": 2, "input_price": 1}, ""), ({"type_name": "video", "input_price": 1}, "")])
def test_aiproxy_model_kinds(row: dict[str, Any], kind: str) -> None:
    assert app.map_aiproxy_model_config({"model": "m"} | row).items[0]["kind"] == kind


def test_aiproxy_model_config_limits_are_warned() -> None:
    r = app.map_aiproxy_model_config({
        "model": "m", "type": 1, "rpm": 100, "tpm": 0, "retry_times": 2, "request_timeout": 60,
        "stream_request_timeout": None, "cached_price": Decimal("0.01"), "conditional_prices": "null",
        "plugin": '{"cache": {"enable": true}}'})
    text = "\n".join(r.warnings)
    for part in ("rpm=100 not imported", "retry_times=2", "timeout_config (request_timeout=60s)", "cached_price",
                 "plugin settings"):
        assert part in text, part
    assert "tpm" not in text and "conditional_prices" not in text
    yaml_style = app.map_aiproxy_model_config({"model": "m", "timeout_config": {"stream_request_timeout": 600},
                                               "price": {"input": 0.1}})
    assert yaml_style.items[0]["input_price"] == pytest.approx(0.1)
    assert any("stream_request_timeout=600s" in w for w in yaml_style.warnings)
    assert any("price.input" in w for w in yaml_style.warnings)


def test_aiproxy_model_config_with_nothing_to_carry_is_skipped() -> None:
    r = app.map_aiproxy_model_config({"model": "m", "type": 0, "owner": "openai", "rpm": 5})
    assert r.reason.startswith("nothing to import") and any("rpm=5" in w for w in r.warnings)
    assert app.map_aiproxy_model_config({"model": " "}).reason == "the model config has no model name"


# ---- labring/aiproxy: config.yaml as a source ----

def test_parse_yaml_source(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("channels: []\n")
    src = app.parse_source_dsn(str(path))
    assert (src.kind, src.safe, src.tag("aiproxy")) == ("yaml", str(path.resolve()), f"aiproxy:yaml:{path.resolve()}")
    with pytest.raises(app.ApiError, match="config file not found"):
        app.parse_source_dsn(str(tmp_path / "missing.yml"))


@pytest.mark.parametrize("text,message", [
    ("channels: [\n  - key: sk-secret-in-file\n", "not valid YAML at line"),
    ("channels: {a: 1}\n", "`channels:` must be a list of mappings"),
    ("modelconfigs:\n  - just a string\n", "`modelconfigs:` must be a list of mappings"),
    ("options:\n  RetryTimes: '3'\n", "no channels: or modelconfigs:"),
    ("- a list\n", "no channels: or modelconfigs:"),
    ("", "no channels: or modelconfigs:"),
])
def test_bad_yaml_sources(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(app.ApiError, match=message) as info:
        app.read_source(app.parse_source_dsn(str(path)))
    assert "sk-secret" not in info.value.message


def test_yaml_fixture_reads_as_aiproxy() -> None:
    data = app.read_source(app.parse_source_dsn(str(AIPROXY_YAML)))
    assert data.flavour == "aiproxy" and [c["id"] for c in data.channels] == [-1, -2, -3, -4, -5]
    assert [m["model"] for m in data.model_configs] == ["yaml-gpt", "yaml-embed", "yaml-bare"]


# ---- labring/aiproxy: end to end, from PostgreSQL (FastGPT's docker-compose runs aiproxy on it) ----

def ap_key(tag: str) -> str:
    """A 48-character aiproxy token key, unique per test run."""
    return f"ap{tag}{RUN}".ljust(48, "z")[:48]


def aiproxy_channels(upstream: Any) -> list[dict[str, Any]]:
    return [
        dict(id=1, type=1, name="ap-openai", key="sk-up-ap1", base_url=upstream.url("ok"), priority=0, status=1,
             models='["ap-gpt","ap-embed"]', model_mapping='{"ap-gpt":"gpt-4o-mini"}', configs="null",
             sets='["default"]'),
        dict(id=2, type=3, name="ap-azure", key="az-key|2024-06-01", base_url="https://res.openai.azure.com",
             priority=10, status=1, models='["ap-azure-4o"]', model_mapping="null",
             proxy_url="http://proxyuser:proxy-secret@proxy.local:3128", sets='["default","vip"]'),
        dict(id=3, type=14, name="ap-claude", key="sk-ant-ap", base_url="", priority=100, status=2,
             models='["ap-claude-haiku"]', skip_tls_verify=True, enabled_no_permission_ban=True,
             max_error_rate=0.5),
        dict(id=4, type=24, name="ap-gemini", key="AIza-ap", base_url="", priority=0, status=1,
             models='["ap-gemini-flash"]', configs='{"safety": "BLOCK_NONE"}'),
        dict(id=5, type=1, name="ap-deleted", key="sk-gone", base_url=upstream.url("ok"), status=1,
             models='["ap-gone"]', deleted_at=datetime(2025, 3, 1, tzinfo=timezone.utc)),
        dict(id=6, type=1, name="ap-no-models", key="sk-nm", base_url=upstream.url("ok"), status=1, models="null",
             model_mapping="null"),
    ]


def aiproxy_tokens() -> list[dict[str, Any]]:
    soon = datetime.now(timezone.utc) + timedelta(days=30)
    never = datetime(1, 1, 1, tzinfo=timezone.utc)  # Go's zero time, as aiproxy stores "no expiry"
    return [
        dict(id=1, key=ap_key("all"), name="ap-tok-all", group_id="fastgpt", status=1, quota=0, used_amount=0,
             models="null", subnets="null", expired_at=never),
        dict(id=2, key=ap_key("narrow"), name="ap-tok-narrow", group_id="fastgpt", status=1, quota=5.5,
             used_amount=1.25, request_count=7, models='["ap-gpt"]', subnets='["10.0.0.0/8"]', period_quota=2,
             period_type="daily", expired_at=soon),
        dict(id=3, key=ap_key("off"), name="ap-tok-off", group_id="fastgpt", status=2, quota=0, models="null"),
        dict(id=4, key=ap_key("grp"), name="ap-tok-group-off", group_id="blocked", status=1, quota=0,
             models="null"),
    ]


def aiproxy_model_configs() -> list[dict[str, Any]]:
    return [
        dict(model="ap-gpt", owner="openai", type=1, input_price=0.15, input_price_unit=1_000_000, output_price=0.6,
             output_price_unit=1_000_000, rpm=100, retry_times=2, request_timeout=60),
        dict(model="ap-embed", owner="openai", type=3, input_price=0.0001),
        dict(model="ap-bare", owner="openai", type=0),
    ]


@pytest.fixture(scope="module")
def aiproxy_run(postgres: Any, app_server: AppServer, upstream: Any) -> dict[str, Any]:
    """Dry run, import, a second import, and a third through /import/oneapi, of one aiproxy database."""
    name = f"aiproxy_src_{RUN}"
    dsn = postgres(name, AIPROXY_POSTGRES_DDL + [AIPROXY_OLD_TOKEN_EXPIRY], {
        "groups": [dict(id="fastgpt", status=1), dict(id="blocked", status=2)],
        "channels": aiproxy_channels(upstream), "tokens": aiproxy_tokens(), "model_configs": aiproxy_model_configs(),
        "options": [dict(key="RetryTimes", value="3")]})
    source = f"aiproxy:127.0.0.1:5432/{name}"
    dry = import_(app_server, dsn, "aiproxy", dry_run=True, import_tokens=True)
    after_dry = source_channels(app_server, source), tokens_named(app_server, "ap-tok"), model_configs(app_server)
    first = import_(app_server, dsn, "aiproxy", import_tokens=True)
    channels = source_channels(app_server, source)
    second = import_(app_server, dsn, "aiproxy", import_tokens=True)
    third = import_(app_server, dsn, import_tokens=True)
    return {"name": name, "source": source, "dry": dry, "after_dry": after_dry, "first": first, "second": second,
            "third": third, "channels": channels, "after_second": source_channels(app_server, source)}


def model_configs(server: AppServer) -> dict[str, dict[str, Any]]:
    body = server.api("GET", "/api/model_configs/all")
    assert body["success"], body
    return {m["model"]: m for m in body["data"] if m["model"].startswith("ap-")}


def test_aiproxy_report(aiproxy_run: dict[str, Any]) -> None:
    report = aiproxy_run["first"]
    assert report["flavour"] == "aiproxy" and report["source"] == f"postgres://postgres@127.0.0.1:5432/{aiproxy_run['name']}"
    assert any("strict" in n for n in report["notes"]) and any("AIPROXY_API_ENDPOINT" in n for n in report["notes"])
    rows = by_name(report["rows"])
    assert len(report["rows"]) == len(rows) == 6  # one entry per source row
    assert (report["imported"], report["exists"], report["skipped"]) == (5, 0, 1)
    assert rows["ap-deleted"]["status"] == "skipped" and rows["ap-deleted"]["reason"] == "deleted in aiproxy"
    assert [w for w in rows["ap-no-models"]["warnings"] if "no models" in w]
    assert rows["ap-openai"]["warnings"] == [] and rows["ap-gemini"]["warnings"] == []
    azure = "\n".join(rows["ap-azure"]["warnings"])
    assert "proxy_url" not in azure and "sets default, vip" in azure and "proxy-secret" not in azure
    claude = "\n".join(rows["ap-claude"]["warnings"])
    assert "skip_tls_verify" not in claude and "enabled_no_permission_ban, max_error_rate" in claude
    tokens = by_name(report["tokens"]["rows"])
    assert (report["tokens"]["imported"], report["tokens"]["skipped"]) == (4, 0)
    assert any("subnets 10.0.0.0/8" in w for w in tokens["ap-tok-narrow"]["warnings"])
    assert any("period_quota 2 (daily)" in w for w in tokens["ap-tok-narrow"]["warnings"])
    assert any("group 'blocked' is disabled" in w for w in tokens["ap-tok-group-off"]["warnings"])
    configs = by_name(report["model_configs"]["rows"])
    assert {n: r["status"] for n, r in configs.items()} == {"ap-gpt": "imported", "ap-embed": "imported",
                                                              "ap-bare": "skipped"}
    gpt = "\n".join(configs["ap-gpt"]["warnings"])
    assert "rpm=100" in gpt and "retry_times=2" in gpt and "request_timeout=60s" in gpt


def test_aiproxy_channel_fields(aiproxy_run: dict[str, Any], upstream: Any) -> None:
    ch = {name: chans[0] for name, chans in aiproxy_run["channels"].items()}
    assert set(ch) == {"ap-openai", "ap-azure", "ap-claude", "ap-gemini", "ap-no-models"}
    assert all(len(c) == 1 for c in aiproxy_run["channels"].values())
    o = ch["ap-openai"]
    assert (o["type"], o["key"], o["base_url"], o["status"]) == (1, "sk-up-ap1", upstream.url("ok"), 1)
    assert o["models"] == ["ap-gpt", "ap-embed"] and o["model_mapping"] == {"ap-gpt": "gpt-4o-mini"}
    assert (o["source"], o["source_id"]) == (aiproxy_run["source"], "1")
    az = ch["ap-azure"]
    assert (az["type"], az["key"], az["base_url"], az["model_mapping"]) == (
        3, "az-key|2024-06-01", "https://res.openai.azure.com", {})
    cl, gm = ch["ap-claude"], ch["ap-gemini"]
    assert (cl["type"], cl["base_url"], cl["status"], cl["status_reason"]) == (14, "", 2, "")
    assert (az["proxy_url"], az["skip_tls_verify"], cl["proxy_url"], cl["skip_tls_verify"]) == (
        "http://proxyuser:proxy-secret@proxy.local:3128", False, "", True)  # each channel's own, as aiproxy had it
    assert (gm["type"], gm["configs"], gm["config"]) == (24, {"safety": "BLOCK_NONE"}, {"safety": "BLOCK_NONE"})
    assert {n: (c["priority"], c["weight"]) for n, c in ch.items()} == {
        "ap-openai": (10, 1), "ap-azure": (10, 1), "ap-claude": (100, 1), "ap-gemini": (10, 1),
        "ap-no-models": (10, 1)}
    assert ch["ap-no-models"]["models"] == [] and ch["ap-no-models"]["model_mapping"] == {}


def test_aiproxy_tokens_and_model_configs(aiproxy_run: dict[str, Any], app_server: AppServer) -> None:
    tok = tokens_named(app_server, "ap-tok")
    assert set(tok) == {"ap-tok-all", "ap-tok-narrow", "ap-tok-off", "ap-tok-group-off"}
    every = tok["ap-tok-all"]
    assert (every["key"], every["status"], every["quota"], every["models"], every["expired_at"]) == (
        "sk-" + ap_key("all"), 1, 0, [], 0)
    narrow = tok["ap-tok-narrow"]
    assert (narrow["models"], narrow["quota"], narrow["used_amount"], narrow["request_count"]) == (
        ["ap-gpt"], 5.5, 1.25, 7)
    assert narrow["expired_at"] > time.time() * 1000
    assert tok["ap-tok-off"]["status"] == 2 and tok["ap-tok-group-off"]["status"] == 2
    configs = model_configs(app_server)
    assert (configs["ap-gpt"]["kind"], configs["ap-embed"]["kind"]) == ("chat", "embedding")
    assert (configs["ap-gpt"]["input_price"], configs["ap-gpt"]["output_price"]) == pytest.approx((0.00015, 0.0006))
    assert configs["ap-embed"]["input_price"] == pytest.approx(0.0001)


def test_migrated_aiproxy_token_works_and_its_models_still_limit_it(aiproxy_run: dict[str, Any],
                                                                    app_server: AppServer, upstream: Any) -> None:
    narrow = app_server.openai(api_key="sk-" + ap_key("narrow"))
    upstream.clear()
    answer = narrow.chat.completions.create(model="ap-gpt", messages=MESSAGES)
    assert answer.choices[0].message.content == reply_text(3) and answer.model == "ap-gpt"
    seen = upstream.requests("ok")[-1]
    assert seen["path"] == "/ok/v1/chat/completions" and seen["json"]["model"] == "gpt-4o-mini"
    assert seen["headers"]["authorization"] == "Bearer sk-up-ap1"
    with pytest.raises(openai.APIStatusError) as info:  # ap-embed is on the channel, not on this token's list
        narrow.embeddings.create(model="ap-embed", input="hello")
    assert (info.value.status_code, info.value.code) == (403, "model_not_allowed")
    every = app_server.openai(api_key=ap_key("all"))  # the bare 48-char key works as well as sk-<key>
    assert len(every.embeddings.create(model="ap-embed", input="hello").data[0].embedding) > 0
    for tag in ("off", "grp"):
        with pytest.raises(openai.AuthenticationError):
            app_server.openai(api_key="sk-" + ap_key(tag)).chat.completions.create(model="ap-gpt", messages=MESSAGES)


def test_second_aiproxy_import_is_a_no_op(aiproxy_run: dict[str, Any]) -> None:
    for again in (aiproxy_run["second"], aiproxy_run["third"]):  # /import/oneapi recognises aiproxy too
        assert again["flavour"] == "aiproxy"
        assert (again["imported"], again["exists"], again["skipped"]) == (0, 5, 1)
        assert (again["tokens"]["imported"], again["tokens"]["exists"]) == (0, 4)
        assert (again["model_configs"]["imported"], again["model_configs"]["exists"]) == (0, 2)
    assert aiproxy_run["after_second"] == aiproxy_run["channels"]
    first = {r["source_id"]: r for r in aiproxy_run["first"]["rows"]}
    for r in aiproxy_run["third"]["rows"]:
        assert sorted(r["channel_ids"]) == sorted(first[r["source_id"]]["channel_ids"])


def test_aiproxy_dry_run_reports_the_same_and_writes_nothing(aiproxy_run: dict[str, Any]) -> None:
    dry, first = aiproxy_run["dry"], aiproxy_run["first"]
    assert dry["dry_run"] is True and aiproxy_run["after_dry"] == ({}, {}, {})
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("channel_ids", "token_ids")} for r in rows]
    for part in (lambda r: r["rows"], lambda r: r["tokens"]["rows"], lambda r: r["model_configs"]["rows"]):
        assert strip(part(dry)) == strip(part(first))


def test_aiproxy_config_yaml_source(tmp_path: Path, app_server: AppServer, upstream: Any) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(AIPROXY_YAML.read_text(encoding="utf-8").replace("http://fake-upstream", upstream.base))
    report = import_(app_server, str(path), "aiproxy")
    assert report["flavour"] == "aiproxy" and report["source"] == str(path.resolve())
    rows = by_name(report["rows"])
    assert [r["source_id"] for r in report["rows"]] == ["-1", "-2", "-3", "-4", "-5"]
    assert {n: r["status"] for n, r in rows.items()} == {"yaml-openai": "imported", "yaml-claude": "imported",
                                                         "yaml-gemini": "imported", "yaml-unknown": "skipped",
                                                         "yaml-typo": "imported"}
    assert rows["yaml-unknown"]["reason"] == "unknown type_name 'no-such-provider'"
    assert any("config" in w for w in rows["yaml-typo"]["warnings"])
    assert any("balance" in w for w in rows["yaml-openai"]["warnings"])
    ch = {n: c[0] for n, c in source_channels(app_server, f"aiproxy:yaml:{path.resolve()}").items()}
    assert {n: (c["type"], c["status"], c["priority"]) for n, c in ch.items()} == {
        "yaml-openai": (1, 1, 10), "yaml-claude": (14, 2, 100), "yaml-gemini": (24, 2, 10), "yaml-typo": (1, 1, 10)}
    assert "did not serve it" in ch["yaml-gemini"]["status_reason"]
    assert ch["yaml-openai"]["model_mapping"] == {"yaml-gpt": "gpt-4o-mini"}
    configs = by_name(report["model_configs"]["rows"])
    assert {n: r["status"] for n, r in configs.items()} == {"yaml-gpt": "imported", "yaml-embed": "imported",
                                                            "yaml-bare": "skipped"}
    assert any("rpm=3500, tpm=80000" in w for w in configs["yaml-gpt"]["warnings"])
    body = app_server.api("GET", "/api/model_configs/all")
    prices = {m["model"]: (m["kind"], m["input_price"], m["output_price"]) for m in body["data"]}
    assert prices["yaml-gpt"] == ("chat", pytest.approx(0.0005), pytest.approx(0.0015))
    assert prices["yaml-embed"] == ("embedding", pytest.approx(0.00002), None)  # 0 is unset: no known price
    # FastGPT calls with the admin key: the imported YAML channel serves it
    answer = app_server.openai().chat.completions.create(model="yaml-gpt", messages=MESSAGES)
    assert answer.choices[0].message.content and upstream.requests("ok")[-1]["headers"]["authorization"] == \
           "Bearer sk-yaml-1"
    again = import_(app_server, str(path), "aiproxy")
    assert (again["imported"], again["exists"], again["skipped"]) == (0, 4, 1)
    assert (again["model_configs"]["imported"], again["model_configs"]["exists"]) == (0, 2)


def test_aiproxy_source_errors(app_server: AppServer, tmp_path: Path) -> None:
    for route in ("aiproxy", "oneapi"):
        resp = app_server.client.post(f"/api/channels/import/{route}", json={
            "dsn": f"postgres://postgres:{SOURCE_PASSWORD}@127.0.0.1:5432/no_such_aiproxy_{RUN}"})
        body = resp.json()
        assert resp.status_code == 400 and body["success"] is False and "database not found" in body["message"]
        assert SOURCE_PASSWORD not in resp.text
    bad = tmp_path / "config.yml"
    bad.write_text("channels:\n  - key: [unclosed\n")
    resp = app_server.client.post("/api/channels/import/aiproxy", json={"dsn": str(bad)})
    assert resp.status_code == 400 and "not valid YAML" in resp.json()["message"]
    resp = app_server.client.post("/api/channels/import/aiproxy", json={"dsn": str(tmp_path / "none.yaml")})
    assert resp.status_code == 400 and "config file not found" in resp.json()["message"]
    resp = app_server.client.post("/api/channels/import/aiproxy", json={"dsn": "x"}, headers={"Authorization": ""})
    assert resp.status_code == 401


def test_aiproxy_sqlite_source(tmp_path: Path, app_server: AppServer, upstream: Any) -> None:
    """aiproxy without SQL_DSN keeps aiproxy.db (SQLite), where GORM writes times as text."""
    path = tmp_path / "aiproxy.db"
    with sqlite3.connect(path) as conn:
        for statement in AIPROXY_POSTGRES_DDL:  # SQLite takes the same column types
            conn.execute(statement)
        conn.execute("""INSERT INTO channels (id, type, "key", name, base_url, models, status, priority, created_at,
            deleted_at) VALUES (1, 1, 'sk-lite-ap', 'aplite-openai', ?, '["aplite-gpt"]', 1, 0,
            '2025-04-01 08:00:00+00:00', NULL), (2, 1, 'sk-x', 'aplite-gone', '', '["x"]', 1, 0, NULL,
            '2025-04-02 09:00:00.123+08:00')""", (upstream.url("ok"),))
        conn.execute("""INSERT INTO tokens (id, "key", name, group_id, status, quota, models, created_at)
            VALUES (1, ?, 'aplite-tok', 'g', 1, 0, '["aplite-gpt"]', '2025-04-01 08:00:00+00:00')""",
                     (ap_key("lite"),))
    report = import_(app_server, str(path), "aiproxy", import_tokens=True)
    assert report["flavour"] == "aiproxy" and (report["imported"], report["skipped"]) == (1, 1)
    assert by_name(report["rows"])["aplite-gone"]["reason"] == "deleted in aiproxy"
    ch = source_channels(app_server, f"aiproxy:sqlite:{path.resolve()}")["aplite-openai"][0]
    assert ch["created_at"] == 1_743_494_400_000
    answer = app_server.openai(api_key="sk-" + ap_key("lite")).chat.completions.create(model="aplite-gpt",
                                                                                       messages=MESSAGES)
    assert answer.choices[0].message.content == reply_text(3)  # the fake upstream's own words
