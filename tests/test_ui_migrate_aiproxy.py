"""Migrate wizard: the /migrate wizard's labring/aiproxy tab (issue 12): FastGPT's AI Proxy as a source, through
NiceGUI's simulated User (no browser).

The source is an aiproxy SQLite file (aiproxy.db, what aiproxy keeps without SQL_DSN) built from aiproxy's GORM
schema (tests/aiproxy_sources.py), and aiproxy's config.yaml (tests/fixtures/). test_import.py covers the same
import from PostgreSQL over HTTP; here it is the tab: its examples, preview (notes, model prices), import,
summary and the test of the imported channels.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from nicegui import ui
from nicegui.testing import User

from aiproxy_sources import AIPROXY_POSTGRES_DDL
from ui_support import app_env, eventually, login, ns, state, the  # noqa: F401

TAB = "labring/aiproxy (FastGPT's AI Proxy)"
TOKEN_KEY = "aiproxytokenkey0123456789abcdefghijklmnopqrstuvw"  # 48 characters, as aiproxy makes them
CONFIG_YAML = Path(__file__).parent / "fixtures" / "aiproxy-config.yaml"


def aiproxy_sqlite(path: Path, upstream: object) -> Path:
    """aiproxy's tables with a working channel, one whose upstream fails, a soft-deleted one, a token limited to
    one model, and two model configs (one with prices per 1M tokens, one with nothing to carry)."""
    with sqlite3.connect(path) as conn:
        for statement in AIPROXY_POSTGRES_DDL:  # SQLite takes the same column types
            conn.execute(statement)
        conn.executemany(
            'INSERT INTO channels (id, type, "key", name, base_url, models, model_mapping, status, priority, sets, '
            "deleted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
                (1, 1, "sk-ap-works", "ap-works", upstream.url("ok"), '["gpt-4o-mini","ap-embed"]', "null", 1, 0,
                 '["default"]', None),
                (2, 1, "sk-ap-fails", "ap-fails", upstream.url("status-500"), '["gpt-4o-mini"]', "null", 1, 100,
                 '["default","vip"]', None),
                (3, 14, "sk-ant-gone", "ap-gone", "", '["claude-3-5-haiku"]', "null", 1, 0, "null",
                 "2025-03-01 00:00:00+00:00"),
            ])
        conn.execute("INSERT INTO groups (id, status) VALUES ('fastgpt', 1)")
        conn.execute('INSERT INTO tokens (id, "key", name, group_id, status, quota, models) '
                     "VALUES (1, ?, 'fastgpt-key', 'fastgpt', 1, 0, '[\"gpt-4o-mini\"]')", (TOKEN_KEY,))
        conn.executemany("INSERT INTO model_configs (model, type, input_price, input_price_unit, rpm) "
                         "VALUES (?, ?, ?, ?, ?)", [("gpt-4o-mini", 1, 0.15, 1_000_000, 60), ("ap-bare", 0, None,
                                                                                              None, None)])
    return path


async def open_tab(user: User) -> None:
    await login(user, "/migrate")
    user.find(TAB).click()
    await user.should_see("Import from labring/aiproxy (FastGPT's AI Proxy)")


async def test_aiproxy_tab_imports_fastgpts_ai_proxy_and_tests_the_channels(user: User, upstream, tmp_path) -> None:
    db = aiproxy_sqlite(tmp_path / "aiproxy.db", upstream)
    await open_tab(user)
    stepper = the(user, "migrate-stepper")
    assert the(user, "migrate-kind").value == "postgres"
    assert the(user, "migrate-dsn").props["placeholder"] == "postgres://postgres:aiproxy@fastgpt-aiproxy-pg:5432/aiproxy"
    await user.should_see("postgres://postgres:aiproxy@127.0.0.1:5433/aiproxy")  # from the host, port published

    # 1. source: the file kind takes aiproxy.db; a connection test reads without writing
    the(user, "migrate-kind").value = "file"
    user.find(marker="migrate-path").type(str(db))
    user.find(marker="migrate-test").click()
    await user.should_see("a labring/aiproxy database with 3 channel(s) and 1 API key(s)", retries=100)
    assert not state().routes.channels

    # 2. preview: one row per source row, the priority note, and the model prices
    user.find(marker="migrate-to-preview").click()
    await eventually(lambda: stepper.value == "preview")
    await user.should_see("3 channel row(s): 2 to import, 0 already imported, 1 skipped")
    rows = {r["name"]: r for r in the(user, "migrate-preview").rows}
    assert (rows["ap-works"]["source_type"], rows["ap-works"]["provider"]) == ("openai · 1", "OpenAI")
    assert rows["ap-works"]["models"] == "gpt-4o-mini\nap-embed" and rows["ap-works"]["status_label"] == "enabled"
    assert "sets default, vip" in rows["ap-fails"]["warnings"]
    assert (rows["ap-gone"]["action"], rows["ap-gone"]["reason"]) == ("skipped", "deleted in aiproxy")
    await user.should_see("priority levels are strict")
    await user.should_see("Model configs and prices: 1 to import, 0 already here, 1 skipped")
    configs = {r["name"]: r for r in the(user, "migrate-config-preview").rows}
    assert configs["gpt-4o-mini"]["action"] == "imported" and "rpm=60" in configs["gpt-4o-mini"]["warnings"]
    assert configs["ap-bare"]["action"] == "skipped"
    user.find(marker="migrate-tokens").click()
    assert [(r["name"], r["action"]) for r in the(user, "migrate-token-preview").rows] == [("fastgpt-key", "imported")]
    assert not state().routes.channels and not state().routes.model_configs  # a dry run writes nothing

    # 3. import, 4. summary
    user.find(marker="migrate-import").click()
    await eventually(lambda: stepper.value == "summary")
    await user.should_see("Import finished: 2 channel(s) created")
    assert the(user, "migrate-config-summary").text == "Model configs: 1 imported, 0 already there, 1 skipped."
    assert the(user, "migrate-token-summary").text == "API keys: 1 imported, 0 already there, 0 skipped."
    routes = {r.name: r for r in state().routes.channels.values()}
    assert (routes["ap-works"].priority, routes["ap-fails"].priority) == (10, 100)
    price = state().routes.model_configs["gpt-4o-mini"]
    assert round(price["input_price"], 8) == 0.00015
    assert [t["key"] for t in ns()["list_tokens"](state())] == ["sk-" + TOKEN_KEY]

    # test imported channels: one model each, through the model-test panel
    user.find(marker="migrate-run-tests").click()
    await user.should_see("Test the 2 imported channel(s)")
    await user.should_see("Test finished: 1 passed, 1 failed", retries=200)
    await eventually(lambda: the(user, "migrate-works").text == "1 of 2 tested channel(s) work")
    user.find("Close").click()

    # a second run changes nothing
    user.find("Import another database").click()
    user.find(marker="migrate-to-preview").click()
    await eventually(lambda: stepper.value == "preview")
    await user.should_see("0 to import, 2 already imported, 1 skipped")
    await user.should_see("Model configs and prices: 0 to import, 1 already here, 1 skipped")
    assert not the(user, "migrate-import").enabled


async def test_aiproxy_tab_takes_an_uploaded_config_yaml(user: User, upstream, tmp_path) -> None:
    upload_cls = ui.upload.SmallFileUpload
    await open_tab(user)
    the(user, "migrate-kind").value = "file"
    await the(user, "migrate-upload").handle_uploads([upload_cls("broken.yaml", "", b"options: {}\n")])
    await user.should_see("broken.yaml is not an aiproxy config.yaml")
    text = CONFIG_YAML.read_text(encoding="utf-8").replace("http://fake-upstream", upstream.base)
    await the(user, "migrate-upload").handle_uploads([upload_cls("config.yaml", "", text.encode())])
    await user.should_see("Uploaded config.yaml")
    target = state().settings.data_path / "imports" / "config.yaml"
    assert the(user, "migrate-path").value == str(target) and target.stat().st_mode & 0o077 == 0

    user.find(marker="migrate-to-preview").click()
    await eventually(lambda: the(user, "migrate-stepper").value == "preview")
    await user.should_see("5 channel row(s): 4 to import, 0 already imported, 1 skipped")
    rows = {r["name"]: r for r in the(user, "migrate-preview").rows}
    assert rows["yaml-claude"]["source_type"] == "anthropic · 14"  # type_name: claude
    assert rows["yaml-gemini"]["status_label"] == "unknown" and "did not serve it" in rows["yaml-gemini"]["warnings"]
    assert rows["yaml-unknown"]["reason"] == "unknown type_name 'no-such-provider'"
    assert not the(user, "migrate-tokens").enabled  # config.yaml holds no API keys
    user.find(marker="migrate-import").click()
    await user.should_see("Import finished: 4 channel(s) created")


async def test_aiproxy_tab_speaks_chinese(user: User) -> None:
    await login(user, "/migrate")
    user.find("中文").click()
    await user.should_see("labring/aiproxy（FastGPT 的 AI Proxy）")  # the page comes back in Chinese
    user.find("labring/aiproxy（FastGPT 的 AI Proxy）").click()
    await user.should_see("从 labring/aiproxy（FastGPT 的 AI Proxy）迁移")
    await user.should_see("config.yaml 或 aiproxy.db")
