"""Section 6, Log writer: batched inserts off the request path, per-minute summaries, counters, drain on stop."""

from __future__ import annotations

import asyncio

import aiproxy_local as app


def make_state(tmp_path) -> app.AppState:
    engine = app.make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    app.create_schema(engine)
    state = app.AppState(settings=app.Settings(data_dir=str(tmp_path)), engine=engine, catalog=app.load_catalog(),
                         admin_key="adm", admin_key_created=False)
    state.reload()
    state.writer = app.LogWriter(engine)
    return state


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
    assert state.writer.written == 1234 and state.writer.dropped == 0
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
