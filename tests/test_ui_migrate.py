"""Migrate wizard: the /migrate wizard (issue C): source → preview (dry run) → import → summary → test the imported
channels, through NiceGUI's simulated User (no browser).

The source is a one-api SQLite file built here from one-api's DDL (shared/reference/oneapi-newapi-schema.md §1.2).
Its channels point at the fake upstream by host root, without /v1, as one-api stores them; the importer appends
/v1. The User setup (env fixture, login, `ns()`) is shared with test_ui.py through ui_support.py.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from pathlib import Path

from nicegui import ui
from nicegui.testing import User

from oneapi_sources import ONEAPI_SQLITE_DDL
from ui_support import ADMIN_KEY, app_env, eventually, login, ns, state, the  # noqa: F401

SOURCE_PASSWORD = "Sup3r-Secret!pw"  # must never reach a notification or a log line
TOKEN_KEY = "migratedtokenkey0123456789abcdefghijklmnopqrstuv"


def oneapi_sqlite(path: Path, upstream_root: str) -> Path:
    """A one-api database: a working channel, one with an unparsable mapping (and a failing upstream), a type
    this gateway cannot serve (skipped), an auto-disabled one, and one unlimited token."""
    with sqlite3.connect(path) as conn:
        for statement in ONEAPI_SQLITE_DDL:
            conn.execute(statement)
        conn.executemany(
            "INSERT INTO channels (id, type, `key`, status, name, base_url, models, model_mapping, priority) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", [
                (1, 1, "sk-works-0001", 1, "works", f"{upstream_root}/ok", "gpt-4o-mini,text-embedding-3-small", "", 2),
                (2, 1, "sk-badmap-0002", 1, "bad-mapping", f"{upstream_root}/status-401", "gpt-4o-mini",
                 "{not json", 0),
                (3, 38, "deepl-key-0003", 1, "deepl", "", "deepl-en", "", 0),
                (4, 1, "sk-off-0004", 3, "auto-off", f"{upstream_root}/status-500", "gpt-4o-mini", "", 0),
            ])
        conn.execute("INSERT INTO tokens (id, `key`, status, name, unlimited_quota, models) "
                     "VALUES (1, ?, 1, 'app-key', 1, '')", (TOKEN_KEY,))
    return path


def messages(user: User) -> str:
    return "\n".join(user.notify.messages)


# ---- the whole wizard on a SQLite file ----

async def test_wizard_imports_a_sqlite_file_and_tests_the_imported_channels(user: User, upstream, tmp_path) -> None:
    root = upstream.url("ok").removesuffix("/ok/v1")  # one-api keeps host roots: no /v1
    db = oneapi_sqlite(tmp_path / "one-api.db", root)
    await login(user, "/migrate")
    await user.should_see("Import from OneAPI / new-api")
    stepper = the(user, "migrate-stepper")
    assert stepper.value == "source"

    # 1. source: a connection test reads without writing
    the(user, "migrate-kind").value = "sqlite"
    user.find(marker="migrate-path").type(str(db))
    user.find(marker="migrate-test").click()
    await user.should_see("a OneAPI database with 4 channel(s) and 1 API key(s)", retries=100)
    await user.should_see(f"sqlite:///{db.resolve()}")
    assert not state().routes.channels

    # 2. preview: the dry run, one row per source row
    user.find(marker="migrate-to-preview").click()
    await eventually(lambda: stepper.value == "preview")
    await user.should_see("4 channel row(s): 3 to import, 0 already imported, 1 skipped")
    rows = {r["name"]: r for r in the(user, "migrate-preview").rows}
    assert list(rows) == ["works", "bad-mapping", "deepl", "auto-off"]
    works = rows["works"]
    assert (works["action"], works["action_label"], works["provider"]) == ("imported", "Import", "OpenAI")
    assert works["models"] == "gpt-4o-mini\ntext-embedding-3-small" and works["status_label"] == "enabled"
    assert works["source_type"] == "OpenAI · 1"
    assert rows["bad-mapping"]["action"] == "imported"
    assert "model_mapping is not valid JSON" in rows["bad-mapping"]["warnings"]
    assert rows["deepl"]["action"] == "skipped" and rows["deepl"]["action_label"] == "Skip"
    assert rows["deepl"]["reason"].startswith("DeepL") and rows["deepl"]["provider"] == "–"
    assert rows["auto-off"]["status_label"] == "auto-disabled"
    await user.should_not_see(marker="migrate-token-preview")  # keys are opt-in
    user.find(marker="migrate-tokens").click()
    assert [(r["name"], r["action"]) for r in the(user, "migrate-token-preview").rows] == [("app-key", "imported")]
    assert not state().routes.channels and not ns()["list_tokens"](state())  # a dry run writes nothing

    # 3. import (in a thread), 4. summary
    user.find(marker="migrate-import").click()
    await eventually(lambda: stepper.value == "summary")
    await user.should_see("Import finished: 3 channel(s) created")
    counts = {n: the(user, f"migrate-count-{n}").text for n in ("imported", "exists", "skipped")}
    assert counts == {"imported": "3", "exists": "0", "skipped": "1"}
    assert the(user, "migrate-token-summary").text == "API keys: 1 imported, 0 already there, 0 skipped."
    await user.should_see("Channel #3 deepl")  # the skipped row, with its reason beside it
    await user.should_see(rows["deepl"]["reason"])
    imported = the(user, "migrate-imported").rows
    assert [r["name"] for r in imported] == ["works", "bad-mapping", "auto-off"]
    assert all(r["test"] == "" for r in imported)
    assert "sk-works-0001" not in str(imported)  # keys are masked
    routes = {r.name: r for r in state().routes.channels.values()}
    assert routes["works"].base_url == f"{root}/ok/v1" and routes["works"].priority == 2
    assert not routes["auto-off"].enabled
    assert [t["key"] for t in ns()["list_tokens"](state())] == ["sk-" + TOKEN_KEY]  # clients keep their sk- key

    # the test button runs the model-test panel on exactly the imported channels, one model each
    user.find(marker="migrate-run-tests").click()
    await user.should_see("Test the 3 imported channel(s)")
    await user.should_see("Test finished: 1 passed, 2 failed", retries=200)
    await eventually(lambda: the(user, "migrate-works").text == "1 of 3 tested channel(s) work")
    tested = {r["name"]: r for r in the(user, "migrate-imported").rows}
    assert tested["works"]["test_ok"] and re.fullmatch(r"✓ \d+\.\d\d s", tested["works"]["test"])
    assert tested["bad-mapping"]["test"].startswith("✗") and tested["auto-off"]["test"].startswith("✗")
    stored = ns()["get_channel"](state(), tested["works"]["id"])["channel_tests"]
    assert [(t["model"], t["success"]) for t in stored] == [("gpt-4o-mini", True)]
    user.find("Close").click()

    # a second run changes nothing: every row is already there, and Import stays off
    user.find("Import another database").click()
    assert stepper.value == "source"
    user.find(marker="migrate-to-preview").click()
    await eventually(lambda: stepper.value == "preview")
    await user.should_see("0 to import, 3 already imported, 1 skipped")
    assert {r["action"] for r in the(user, "migrate-preview").rows} == {"exists", "skipped"}
    await user.should_see("Nothing new to import")
    assert not the(user, "migrate-import").enabled
    assert len(state().routes.channels) == 3


async def test_upload_saves_the_file_in_the_data_dir_and_picks_it(user: User, upstream, tmp_path) -> None:
    upload_cls = ui.upload.SmallFileUpload
    db = oneapi_sqlite(tmp_path / "source.db", upstream.base)
    await login(user, "/migrate")
    the(user, "migrate-kind").value = "sqlite"
    await the(user, "migrate-upload").handle_uploads([upload_cls("not-a-db.db", "", b"hello, not sqlite")])
    await user.should_see("not-a-db.db is not a SQLite database")
    saved = state().settings.data_path / "imports"
    assert not list(saved.glob("*"))

    await the(user, "migrate-upload").handle_uploads([upload_cls("my one-api.db", "", db.read_bytes())])
    await user.should_see("Uploaded my_one-api.db")
    target = saved / "my_one-api.db"
    assert target.read_bytes() == db.read_bytes() and target.stat().st_mode & 0o077 == 0
    assert the(user, "migrate-path").value == str(target)
    assert list(the(user, "migrate-pick").options) == [str(target)]
    user.find(marker="migrate-test").click()
    await user.should_see("a OneAPI database with 4 channel(s)", retries=100)


async def test_bad_sources_show_clear_errors_without_the_password(user: User, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    await login(user, "/migrate")
    stepper = the(user, "migrate-stepper")
    user.find(marker="migrate-test").click()  # nothing typed: the field says so, nothing is read
    await eventually(lambda: the(user, "migrate-dsn").error == "Required")

    # the password in its own field; nothing listens on port 1
    user.find(marker="migrate-dsn").type("mysql://root@127.0.0.1:1/oneapi")
    user.find(marker="migrate-password").type(SOURCE_PASSWORD)
    user.find(marker="migrate-test").click()
    await user.should_see("cannot reach mysql://root@127.0.0.1:1/oneapi", retries=200)
    assert the(user, "migrate-dsn").error is None

    # a password pasted inside a go-sql-driver DSN moves to the password field on blur
    user.find(marker="migrate-password").clear()
    user.find(marker="migrate-dsn").clear().type(f"root:{SOURCE_PASSWORD}@tcp(127.0.0.1:1)/oneapi")
    user.find(marker="migrate-dsn").trigger("blur")
    await user.should_see("The password moved to the password field")
    assert the(user, "migrate-dsn").value == "root@tcp(127.0.0.1:1)/oneapi"
    assert the(user, "migrate-password").value == SOURCE_PASSWORD
    user.notify.messages.clear()
    user.find(marker="migrate-to-preview").click()
    await eventually(lambda: user.notify.contains("cannot reach mysql://root@127.0.0.1:1/oneapi"))
    assert stepper.value == "source"

    # left in the DSN (no blur): still kept out of the message
    user.find(marker="migrate-password").clear()
    user.find(marker="migrate-dsn").clear().type(f"mysql://root:{SOURCE_PASSWORD}@127.0.0.1:1/oneapi")
    user.notify.messages.clear()
    user.find(marker="migrate-test").click()
    await eventually(lambda: user.notify.contains("cannot reach mysql://root@127.0.0.1:1/oneapi"))

    user.find(marker="migrate-dsn").clear().type("just some words")
    user.find(marker="migrate-test").click()
    await user.should_see("unrecognised dsn")
    the(user, "migrate-kind").value = "sqlite"
    user.find(marker="migrate-path").type("/no/such/one-api.db")
    user.find(marker="migrate-to-preview").click()
    await user.should_see("SQLite file not found: /no/such/one-api.db")
    assert stepper.value == "source" and not state().routes.channels

    assert SOURCE_PASSWORD not in messages(user)
    assert all(SOURCE_PASSWORD not in r.getMessage() for r in caplog.records)


async def test_wizard_speaks_chinese(user: User) -> None:
    await login(user, "/migrate")
    user.find("中文").click()
    await user.should_see("从 OneAPI / new-api 迁移")
    await user.should_see("测试连接")
    await user.should_see("下一步：预览")


def test_dsn_password_helpers() -> None:
    import aiproxy_local as m

    assert m.split_dsn_password("root:p@ss:w@tcp(127.0.0.1:3306)/oneapi") == (
        "root@tcp(127.0.0.1:3306)/oneapi", "p@ss:w")
    assert m.split_dsn_password("mysql://user:p%40ss@host:3306/db?charset=utf8") == (
        "mysql://user@host:3306/db?charset=utf8", "p@ss")
    assert m.split_dsn_password("user:pw@/oneapi") == ("user@/oneapi", "pw")
    for unchanged in ("root@tcp(127.0.0.1:3306)/oneapi", "mysql://host/db", "words", ""):
        assert m.split_dsn_password(unchanged) == (unchanged, "")
    for dsn in ("root@tcp(127.0.0.1:3306)/oneapi", "mysql://user@host:3306/db", "root:old@tcp(h:1)/db"):
        src = m.parse_source_dsn(m.dsn_with_password(dsn, "n3w p@ss/w:rd%"))
        assert src.password == "n3w p@ss/w:rd%" and src.source == m.parse_source_dsn(dsn).source
    assert m.parse_source_dsn(m.dsn_with_password("root:inline@tcp(h:1)/db", "")).password == "inline"
