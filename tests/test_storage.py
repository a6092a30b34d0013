"""Storage: the database layer.

The storage functions of `aiproxy_local`, called directly, on SQLite, MariaDB and PostgreSQL alike: each test
runs on every backend, in a fresh database of its own kind (`aiproxy_t_<random>` on a server, dropped
afterwards) or one shared by this module's tests that look only at their own rows. Server tests skip when a
server is unreachable, unless the CI environment variable is set: then they fail, so CI cannot pass without
having run them. The last tests run several app instances on one database.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

import aiproxy_local as app
from conftest import BACKENDS, backend_dsn, fresh_database, unique
from aiproxy_local import Channel, LogDetail, LogFilter, LogRow

BIG_MS = 2**41 + 123  # a ms timestamp far beyond 32-bit INTEGER: needs BIGINT on every server

# ---- helpers ----


def sqlite_engine(tmp_path: Path) -> sa.Engine:
    engine = app.make_engine(f"sqlite:///{tmp_path / 'aiproxy.db'}")
    app.create_schema(engine)
    return engine


def log_row(model: str, created_at: int, **extra: Any) -> dict[str, Any]:
    """The columns the log writer fills for one call."""
    return {"request_id": unique("req"), "request_at": created_at - 5, "created_at": created_at,
            "ttfb_milliseconds": 3, "model": model, "actual_model": model, "channel": 1, "code": 200, "mode": 1,
            "endpoint": "/v1/chat/completions", "content": "", "ip": "127.0.0.1", "retry_times": 0, "token_id": 0,
            "token_name": "admin", "input_tokens": 4, "output_tokens": 3, "total_tokens": 7, "cached_tokens": 0,
            "usage_estimated": False, "used_amount": 0.0, "stream": False, **extra}


def insert_logs(engine: sa.Engine, rows: list[dict[str, Any]]) -> None:
    """As the log writer writes them: in one transaction with their summaries, which long ranges count."""
    left = app.LogWriter(engine).write_batch([app.LogEntry({**app.LOG_DEFAULTS, **r}, None, 0) for r in rows])
    assert left == []


def insert_channel(engine: sa.Engine, **fields: Any) -> int:
    values = {"type": 1, "name": unique("ch"), "key": "sk-test", "created_at": app.now_ms(), **fields}
    with engine.begin() as conn:
        return conn.execute(sa.insert(Channel).values(**values)).inserted_primary_key[0]


def all_pages(engine: sa.Engine, flt: LogFilter, per_page: int) -> list[list[dict[str, Any]]]:
    pages, page = [], 1
    while True:
        rows, total = app.query_logs(engine, flt, page, per_page)
        pages.append(rows)
        if page * per_page >= total:
            return pages
        page += 1


def new_engine(dsn: str) -> sa.Engine:
    engine = app.make_engine(dsn)
    app.create_schema(engine)
    return engine


@pytest.fixture(scope="module", params=BACKENDS)
def engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[sa.Engine]:
    """An app engine with the schema on a fresh database of each kind, shared by the tests of this module that
    look only at rows of their own."""
    for dsn in backend_dsn(request.param, tmp_path_factory.mktemp("db")):
        shared = new_engine(dsn)
        yield shared
        shared.dispose()


@pytest.fixture(params=BACKENDS)
def fresh_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    """A database of each kind for one test, for tests that count every row or change the schema."""
    for dsn in backend_dsn(request.param, tmp_path):
        own = new_engine(dsn)
        yield own
        own.dispose()


# ---- SQLite engine and schema ----

def test_sqlite_engine_uses_wal_and_busy_timeout(tmp_path):
    engine = sqlite_engine(tmp_path)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == app.SQLITE_BUSY_TIMEOUT_S * 1000 > 0
    engine.dispose()


def test_create_schema_twice_keeps_tables_and_rows(engine):
    cid = insert_channel(engine, models=["m"])
    app.create_schema(engine)
    tables = set(sa.inspect(engine).get_table_names())
    assert {"channels", "tokens", "logs", "log_details", "model_configs", "channel_tests", "summary_minutes",
            "options", "shared_version"} <= tables
    assert app.select_channels(engine, [Channel.id == cid])[0][0]["models"] == ["m"]


@pytest.mark.parametrize("dsn, driver", [("mysql://root@127.0.0.1:3306/x", "pymysql"),
                                         ("postgres://u@127.0.0.1:5432/x", "psycopg"),
                                         ("postgresql://u@127.0.0.1:5432/x", "psycopg")])
def test_make_engine_picks_the_installed_drivers(dsn, driver):
    engine = app.make_engine(dsn)  # no connection is made
    assert engine.dialect.driver == driver


# ---- timestamps ----

@pytest.mark.parametrize("value, expected", [
    ("1700000000", 1_700_000_000_000),  # 10 digits: seconds
    ("1700000000123", 1_700_000_000_123),  # 13: ms
    ("1700000000123456", 1_700_000_000_123),  # 16: µs
    ("1700000000123456789", 1_700_000_000_123),  # 19: ns
    (1700000000, 1_700_000_000_000),
    (" 1700000000123 ", 1_700_000_000_123),
    ("0", 0),
    ("", None), ("   ", None), (None, None),
])
def test_parse_timestamp_ms(value, expected):
    assert app.parse_timestamp_ms(value) == expected


@pytest.mark.parametrize("value", ["abc", "17e", "12:00", "2024-01-01", "--1", "-5", "1e400", "inf", "nan",
                                   "1" * 25, "1.5", "١٢٣"])
def test_parse_timestamp_ms_rejects_bad_input(value):
    """Storage raises a plain ValueError (the admin API turns it into its 400), never a number that overflows."""
    with pytest.raises(ValueError) as info:
        app.parse_timestamp_ms(value)
    assert value[:20] in str(info.value)


# ---- log queries ----

def test_query_logs_pages_rows_sharing_one_ms(engine):
    model, ms = unique("same-ms"), app.now_ms()
    insert_logs(engine, [log_row(model, ms) for _ in range(25)])
    insert_logs(engine, [log_row(unique("other"), ms) for _ in range(3)])
    pages = all_pages(engine, LogFilter(model=model), per_page=10)
    assert [len(p) for p in pages] == [10, 10, 5]
    ids = [r["id"] for p in pages for r in p]
    assert len(set(ids)) == 25 and ids == sorted(ids, reverse=True), "no duplicates, no omissions, id breaks ties"
    assert app.query_logs(engine, LogFilter(model=model), 4, 10) == ([], 25)


def test_query_logs_newest_first_and_filters(engine):
    model, base = unique("order"), 1_700_000_000_000
    insert_logs(engine, [log_row(model, base + 2000), log_row(model, base, code=500, token_name="t1"),
                         log_row(model, base + 1000, channel=7)])
    rows, total = app.query_logs(engine, LogFilter(model=model), 1, 10)
    assert total == 3 and [r["created_at"] for r in rows] == [base + 2000, base + 1000, base]

    def count(**kw: Any) -> int:
        return app.query_logs(engine, LogFilter(model=model, **kw), 1, 10)[1]

    assert count(code_type="error") == 1 and count(code_type="success") == 2 and count(code_type="all") == 3
    assert count(channel=7) == 1 and count(token_name="t1") == 1
    assert count(start_ms=base + 1000) == 2 and count(end_ms=base + 1000) == 2
    assert count(keyword=rows[0]["request_id"]) == 1 and count(keyword=model) == 3


def test_keyword_pages_merge_each_column_in_time_order(engine):
    """The keyword's OR is read column by column, each from its index: pages are still newest first, disjoint
    and complete, a row matching two columns once."""
    kw, base = unique("kw"), 1_700_000_500_000
    rows = [log_row(kw if i % 3 == 0 else unique("m"), base + i, token_name=kw if i % 2 else "t") for i in range(13)]
    rows = [r for r in rows if kw in (r["model"], r["token_name"])]
    rows.append(log_row(unique("m"), base + 99, request_id=kw))
    insert_logs(engine, rows)
    pages = all_pages(engine, LogFilter(keyword=kw), per_page=3)
    got = [r["created_at"] for p in pages for r in p]
    assert got == sorted((r["created_at"] for r in rows), reverse=True) and len(pages[0]) == 3


def test_long_ranges_are_counted_from_the_rollup_exactly(engine):
    """Over six whole hours or more, count_logs() sums the hourly rollup and counts only the part hours at either
    end in the logs: the same number as counting the rows, for every filter it serves."""
    model, base = unique("count"), app.now_ms() - 3 * 86_400_000
    rows = [log_row(model, base + i * 397_000 + i % 7, channel=1 + i % 3, code=500 if i % 11 == 0 else 200,
                    is_test=i % 29 == 0) for i in range(600)]  # about 66 hours
    insert_logs(engine, rows)
    random = __import__("random").Random(22)
    for _ in range(25):
        start = base + random.randrange(-3_600_000, 60 * 3_600_000)
        end = start + random.randrange(6 * 3_600_000, 80 * 3_600_000)
        for extra in ({}, {"code_type": "error"}, {"code_type": "success"}, {"channel": 2}, {"is_test": False},
                      {"channel": 3, "code_type": "error", "is_test": False}):
            flt = LogFilter(model=model, start_ms=start, end_ms=end, **extra)
            with engine.connect() as conn:
                counted = conn.execute(sa.select(sa.func.count()).select_from(LogRow).where(*flt.where())).scalar()
                assert app._count_from_rollup(conn, dataclasses.replace(flt, code_type="error")
                                              if extra.get("code_type") == "success" else flt) is not None
                assert app.count_logs(conn, flt) == counted, extra


def test_delete_logs_before_removes_rows_and_details(fresh_engine):
    engine = fresh_engine
    model, base = unique("purge"), 1_700_000_000_000
    old, new = log_row(model, base, code=500), log_row(model, base + 10, code=500)
    insert_logs(engine, [old, new])
    with engine.begin() as conn:
        conn.execute(sa.insert(LogDetail), [{"request_id": r["request_id"], "request_body": "{}"} for r in (old, new)])
    assert app.delete_logs_before(engine, base + 10) == 1
    rows, _ = app.query_logs(engine, LogFilter(model=model), 1, 10)
    assert [r["request_id"] for r in rows] == [new["request_id"]]
    with engine.connect() as conn:
        assert conn.execute(sa.select(LogDetail.request_id)).scalars().all() == [new["request_id"]]


# ---- wire shapes ----

def test_channel_to_api_never_returns_null_lists_or_maps(engine):
    cid = insert_channel(engine, models=None, model_mapping=None, config=None, base_url="")
    (ch,), total = app.select_channels(engine, [Channel.id == cid])
    assert total == 1
    assert ch["models"] == [] and ch["model_mapping"] == {} and ch["config"] == {} and ch["channel_tests"] == []
    assert ch["sets"] == ["default"] and ch["base_url"] == ""
    raw = {c: None for c in Channel.__table__.columns.keys()} | {"id": 1, "type": 1, "name": "n", "key": "k"}
    shaped = app.channel_to_api(raw, None)
    assert all(shaped[f] is not None for f in ("models", "model_mapping", "config", "configs", "channel_tests",
                                               "sets", "base_url", "status_reason", "source", "source_id"))


def test_log_to_api_always_has_usage_map(engine):
    model = unique("shape")
    with engine.begin() as conn:
        conn.execute(sa.insert(LogRow).values(model=model, created_at=app.now_ms()))  # every other column default
    (row,), _ = app.query_logs(engine, LogFilter(model=model), 1, 10)
    assert row["usage"] == {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0, "cached_tokens": 0,
                            "cache_creation_tokens": 0}
    assert row["prompt_tokens"] == 0 and row["completion_tokens"] == 0
    assert all(value is not None for value in row.values())


def test_json_columns_store_non_ascii_as_is(engine):
    """JSON is stored unescaped, so the channel search's LIKE finds a non-ASCII model name."""
    model = unique("模型")
    cid = insert_channel(engine, models=[model])
    with engine.connect() as conn:
        as_text = sa.cast(Channel.models, sa.Text)
        assert model in conn.execute(sa.select(as_text).where(Channel.id == cid)).scalar_one()
        assert conn.execute(sa.select(Channel.id).where(as_text.like(f"%{model}%"))).scalars().all() == [cid]


