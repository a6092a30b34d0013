"""Relay contract; Relay pipeline; Log writer: built-in models from the models.dev snapshot (issue 17 §3), their
limits, prices and retirements, and the cost of every call.

The snapshot (assets/models.json) is made by assets/refresh_models.py; the tests read its numbers through the
gateway's own API (GET /api/models/builtin), then check what a call costs against them, cache reads and writes
included, and that a model config in aiproxy's `price` shape overrides them.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest

from conftest import AppServer, launch_app, unique, wait_logs

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    server = launch_app(tmp_path_factory.mktemp("models"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def builtin(app: AppServer) -> dict[tuple[int, str], dict[str, Any]]:
    body = app.api("GET", "/api/models/builtin")
    assert body["success"], body
    return {(m["channel_type"], m["model"]): m for m in body["data"]}


def test_builtins_come_from_the_snapshot_current_first(app: AppServer, builtin: dict) -> None:
    metas = {int(k): v for k, v in app.api("GET", "/api/channels/type_metas")["data"].items()}
    deepseek = [m["model"] for m in metas[36]["models"]]
    assert deepseek.index("deepseek-v4-flash") < deepseek.index("deepseek-chat")  # current before retired
    assert builtin[(36, "deepseek-chat")]["status"] == "retired" and builtin[(36, "deepseek-chat")]["retired"]
    assert builtin[(36, "deepseek-v4-flash")]["status"] == "current"
    assert all(m["status"] == "retired" for m in metas[36]["models"] if m["model"] in ("deepseek-reasoner",))
    opus = builtin[(14, "claude-opus-4-7")]
    assert opus["max_output"] > 0 and opus["context"] > opus["max_output"] and opus["hand_written"] is False
    assert all(opus["price"][f] > 0 for f in ("input_price", "output_price", "cached_price", "cache_creation_price"))
    # a provider models.dev lacks keeps its hand-written rows, marked
    assert builtin[(18, "generalv3.5")]["hand_written"] is True


def test_cost_counts_cache_reads_and_writes_at_their_prices(app: AppServer, upstream: Any, builtin: dict) -> None:
    """Anthropic reports uncached input, cache reads and cache writes apart: each is charged at its own price
    (USD per 1K tokens), and the row, its detail, the CSV export and the dashboard all show the one cost."""
    model = "claude-opus-4-7"
    price = builtin[(14, model)]["price"]
    app.add_channel(type=14, key="sk-ant-test", base_url=upstream.url("cacheread-1000+cachewrite-200"),
                    models=[model], name=unique("opus"))
    client = anthropic.Anthropic(base_url=app.url, api_key=app.admin_key, max_retries=0)
    answer = client.messages.create(model=model, max_tokens=100, messages=[{"role": "user", "content": "hello there"}])
    usage = answer.usage
    assert (usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (1000, 200)
    want = (usage.input_tokens * price["input_price"] + 1000 * price["cached_price"]
            + 200 * price["cache_creation_price"] + usage.output_tokens * price["output_price"]) / 1000
    (row,) = wait_logs(app, total=1, model_name=model)
    assert row["used_amount"] == pytest.approx(want, rel=1e-9)
    assert row["usage"]["cached_tokens"] == 1000 and row["usage"]["cache_creation_tokens"] == 200
    assert app.api("GET", f"/api/logs/detail/{row['id']}")["data"]["used_amount"] == pytest.approx(want)
    export = app.client.get("/api/logs/export", params={"model_name": model})
    (line,) = list(csv.DictReader(io.StringIO(export.text)))
    assert float(line["used_amount"]) == pytest.approx(want) and line["cache_creation_tokens"] == "200"
    points = app.api("GET", "/api/dashboardv2/", params={"model": model, "timespan": "day"})["data"]
    assert sum(i["used_amount"] for p in points for i in p["summary"]) == pytest.approx(want)


def test_a_model_config_price_in_aiproxys_shape_overrides_the_snapshot(app: AppServer, upstream: Any,
                                                                       builtin: dict) -> None:
    model = "deepseek-v4-flash"
    assert builtin[(36, model)]["price"]["input_price"] is not None
    app.add_channel(type=36, key="sk-ds", base_url=upstream.url(), models=[model], name=unique("ds"))
    body = app.api("POST", f"/api/model_config/{model}",
                   json={"price": {"input_price": 1.0, "input_price_unit": 1000, "output_price": 3.0}})
    assert body["success"], body
    config = app.api("GET", f"/api/model_config/{model}")["data"]
    assert config["price"]["input_price"] == 1.0 and config["price_source"]["input_price"] == "config"
    assert config["price"]["cached_price"] == builtin[(36, model)]["price"]["cached_price"]
    assert config["price_source"]["cached_price"] == "builtin" and config["max_output"] > 0
    usage = app.openai().chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}]).usage
    (row,) = wait_logs(app, total=1, model_name=model)
    assert row["used_amount"] == pytest.approx((usage.prompt_tokens * 1.0 + usage.completion_tokens * 3.0) / 1000)


def test_unknown_price_is_an_empty_cost(app: AppServer, upstream: Any) -> None:
    model = unique("nobody-prices-this")
    app.add_channel(base_url=upstream.url(), models=[model], name=unique("np"))
    app.openai().chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    (row,) = wait_logs(app, total=1, model_name=model)
    assert row["used_amount"] is None and row["usage"]["input_tokens"] > 0
    export = app.client.get("/api/logs/export", params={"model_name": model}).text
    assert list(csv.DictReader(io.StringIO(export)))[0]["used_amount"] == ""


def test_max_tokens_above_the_models_limit_is_clamped(app: AppServer, upstream: Any, builtin: dict) -> None:
    model = "deepseek-v4-pro"
    limit = builtin[(36, model)]["max_output"]
    app.add_channel(type=36, key="sk-ds", base_url=upstream.url("delay-7"), models=[model], name=unique("ds"))
    client = app.openai()
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=limit * 4)
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=100)
    sent = [r["json"].get("max_tokens") for r in upstream.requests("delay-7")]
    assert sent[-2:] == [limit, 100]


def test_refresh_script_builds_the_snapshot_from_a_models_dev_tree(tmp_path: Path) -> None:
    """Without the internet: a tiny models.dev tree (a provider's model inheriting from models/ via base_model)
    becomes rows in aiproxy's units, hand rows marked, retirements applied."""
    tree = tmp_path / "models.dev"
    (tree / "providers" / "deepseek" / "models").mkdir(parents=True)
    (tree / "models" / "deepseek").mkdir(parents=True)
    (tree / "models" / "deepseek" / "deepseek-x.toml").write_text(
        'name = "X"\nrelease_date = "2026-01-01"\n[limit]\ncontext = 100_000\noutput = 8_000\n'
        '[modalities]\ninput = ["text"]\noutput = ["text"]\n')
    (tree / "providers" / "deepseek" / "models" / "deepseek-x.toml").write_text(
        'base_model = "deepseek/deepseek-x"\n[cost]\ninput = 0.5\noutput = 2.0\ncache_read = 0.05\n')
    (tree / "providers" / "deepseek" / "models" / "deepseek-chat.toml").write_text(
        'name = "C"\nrelease_date = "2025-01-01"\n[cost]\ninput = 1\noutput = 1\n[limit]\ncontext = 10\noutput = 5\n')
    out = tmp_path / "models.json"
    subprocess.run([sys.executable, str(ROOT / "assets" / "refresh_models.py"), "--source", str(tree),
                    "--out", str(out)], check=True, capture_output=True)
    snapshot = json.loads(out.read_text())
    rows = {r["model"]: r for r in snapshot["types"]["36"]}
    assert rows["deepseek-x"] == {"model": "deepseek-x", "kind": "chat", "context": 100000, "max_output": 8000,
                                  "input_price": 0.0005, "output_price": 0.002, "cached_price": 0.00005,
                                  "released": "2026-01-01"}
    assert rows["deepseek-chat"]["retired"] == "2026-07-24"  # assets/models_hand.json
    assert [r["model"] for r in snapshot["types"]["36"]] == ["deepseek-x", "deepseek-chat"]  # current first
    assert all(r["hand"] for r in snapshot["types"]["18"])  # Xunfei: not in models.dev
    assert snapshot["_source"]["dataset"] == "models.dev" and snapshot["_source"]["license"] == "MIT"
