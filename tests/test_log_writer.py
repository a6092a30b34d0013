"""Log writer: batched inserts off the request path, per-minute summaries, counters, drain on stop;
a row the database refuses never costs the rest of its batch (on SQLite, MariaDB and PostgreSQL)."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

import aiproxy_local as app
from conftest import BACKENDS, answered_ids_under_load, backend_dsn, fresh_database, logged_ids, make_state, unique


def entry(created_at: int, code: int = 200, channel: int = 1, model: str = "m", tokens: int = 10,
          is_test: bool = False) -> app.LogEntry:
    row = {"request_id": f"r{created_at}-{code}-{channel}", "request_at": created_at - 100, "created_at": created_at,
           "ttfb_milliseconds": 40, "model": model, "actual_model": model, "channel": channel,
           "channel_name": f"ch{channel}", "code": code, "mode": 1, "is_test": is_test,
           "endpoint": "/v1/chat/completions", "content": "", "ip": "127.0.0.1", "retry_times": 0, "token_id": 0,
           "token_name": "admin", "input_tokens": tokens, "output_tokens": tokens, "total_tokens": 2 * tokens,
           "cached_tokens": 0, "usage_estimated": False, "used_amount": 0.0, "stream": False}
    detail = None if code == 200 else {"request_id": row["request_id"], "request_body": "{}", "response_body": "x",
                                       "request_body_truncated": False, "response_body_truncated": False}
    return app.LogEntry(row, detail, 0)


async def test_submit_never_writes_inline_and_stop_drains(tmp_path):
    state = make_state(tmp_path)
    state.writer.start()
    minute = 1_700_000_040_000
    for i in range(1234):
        state.writer.submit(entry(minute + i, code=200 if i % 10 else 500))
    assert state.writer.written == 0  # nothing was written inside submit()
    await state.writer.stop()
    assert state.writer.written == 1234 and state.writer.neutralised == 0 and state.writer.pending == []
    rows, total = app.query_logs(state.engine, app.LogFilter(), 1, 10)
    assert total == 1234
    errors, total_errors = app.query_logs(state.engine, app.LogFilter(code_type="error"), 1, 100)
    assert total_errors == 124


async def test_small_batches_appear_within_the_flush_interval(tmp_path):
    state = make_state(tmp_path)
    state.writer.start()
    state.writer.submit(entry(1_700_000_000_000))
    for _ in range(30):
        await asyncio.sleep(0.1)
        if state.writer.written:
            break
    assert state.writer.written == 1
    await state.writer.stop()


def test_summaries_are_per_minute_channel_and_model(tmp_path):
    state = make_state(tmp_path)
    base = 1_700_000_040_000  # a minute boundary
    state.writer.write_batch([entry(base), entry(base + 1000, code=502), entry(base + 61_000), entry(base, channel=2)])
    state.writer.write_batch([entry(base + 2000, tokens=5)])  # a second batch adds to the same minute
    rows = {(r["minute"], r["channel_id"]): r for r in app.query_summaries(state.engine, 0, 2**40, None, "")}
    first = rows[(base // 1000, 1)]
    assert first["request_count"] == 3 and first["exception_count"] == 1
    assert first["input_tokens"] == 25 and first["total_tokens"] == 50
    assert first["total_time_milliseconds"] == 300 and first["total_ttfb_milliseconds"] == 120
    assert rows[(base // 1000 + 60, 1)]["request_count"] == 1
    assert rows[(base // 1000, 2)]["request_count"] == 1


def failover(created_at: int, failed: list[int], channel: int, code: int = 200, model: str = "m") -> app.LogEntry:
    """A call that failed on the channels `failed`, one try each, before `channel` gave its answer `code`."""
    e = entry(created_at, code=code, channel=channel, model=model)
    trail = [{"channel_id": ch, "code": 502, "ms": 70, "error": "bad gateway"} for ch in failed]
    trail.append({"channel_id": channel, "code": code, "ms": 100, **({"error": "no"} if code != 200 else {})})
    e.row.update(retry_times=len(failed), attempts=app.orjson.dumps(trail).decode(),
                 request_id=f"f{created_at}-{channel}")
    return app.LogEntry(e.row, e.detail, len(failed))


def mixed_traffic(base: int) -> list[app.LogEntry]:
    """Three hours and a bit of calls on three channels and two models: failures, failovers, model tests."""
    out = []
    for i in range(400):
        at = base + i * 31_000  # past hour and day boundaries
        if i % 9 == 0:
            out.append(failover(at, [1 + i % 3], 1 + (i + 1) % 3, model="m2" if i % 2 else "m"))
        elif i % 13 == 0:
            out.append(failover(at, [2, 3], 1, code=503))  # every channel failed
        else:
            out.append(entry(at, code=500 if i % 17 == 0 else 200, channel=1 + i % 3, model="m2" if i % 5 else "m",
                             tokens=i, is_test=i % 23 == 0))
            out[-1].row["request_id"] += f"-{i}"
    return out


def dash(state: app.AppState, start: int, end: int, **kw) -> tuple[int, int, int]:
    answer = app.dashboard_answer(state.engine, start, end, **kw)
    items = [i for b in answer.series for i in b["summary"]]
    return (sum(i["request_count"] for i in items), sum(i["exception_count"] for i in items),
            sum(i["total_tokens"] for i in items))


def logs_total(state: app.AppState, **kw) -> int:
    return app.query_logs(state.engine, app.LogFilter(**kw), 1, 1)[1]


@pytest.mark.parametrize("timespan, timezone", [("minute", "UTC"), ("hour", "Asia/Shanghai"), ("day", "UTC"),
                                                ("hour", "Asia/Kolkata"), ("day", "America/New_York")])
def test_the_rollups_equal_the_logs_calls_overall_and_tries_per_channel(tmp_path, timespan, timezone):
    state = make_state(tmp_path)
    base = app.now_ms() // 3_600_000 * 3_600_000 - 2 * 3_600_000 - 17_000  # recent: per-minute rows are kept
    batch = mixed_traffic(base)
    state.writer.write_batch(batch[:150])
    state.writer.write_batch(batch[150:])  # a second batch adds to the same minutes and hours
    start, end = base - 60_000, base + 400 * 31_000
    calls, errors, tokens = dash(state, start, end, timezone_name=timezone, timespan=timespan)
    assert calls == logs_total(state, start_ms=start, end_ms=end, is_test=False) == sum(
        not e.row["is_test"] for e in batch)
    assert errors == logs_total(state, start_ms=start, end_ms=end, is_test=False, code_type="error")
    assert tokens == sum(e.row["total_tokens"] for e in batch if not e.row["is_test"])
    for ch in (1, 2, 3):  # a channel's own figures: its calls and every try it failed for another one
        tries = sum(e.row["channel"] == ch for e in batch if not e.row["is_test"]) + sum(
            a["channel_id"] == ch for e in batch if not e.row["is_test"] for a in app.failed_attempts(e.row))
        ch_calls, ch_errors, _ = dash(state, start, end, timezone_name=timezone, timespan=timespan, channel=ch)
        assert ch_calls == tries and ch_errors == logs_total(
            state, start_ms=start, end_ms=end, is_test=False, code_type="error", channel=ch) + tries - sum(
            e.row["channel"] == ch for e in batch if not e.row["is_test"])


def test_rebuild_summaries_gives_what_the_writer_wrote(tmp_path):
    state = make_state(tmp_path)
    base = app.now_ms() // 3_600_000 * 3_600_000 - 5 * 86_400_000 - 17_000  # minutes pruned for the older part
    for start in range(0, 400, 50):
        state.writer.write_batch(mixed_traffic(base)[start:start + 50])
    recent = base + 5 * 86_400_000 - 3_600_000
    state.writer.write_batch([entry(recent + i * 1000, channel=2) for i in range(30)])
    app.prune_summaries(state.engine)

    def stored() -> tuple[list, list]:
        with state.engine.connect() as conn:
            hours = [tuple(r) for r in conn.execute(sa.select(app.SummaryHour).order_by(
                app.SummaryHour.hour, app.SummaryHour.channel_id, app.SummaryHour.model))]
            minutes = [tuple(r) for r in conn.execute(sa.select(app.SummaryMinute).order_by(
                app.SummaryMinute.minute, app.SummaryMinute.channel_id, app.SummaryMinute.model))]
        return hours, minutes

    written = stored()
    assert written[0] and written[1] and min(r[0] for r in written[1]) >= app.minute_cutoff_s()
    with state.engine.begin() as conn:  # a crash, say, lost them
        conn.execute(sa.delete(app.SummaryHour))
        conn.execute(sa.delete(app.SummaryMinute))
    hours = (base // 3_600_000 * 3_600_000, app.now_ms() // 3_600_000 * 3_600_000 - 1)
    assert dash(state, *hours)[0] == 0
    app.rebuild_summaries(state.engine)
    assert dash(state, *hours)[0] == logs_total(state, start_ms=hours[0], end_ms=hours[1], is_test=False) == 30 + sum(
        not e.row["is_test"] for e in mixed_traffic(base))
    assert stored() == written


def test_retention_prunes_minutes_after_days_and_hours_with_their_logs(tmp_path):
    state = make_state(tmp_path)
    now = app.now_ms()
    old = now // 3_600_000 * 3_600_000 - 10 * 86_400_000 + 1_800_000  # half past an hour, ten days ago
    state.writer.write_batch([entry(old + i * 60_000, channel=1 + i % 2) for i in range(120)]  # two hours of calls
                             + [entry(now - 60_000 + i, channel=3) for i in range(5)])
    with state.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.min(app.SummaryMinute.minute))).scalar_one() < app.minute_cutoff_s()
    app.prune_summaries(state.engine)  # what the retention loop does every round
    with state.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.min(app.SummaryMinute.minute))).scalar_one() >= app.minute_cutoff_s()
    assert dash(state, old - 3_600_000, now)[0] == 125, "the hourly rollup still has the old calls"
    cut = old + 50 * 60_000  # within the second hour: its first minutes go, the rest stay
    assert app.delete_logs_before(state.engine, cut) == 50
    assert dash(state, old - 3_600_000, now, timespan="day")[0] == 75 == logs_total(state)
    assert dash(state, old - 3_600_000, cut + 3_600_000)[0] == 61 == logs_total(state, end_ms=cut + 3_600_000)
    with state.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.min(app.SummaryHour.hour))).scalar_one() == cut // 3_600_000 * 3600


def test_minute_buckets_over_long_ranges_are_answered_by_the_hour_and_say_so(tmp_path):
    state = make_state(tmp_path)
    now = app.now_ms()
    state.writer.write_batch([entry(now - i * 3_600_000) for i in range(1, 80)])
    short = app.dashboard_answer(state.engine, now - 86_400_000, now, "UTC", "minute")
    assert short.timespan == "minute" and not short.note
    long = app.dashboard_answer(state.engine, now - 30 * 86_400_000, now, "UTC", "minute")
    assert long.timespan == "hour" and "by the hour" in long.note
    assert all(p["timestamp"] % 3600 == 0 for p in long.series)
    assert sum(i["request_count"] for p in long.series for i in p["summary"]) == 79 == logs_total(state)
    old = app.dashboard_answer(state.engine, now - 5 * 86_400_000, now - 4 * 86_400_000, "UTC", "minute")
    assert old.timespan == "hour" and "kept" in old.note


def test_channel_counters_follow_the_log(tmp_path):
    state = make_state(tmp_path)
    ids = app.create_channels(state, [app.ChannelIn(type=1, name="c", key="k", models=["m"])])
    state.writer.write_batch([entry(1_700_000_000_000, channel=ids[0]) for _ in range(3)])
    assert app.get_channel(state, ids[0])["request_count"] == 3


def test_model_tests_stay_out_of_counters_and_summaries_but_are_logged(tmp_path):
    state = make_state(tmp_path)
    ids = app.create_channels(state, [app.ChannelIn(type=1, name="c", key="k", models=["m"])])
    base = 1_700_000_040_000
    state.writer.write_batch([entry(base, channel=ids[0]), entry(base + 1, channel=ids[0], is_test=True)])
    assert app.get_channel(state, ids[0])["request_count"] == 1
    (summary,) = app.query_summaries(state.engine, 0, 2**40, ids[0], "")
    assert summary["request_count"] == 1
    assert app.query_logs(state.engine, app.LogFilter(), 1, 10)[1] == 2
    (test_row,), _ = app.query_logs(state.engine, app.LogFilter(is_test=True), 1, 10)
    assert test_row["is_test"] is True and test_row["channel_name"] == f"ch{ids[0]}"


def test_failed_calls_keep_bodies(tmp_path):
    state = make_state(tmp_path)
    state.writer.write_batch([entry(1_700_000_000_000, code=500)])
    (row,), _ = app.query_logs(state.engine, app.LogFilter(), 1, 10)
    assert app.log_detail(state, row["id"])["response_body"] == "x"


# ---- rows the database refuses ----

@pytest.fixture(scope="module", params=BACKENDS)
def engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[sa.Engine]:
    """An app engine with the schema on a fresh database of each kind, shared by this module's tests."""
    for dsn in backend_dsn(request.param, tmp_path_factory.mktemp("db")):
        engine = app.make_engine(dsn)
        app.create_schema(engine)
        yield engine
        engine.dispose()