def test_options_roundtrip(fresh_engine):
    app.save_option(fresh_engine, "retry_times", 2)
    app.save_option(fresh_engine, "retry_times", 2)  # same value again: an update, not a duplicate insert
    app.save_option(fresh_engine, "log_retention_days", 7)
    assert app.load_options(fresh_engine) == {"retry_times": 2, "log_retention_days": 7}
    assert app.read_shared_version(fresh_engine) == 3, "each saved option tells the other instances"


def drop_index(conn: sa.Connection, name: str) -> None:
    conn.exec_driver_sql(f"DROP INDEX {name}" + (" ON logs" if conn.dialect.name in ("mysql", "mariadb") else ""))


def test_upgrade_keeps_rows_and_adds_columns_indexes_and_rollups(fresh_engine):
    """A database an older version made (logs without channel_name, is_test and the filters' indexes; summaries
    that count every try as a call, no hourly rollup) gains them all on start-up; its rows stay, reading as the
    defaults, and the summaries are rebuilt from them."""
    engine = fresh_engine
    model, now = unique("old"), app.now_ms()
    dialect = engine.dialect.name
    with engine.begin() as conn:
        for index in sa.inspect(engine).get_indexes("logs"):
            if index["name"] not in ("ix_logs_created_at", "ix_logs_request_id"):
                drop_index(conn, index["name"])
        for column in ("is_test", "channel_name"):
            conn.exec_driver_sql(f"ALTER TABLE logs DROP COLUMN {column}")
        conn.exec_driver_sql("CREATE INDEX ix_logs_model ON logs (model)")
        for column in ("failed_attempts", "failed_attempt_ms"):
            conn.exec_driver_sql(f"ALTER TABLE summary_minutes DROP COLUMN {column}")
        conn.exec_driver_sql("DROP TABLE summary_hours")
        conn.exec_driver_sql("ALTER TABLE shared_version DROP COLUMN summaries")
        trail = '[{"channel_id": 8, "code": 502, "ms": 30, "error": "no"}, {"channel_id": 9, "code": 200, "ms": 9}]'
        old = [log_row(model, now - 1000, request_id=f"r1-{model}", attempts=None),  # the older version's columns
               log_row(model, now - 900, code=500, channel=9, attempts=None),
               log_row(model, now - 800, channel=9, retry_times=1, attempts=trail)]
        conn.execute(sa.insert(sa.table("logs", *map(sa.column, old[2]))), old)
        summary = {"minute": (now - 1000) // 60000 * 60, "channel_id": 9, "model": model,
                   **dict.fromkeys(app._SUMMED, 0), "request_count": 3, "exception_count": 2}
        conn.execute(sa.insert(sa.table("summary_minutes", *map(sa.column, summary))),
                     [summary])  # the older writer counted the failed try as a call of channel 8 too
    app.create_schema(engine)
    indexes = {i["name"] for i in sa.inspect(engine).get_indexes("logs")}
    wanted = {i.name for i in app.LOG_INDEXES if app.index_applies(i, dialect)}
    partial = {"ix_logs_errors", "ix_logs_tests"}  # on MySQL/MariaDB: (code, created_at), (is_test, created_at)
    assert len(wanted) == 7 and (partial <= wanted) == (dialect in ("sqlite", "postgresql"))
    assert wanted <= indexes and "ix_logs_model" not in indexes
    assert {"is_test", "channel_name"} <= {c["name"] for c in sa.inspect(engine).get_columns("logs")}
    rows, total = app.query_logs(engine, LogFilter(model=model), 1, 10)
    assert total == 3 and [r["request_id"] for r in rows][-1] == f"r1-{model}"
    assert (rows[-1]["channel_name"], rows[-1]["is_test"]) == ("", False)
    span = (now - 3_600_000, now)
    calls = app.dashboard_answer(engine, *span, "UTC", "minute", None, model).series
    assert [(i["channel_id"], i["request_count"], i["exception_count"]) for p in calls for i in p["summary"]] == [
        (1, 1, 0), (9, 2, 1)], "rebuilt: calls, on the channel that answered them"
    tried = app.dashboard_answer(engine, *span, "UTC", "hour", 8, model).series
    assert [(i["request_count"], i["exception_count"]) for p in tried for i in p["summary"]] == [(1, 1)]
    insert_logs(engine, [log_row(model, now, channel_name="new", is_test=True)])
    rows, total = app.query_logs(engine, LogFilter(model=model, is_test=True), 1, 10)
    assert total == 1 and rows[0]["channel_name"] == "new"


def test_channel_roundtrip_keeps_big_numbers_and_non_ascii(engine):
    name = unique("通道")
    cid = insert_channel(engine, name=name, key="line-key", models=["Qwen/Qwen2.5-7B", "模型"],
                         model_mapping={"alias": "Qwen/Qwen2.5-7B"}, created_at=BIG_MS, last_test_error_at=BIG_MS,
                         request_count=2**40)
    (ch,), total = app.select_channels(engine, [Channel.id == cid])
    assert total == 1
    assert (ch["name"], ch["key"], ch["created_at"], ch["last_test_error_at"]) == (name, "line-key", BIG_MS, BIG_MS)
    assert ch["models"] == ["Qwen/Qwen2.5-7B", "模型"] and ch["model_mapping"] == {"alias": "Qwen/Qwen2.5-7B"}
    assert ch["request_count"] == 2**40 and ch["config"] == {} and ch["status"] == 1
    found, _ = app.select_channels(engine, [Channel.name == name])
    assert [c["id"] for c in found] == [cid]


def test_log_rows_roundtrip_and_paging_past_32_bits(engine):
    model = unique("srvlog")
    rows = [log_row(model, BIG_MS + i // 2, input_tokens=i) for i in range(7)]  # pairs share one ms
    insert_logs(engine, rows)
    pages = all_pages(engine, LogFilter(model=model), per_page=3)
    assert [len(p) for p in pages] == [3, 3, 1]
    got = [r for p in pages for r in p]
    assert len({r["id"] for r in got}) == 7
    assert [r["created_at"] for r in got] == sorted((r["created_at"] for r in rows), reverse=True)
    assert max(r["id"] for r in got) > 0 and got[0]["request_at"] == BIG_MS + 3 - 5
    assert sorted(r["usage"]["input_tokens"] for r in got) == list(range(7))
    flt = LogFilter(model=model, start_ms=BIG_MS + 1, end_ms=BIG_MS + 2, code_type="success")
    assert app.query_logs(engine, flt, 1, 10)[1] == 4
    assert app.query_logs(engine, LogFilter(keyword=rows[0]["request_id"]), 1, 10)[1] == 1


def test_upserts_of_an_unchanged_row(engine):
    """An UPDATE that changes nothing must still count as a match (MySQL reports 0 affected rows by default),
    or the upsert falls through to a duplicate INSERT."""
    key = unique("opt")[:60]
    for _ in range(2):
        with engine.begin() as conn:
            conn.execute(sa.delete(app.Option).where(app.Option.key == key))
        app.save_option(engine, key, 5)
        app.save_option(engine, key, 5)
        assert app.load_options(engine)[key] == 5
    cid = insert_channel(engine)
    result = {"channel_id": cid, "model": "m", "actual_model": "m", "test_at": BIG_MS, "took": 0.1, "success": True,
              "code": 200, "response": "ok"}
    app.save_channel_test(engine, result)
    app.save_channel_test(engine, result)
    (ch,), _ = app.select_channels(engine, [Channel.id == cid])
    assert [(t["model"], t["test_at"], t["success"]) for t in ch["channel_tests"]] == [("m", BIG_MS, True)]


def test_delete_logs_before_works_in_chunks(fresh_engine, monkeypatch):
    engine = fresh_engine
    monkeypatch.setattr(app, "LOG_DELETE_CHUNK", 7)
    with engine.begin() as conn:
        conn.execute(app.sa.insert(app.LogRow), [{"request_id": f"r{i}", "created_at": 1000 + i} for i in range(30)])
    assert app.delete_logs_before(engine, 1025) == 25
    with engine.connect() as conn:
        left = conn.execute(app.sa.select(app.LogRow.created_at).order_by(app.LogRow.created_at)).scalars().all()
    assert left == [1025, 1026, 1027, 1028, 1029]


# ---- several instances on one database ----

@pytest.fixture(params=BACKENDS)
def shared_dsn(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database of each kind for instances that share it (SQLite: one file, separate data dirs)."""
    yield from backend_dsn(request.param, tmp_path)


def test_instances_see_each_others_changes_without_a_restart(shared_dsn, start_app, upstream, tmp_path):
    """Channels, tokens, model configs and options changed through A reach B's relay and API (issue 10:
    B kept routing to a channel A had disabled, and never saw A's new channels)."""
    a = start_app(env={"SQL_DSN": shared_dsn}, args=["--no-ui"], data_dir=tmp_path / "a")
    b = start_app(env={"SQL_DSN": shared_dsn}, args=["--no-ui"], data_dir=tmp_path / "b", admin_key=a.admin_key)
    model, hidden = unique("shared"), unique("hidden")
    channel = a.add_channel(base_url=upstream.url("ok"), models=[model, hidden])
    token = a.api("POST", "/api/tokens/", json={"name": unique("tok")})["data"]["key"]
    assert a.api("POST", f"/api/model_config/{hidden}", json={"enabled": False})["success"]
    assert a.api("PUT", "/api/option/", json={"key": "retry_times", "value": 1})["success"]

    def b_sees(check: Callable[[], bool], what: str) -> float:
        started = time.monotonic()
        while not check():
            assert time.monotonic() - started < 10, f"B never saw {what}"
            time.sleep(0.05)
        return time.monotonic() - started

    def b_models(key: str) -> list[str]:
        answer = httpx.get(f"{b.url}/v1/models", headers={"Authorization": f"Bearer {key}"})
        return [m["id"] for m in answer.json()["data"]] if answer.status_code == 200 else []

    waited = b_sees(lambda: b_models(a.admin_key) == sorted([model]), "the new channel and the disabled model")
    b_sees(lambda: model in b_models(token), "the new token")
    b_sees(lambda: b.api("GET", "/api/option/")["data"]["retry_times"] == 1, "the option")
    assert a.api("POST", f"/api/channel/{channel}/status", json={"status": 2})["success"]

    def b_refuses() -> bool:
        answer = httpx.post(f"{b.url}/v1/chat/completions", headers=b.headers, timeout=30,
                            json={"model": model, "messages": [{"role": "user", "content": "hi"}]})
        return answer.status_code != 200
    waited = max(waited, b_sees(b_refuses, "the disabled channel"))
    print(f"B saw A's changes after {waited:.2f} s at most")


@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_a_sqlite_database_moves_to_a_server_with_everything_in_it(kind, start_app, upstream):
    """README, "Run several instances": copy_database() carries channels, keys, logs and counters over, and the
    server hands out fresh ids after the copied ones."""
    first = start_app(args=["--no-ui"])
    model = unique("move")
    channel = first.add_channel(base_url=upstream.url("ok"), models=[model])
    token = first.api("POST", "/api/tokens/", json={"name": unique("tok")})["data"]["key"]
    client = first.openai(api_key=token)
    for _ in range(3):
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    first.stop()
    for dsn in fresh_database(kind):
        copied = app.copy_database(first.dsn, dsn)
        assert copied["channels"] == 1 and copied["logs"] == 3 and copied["tokens"] == 1
        with pytest.raises(ValueError, match="not empty"):
            app.copy_database(first.dsn, dsn)
        moved = start_app(args=["--no-ui"], env={"SQL_DSN": dsn}, admin_key=first.admin_key)
        assert [c["id"] for c in moved.channels()] == [channel]
        assert moved.api("GET", f"/api/channel/{channel}")["data"]["request_count"] == 3
        assert moved.api("GET", "/api/logs/", params={"model_name": model})["data"]["total"] == 3
        moved.openai(api_key=token).chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
        assert moved.add_channel(base_url=upstream.url("ok"), models=[model]) == channel + 1
        moved.stop()


def test_upgrade_adds_the_channel_proxy_columns_and_keeps_channels(fresh_engine):
    """A channels table from before proxy_url and skip_tls_verify (aiproxy's names) gains both on start-up, on
    every backend; its channels stay, with no proxy and TLS verified, and the new columns then store values."""
    engine = fresh_engine
    name = unique("pre-proxy")
    with engine.begin() as conn:
        for column in ("proxy_url", "skip_tls_verify"):
            conn.exec_driver_sql(f"ALTER TABLE channels DROP COLUMN {column}")
        old = {c.name: c.default.arg for c in Channel.__table__.columns if c.default is not None and c.default.is_scalar
               and c.name not in ("proxy_url", "skip_tls_verify")}  # the columns the older version wrote
        old.update(type=1, name=name, key="sk-old", created_at=app.now_ms())
        conn.execute(sa.insert(sa.table("channels", *map(sa.column, old))).values(old))
    app.create_schema(engine)
    cid = next(c["id"] for c in app.select_channels(engine, [Channel.name == name])[0])
    (ch,), _ = app.select_channels(engine, [Channel.id == cid])
    assert (ch["name"], ch["key"], ch["proxy_url"], ch["skip_tls_verify"]) == (name, "sk-old", "", False)
    with engine.begin() as conn:
        conn.execute(sa.update(Channel).where(Channel.id == cid).values(
            proxy_url="socks5://u:p@127.0.0.1:1080", skip_tls_verify=True))
    (ch,), _ = app.select_channels(engine, [Channel.id == cid])
    assert (ch["proxy_url"], ch["skip_tls_verify"]) == ("socks5://u:p@127.0.0.1:1080", True)