def logs_of(engine: sa.Engine, model_prefix: str) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(
            sa.select(app.LogRow).where(app.LogRow.request_id.like(f"{model_prefix}%")).order_by(app.LogRow.id))]


def poisoned_batch(prefix: str, channel: int, model: str) -> list[app.LogEntry]:
    """Ten calls; three carry a value some database refuses: a token count beyond 64 bits (every driver or
    server refuses it), a NaN amount (a failed call on a model priced at infinity: 0 tokens x inf), a NUL in
    the model name (PostgreSQL). The issue saw such a batch dropped whole."""
    batch = []
    for i in range(10):
        e = entry(1_700_000_040_000 + i, code=500 if i % 3 == 0 else 200, channel=channel, model=model, tokens=i + 1)
        e.row["request_id"] = f"{prefix}-{i}"
        if e.detail:
            e.detail["request_id"] = e.row["request_id"]
        batch.append(e)
    batch[2].row.update(input_tokens=2**70)
    batch[5].row.update(used_amount=math.nan)
    batch[7].row.update(model=model + "\x00", actual_model=model + "\x00")
    return batch


def test_a_refused_row_is_stored_neutralised_and_its_batch_is_written(engine, caplog):
    state = make_state(None, engine)
    model, prefix = unique("poison"), unique("req")
    (cid,) = app.create_channels(state, [app.ChannelIn(type=1, name=unique("c"), key="k", models=[model])])
    batch = poisoned_batch(prefix, cid, model)
    with caplog.at_level(logging.WARNING, logger="aiproxy_local"):
        assert state.writer.write_batch(batch) == []
    rows = logs_of(engine, prefix)
    assert [r["request_id"] for r in rows] == sorted(e.row["request_id"] for e in batch), "every call has its row"
    big = next(r for r in rows if r["request_id"] == f"{prefix}-2")
    assert big["input_tokens"] == 0 and "refused by the database" in big["content"] and "input_tokens=" in big["content"]
    refused = [r for r in rows if "refused by the database" in r["content"]]
    assert 1 <= len(refused) <= 3 and state.writer.neutralised == len(refused) and state.writer.written == 10
    assert all("refused" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    untouched = [r for r in rows if r not in refused]
    assert all(r["input_tokens"] == int(r["request_id"].rsplit("-", 1)[1]) + 1 for r in untouched)
    # the summaries and the channel's counters add up what was written, neutralised values included
    summaries = app.query_summaries(engine, 0, 2**40, cid, "")
    assert sum(s["request_count"] for s in summaries) == 10
    assert sum(s["input_tokens"] for s in summaries) == sum(r["input_tokens"] for r in rows)
    assert sum(s["exception_count"] for s in summaries) == sum(r["code"] != 200 for r in rows) == 4
    assert app.get_channel(state, cid)["request_count"] == 10
    for r in rows:  # the failed calls keep their bodies
        if r["code"] != 200:
            assert app.log_detail(state, r["id"])["response_body"] == "x"


def test_an_infinite_price_never_makes_the_sums_infinite(engine):
    """A price saved as 1e400 by an older version (SQLite and PostgreSQL store it; MariaDB cannot): calls on
    that model are logged, with an amount of 0."""
    state = make_state(None, engine)
    model = unique("inf-price")
    state.routes.model_configs[model] = {"model": model, "enabled": True, "kind": "", "input_price": math.inf,
                                         "output_price": 0.0}
    call = app.RelayCall(request_id=unique("r"), started=1_700_000_000.0, endpoint="/v1/chat/completions",
                         route=app.RELAY_ROUTES["/v1/chat/completions"], model=model, body=b"{}",
                         obj={}, content_type="application/json", caller=app.ADMIN_CALLER)
    for usage in (app.Usage(0, 5, 5), app.Usage(5, 5, 10)):  # 0 x inf = nan and 5 x inf = inf
        outcome = app.Outcome(200, usage, b"")
        outcome.used_amount = app.charge(state, call, usage)  # the relay prices a call, the writer stores it
        e = app.make_log_entry(call, app.Attempt(None, None, outcome.code), outcome)
        assert e.row["used_amount"] == 0.0
        assert state.writer.write_batch([e]) == []


def test_an_unreachable_database_keeps_the_rows_for_the_next_round(tmp_path):
    state = make_state(tmp_path)
    batch = [entry(1_700_000_000_000 + i) for i in range(5)]
    broken = app.make_engine(f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}")  # cannot even be created
    state.writer.engine = broken
    assert state.writer.write_batch(batch) == batch and state.writer.written == 0
    state.writer.engine = state.engine
    assert state.writer.write_batch(batch) == [] and state.writer.written == 5


async def test_rows_left_by_a_failed_round_are_written_by_the_next(tmp_path):
    state = make_state(tmp_path)
    good = state.writer.engine
    state.writer.engine = app.make_engine(f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}")
    state.writer.start()
    for i in range(3):
        state.writer.submit(entry(1_700_000_000_000 + i))
    assert await state.writer.flush() is False and len(state.writer.pending) == 3
    state.writer.engine = good
    await state.writer.stop()
    assert state.writer.written == 3 and app.query_logs(state.engine, app.LogFilter(), 1, 10)[1] == 3


def test_concurrent_writers_never_lose_rows_to_deadlocks(engine):
    """Two writers (as two instances would) write batches touching the same summary rows and channels in
    opposite orders, at once: every row and every count arrives."""
    state = make_state(None, engine)
    models = [unique("dl") for _ in range(6)]
    channels = [app.create_channels(state, [app.ChannelIn(type=1, name=unique("c"), key="k", models=models)])[0]
                for _ in range(3)]
    prefix = unique("dl")
    writers = [app.LogWriter(engine), app.LogWriter(engine)]
    batches: list[list[list[app.LogEntry]]] = [[], []]
    for w in range(2):
        for b in range(6):
            batch = []
            for i, (ch, model) in enumerate((ch, m) for ch in channels for m in models):
                e = entry(1_700_000_040_000 + b, channel=ch, model=model)
                e.row["request_id"] = f"{prefix}-{w}-{b}-{i}"
                batch.append(e)
            batches[w].append(batch if w == 0 else batch[::-1])
    left: list[list[app.LogEntry]] = [[], []]

    def run(w: int) -> None:
        for batch in batches[w]:
            left[w] += writers[w].write_batch(batch)
        while left[w]:  # what meets a lasting conflict waits for the next round, as flush() does
            left[w] = writers[w].write_batch(left[w])

    threads = [threading.Thread(target=run, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    expected = 2 * 6 * len(channels) * len(models)
    assert len(logs_of(engine, prefix)) == expected and writers[0].written + writers[1].written == expected
    summaries = [s for ch in channels for s in app.query_summaries(engine, 0, 2**40, ch, "")]
    assert sum(s["request_count"] for s in summaries) == expected
    assert sum(app.get_channel(state, ch)["request_count"] for ch in channels) == expected


def test_upsert_inserts_adds_and_replaces(engine):
    key = unique("opt")[:60]
    app.save_option(engine, key, 1)
    app.save_option(engine, key, 2)  # replaced
    assert app.load_options(engine)[key] == 2
    minute, model = 1_700_000_000, unique("up")
    row = {"minute": minute, "channel_id": 9, "model": model, **{n: 1 for n in app._SUMMED}}
    for _ in range(3):
        with engine.begin() as conn:
            app.upsert(conn, app.SummaryMinute.__table__, [row], ("minute", "channel_id", "model"), add=app._SUMMED)
    (summary,) = app.query_summaries(engine, minute, minute, 9, model)
    assert summary["request_count"] == 3 and summary["used_amount"] == 3.0


# ---- the journal: answered calls keep their rows through kill -9 ----

def crash(writer: app.LogWriter) -> None:
    """What kill -9 leaves: the journal's files, with no flush and no close (the OS drops the lock)."""
    os.close(writer.journal._fd)
    os.close(writer.journal._lock_fd)


def test_start_up_replays_the_rows_a_crashed_instance_journaled(tmp_path):
    state = make_state(tmp_path)
    live = app.LogWriter(state.engine)  # an instance still running on the same data dir: left alone
    live.open_journal(tmp_path / "journal")
    live.submit(entry(1_700_000_000_200))
    crashed = app.LogWriter(state.engine)
    crashed.open_journal(tmp_path / "journal")
    batch = [entry(1_700_000_000_000 + i, code=500 if i == 3 else 200) for i in range(10)]
    for e in batch:
        crashed.submit(e)
    crashed.write_batch(batch[:4])  # committed, but the crash came before the journal was trimmed
    crashed.submit(entry(1_700_000_000_100))
    batch[5].row["input_tokens"] = 2**70  # a row the database will refuse is replayed like any other
    crash(crashed)
    with open(tmp_path / "journal" / f"{crashed.journal.instance}-0.jsonl", "ab") as f:
        f.write(b'{"row": {"request_id": "cut-off-by-the-cr')  # a line the crash cut short

    writer = app.LogWriter(state.engine)
    assert writer.open_journal(tmp_path / "journal") == 7  # 11 journaled, 4 already in the database
    assert writer.write_batch(writer.pending) == []
    _, total = app.query_logs(state.engine, app.LogFilter(), 1, 100)
    assert total == 11 and writer.neutralised == 0  # the journal holds the row as it was submitted
    files = {p.name.split("-")[0] for p in (tmp_path / "journal").glob("*.jsonl")}
    assert files == {live.journal.instance, writer.journal.instance}, "the crashed instance's files are gone"
    (row,), _ = app.query_logs(state.engine, app.LogFilter(code_type="error"), 1, 10)
    assert app.log_detail(state, row["id"])["response_body"] == "x"


async def test_the_journal_is_trimmed_after_each_commit_and_empty_after_a_clean_stop(tmp_path):
    state = make_state(tmp_path)
    state.writer.open_journal(tmp_path / "journal")
    state.writer.start()
    for i in range(5):
        state.writer.submit(entry(1_700_000_000_000 + i))
    lines = sum(len(p.read_bytes().splitlines()) for p in (tmp_path / "journal").glob("*.jsonl"))
    assert lines == 5, "each row is in the journal as soon as it is submitted"
    await state.writer.flush()
    assert sum(p.stat().st_size for p in (tmp_path / "journal").glob("*.jsonl")) == 0
    state.writer.submit(entry(1_700_000_000_010))
    await state.writer.stop()
    assert list((tmp_path / "journal").iterdir()) == []
    assert app.query_logs(state.engine, app.LogFilter(), 1, 10)[1] == 6


def test_kill_9_under_load_loses_no_answered_call(start_app, upstream):
    server = start_app(args=["--no-ui"])
    model = unique("kill9")
    server.add_channel(base_url=upstream.url("ok"), models=[model])

    def kill_while_rows_are_pending(answered_so_far: set[str]) -> None:
        """SIGSTOP freezes the app (and its log writer), so the database can be read as the kill will leave it;
        the kill comes when some answered call's row is not in the database, or this would prove nothing."""
        for _ in range(50):
            server.proc.send_signal(signal.SIGSTOP)
            if set(answered_so_far) - logged_ids(server.dsn, model):
                break
            server.proc.send_signal(signal.SIGCONT)
            time.sleep(0.1)
        else:
            pytest.fail("every answered call's row was always in the database already")
        server.proc.send_signal(signal.SIGKILL)

    answered = answered_ids_under_load(server, model, 2.0, until=kill_while_rows_are_pending, at_least=60)
    server.proc.wait(30)
    assert len(answered) > 50, "the load ran"
    before = logged_ids(server.dsn, model)
    assert answered - before, "rows were pending when the process died"
    again = start_app(args=["--no-ui"])
    deadline = time.monotonic() + 30
    while not answered <= logged_ids(again.dsn, model) and time.monotonic() < deadline:
        time.sleep(0.2)
    rows = logged_ids(again.dsn, model)
    assert answered - rows == set(), f"{len(answered - rows)} answered calls have no row"
    assert len(rows - answered) <= 8, "beyond the answered calls, only the ones in flight at the kill"
    print(f"kill -9 under load: {len(answered)} answered, {len(rows)} rows, {len(before)} before the restart")


def test_stored_responses_survive_kill_9_and_are_read_before_the_database_write(start_app, upstream):
    """Issue 18, part 6: a stored Responses answer survives what a log row survives. The database's write lock
    is held by the test throughout, so no answer reaches the database before the kill: the next turn reads the
    one just answered from memory, and after kill -9 and a restart the journal brings every answer back."""
    import sqlite3

    import openai

    server = start_app(args=["--no-ui"])
    model = unique("resp9")
    server.add_channel(type=14, base_url=upstream.url("ok"), models=[model])  # through the pivot: only we store
    client = server.openai()
    lock = sqlite3.connect(server.data_dir / "aiproxy.db", timeout=30, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")  # what a long write of another instance does
    try:
        first = client.responses.create(model=model, input="My name is Ada.")
        second = client.responses.create(model=model, input="What is my name?", previous_response_id=first.id)
        streamed = [e for e in client.responses.create(model=model, input="Once more.", stream=True,
                                                       previous_response_id=second.id)]
        last = streamed[-1].response
        assert streamed[-1].type == "response.completed" and last.previous_response_id == second.id
        server.proc.send_signal(signal.SIGKILL)  # right after the last answer
        server.proc.wait(30)
        stored = lock.execute("SELECT count(*) FROM responses").fetchone()[0]
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert stored == 0, "no answer reached the database before the kill"
    again = start_app(args=["--no-ui"])
    turn = again.openai().responses.create(model=model, input="And again?", previous_response_id=last.id)
    assert turn.previous_response_id == last.id
    sent = [r["json"] for r in upstream.requests() if (r.get("json") or {}).get("model") == model][-1]
    texts = [m["content"] if isinstance(m["content"], str) else "".join(b.get("text", "") for b in m["content"])
             for m in sent["messages"]]
    assert texts[0::2] == ["My name is Ada.", "What is my name?", "Once more.", "And again?"]
    assert again.openai().responses.retrieve(first.id).id == first.id
    again.openai().responses.delete(second.id)
    with pytest.raises(openai.NotFoundError):
        again.openai().responses.retrieve(second.id)


async def test_stop_during_a_flush_lets_it_finish(tmp_path, monkeypatch):
    """A shutdown that lands while a batch is being written waits for it: the batch counts as written and
    leaves the journal, rather than being cut off half-way."""
    state = make_state(tmp_path)
    state.writer.open_journal(tmp_path / "journal")
    slow_write = state.writer.write_batch

    writing = threading.Event()

    def slow(batch: list[app.LogEntry]) -> list[app.LogEntry]:
        writing.set()
        time.sleep(0.3)
        return slow_write(batch)

    monkeypatch.setattr(state.writer, "write_batch", slow)
    state.writer.start()
    for i in range(1200):  # three batches of at most 500
        state.writer.submit(entry(1_700_000_000_000 + i))
    assert await asyncio.to_thread(writing.wait, 10)  # the writer is in its first batch
    await state.writer.stop()
    assert state.writer.written == 1200 and app.query_logs(state.engine, app.LogFilter(), 1, 10)[1] == 1200
    assert list((tmp_path / "journal").iterdir()) == []


# ---- two instances on one database ----

def test_two_instances_on_postgresql_under_load_keep_a_row_and_a_count_for_every_answered_call(start_app, upstream,
                                                                                               tmp_path):
    """Issue 10: two instances on PostgreSQL lost 1,056 rows to deadlocks in the summary updates. Here both
    write calls on two channels and three models, each client in another order, at once. (MariaDB's
    deadlocks are provoked without processes by test_concurrent_writers_never_lose_rows_to_deadlocks.)"""
    kind = "postgresql"
    for dsn in fresh_database(kind):
        a = start_app(env={"SQL_DSN": dsn}, args=["--no-ui"], data_dir=tmp_path / "a")
        b = start_app(env={"SQL_DSN": dsn}, args=["--no-ui"], data_dir=tmp_path / "b", admin_key=a.admin_key)
        models = [unique("pair") for _ in range(3)]
        channels = [a.add_channel(base_url=upstream.url("ok"), models=models) for _ in range(2)]
        deadline = time.monotonic() + 10
        while len(b.openai().models.list().data) < len(models):  # B's relay has polled A's change
            assert time.monotonic() < deadline
            time.sleep(0.1)
        answered = answered_ids_under_load([a, b], models, 2.0, threads=8, at_least=60)
        assert a.stop() == 0 and b.stop() == 0
        rows = logged_ids(dsn, *models)
        assert len(answered) > 50 and rows == answered
        engine = app.make_engine(dsn)
        try:
            summaries = [s for ch in channels for s in app.query_summaries(engine, 0, 2**40, ch, "")]
            with engine.connect() as conn:
                counted = conn.execute(sa.select(sa.func.sum(app.Channel.request_count))).scalar_one()
        finally:
            engine.dispose()
        assert sum(s["request_count"] for s in summaries) == counted == len(answered)
        print(f"two instances on {kind}: {len(answered)} answered, {len(rows)} rows")
