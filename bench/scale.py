#!/usr/bin/env python3
"""Months of logs (issue 22): synthetic call logs at 1M-5M rows, and what the dashboard, the log search, the CSV
export and a relay call during a long dashboard load cost on them.

    python bench/scale.py generate --rows 5000000 --data-dir /work/scale-data/sqlite-5m [--app aiproxy_local.py]
    python bench/scale.py generate --rows 1000000 --dsn postgresql+psycopg://postgres@127.0.0.1:5432/scale_1m
    python bench/scale.py measure --data-dir /work/scale-data/sqlite-5m [--dsn ...] [--app ...] --label after
    python bench/scale.py index-cost [--dsn ...]       # what each log index costs per million rows

`generate` makes the tables with the schema of `--app` (so a copy of an older aiproxy_local.py gives the "before"
data), then bulk-inserts straight into the database: 30 days ending now, 20 models, 10 channels, 50 keys,
5 % of calls failing (half of them after failed retries on other channels) and 3 % succeeding after a failed
attempt; the summaries are written as that version's log writer would have. Nothing goes through the relay: 5M
rows take minutes, not days. `measure` starts that app on the data (log retention off, so nothing is pruned) and
prints each figure; every query runs once to warm the caches, then the median of --repeat runs is kept.
"""
import argparse
import asyncio
import importlib.util
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import sqlalchemy as sa

from run import free_port  # bench/run.py's: never the same port twice in a run

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
HOST = "127.0.0.1"
DAY_MS = 86_400_000
MODELS = ["gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "o3-mini", "o4-mini", "claude-sonnet-4", "claude-haiku-4",
          "claude-opus-4", "gemini-2.5-pro", "gemini-2.5-flash", "deepseek-chat", "deepseek-reasoner", "qwen-max",
          "qwen-plus", "glm-4.5", "kimi-k2", "doubao-pro", "mistral-large", "llama-3.3-70b"]
CHANNELS = 10
KEYS = 50
ERROR_SHARE, RETRIED_OK_SHARE = 0.05, 0.03
ERROR_CODES = (500, 502, 429, 400, 401, 503)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def load_app(path: Path):
    spec = importlib.util.spec_from_file_location(f"aiproxy_bench_{abs(hash(str(path)))}", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


# ---- generate ----

def synthetic_rows(n: int, end_ms: int, seed: int = 22):
    """(log row tuple, detail or None, failed attempts [(channel, ms)]) in time order, ids ascending with time."""
    rnd = random.Random(seed)
    start_ms = end_ms - 30 * DAY_MS
    chunks = 200
    per = n // chunks
    request_seq = 0
    for c in range(chunks):
        count = per if c < chunks - 1 else n - per * (chunks - 1)
        lo = start_ms + (end_ms - start_ms) * c // chunks
        hi = start_ms + (end_ms - start_ms) * (c + 1) // chunks
        times = sorted(rnd.randrange(lo, hi) for _ in range(count))
        for created in times:
            request_seq += 1
            model = MODELS[int(rnd.paretovariate(1.2)) % len(MODELS)]
            channel = rnd.randrange(1, CHANNELS + 1)
            token = rnd.randrange(1, KEYS + 1)
            took = rnd.randrange(200, 8000)
            ttfb = took // 3
            r = rnd.random()
            attempts, failed, retry_times, detail = None, [], 0, None
            if r < ERROR_SHARE:
                code = ERROR_CODES[rnd.randrange(len(ERROR_CODES))]
                content = json.dumps({"error": {"message": f"upstream said {code}", "type": "upstream_error"}})
                inp = out = 0
                if code in (500, 502, 503, 429) and rnd.random() < 0.5:  # failed over, and the last one failed too
                    others = rnd.sample([c for c in range(1, CHANNELS + 1) if c != channel], rnd.randrange(1, 3))
                    failed = [(o, rnd.randrange(50, 2000)) for o in others]
                    retry_times = len(failed)
                    trail = [{"channel_id": o, "code": code, "ms": ms, "error": "upstream error"} for o, ms in failed]
                    trail.append({"channel_id": channel, "code": code, "ms": took, "error": "upstream error"})
                else:
                    trail = [{"channel_id": channel, "code": code, "ms": took, "error": "upstream error"}]
                attempts = json.dumps(trail)
                detail = ('{"model":"%s","messages":[{"role":"user","content":"hi"}]}' % model, content)
            else:
                code, content = 200, ""
                inp, out = rnd.randrange(50, 4000), rnd.randrange(10, 1500)
                if r < ERROR_SHARE + RETRIED_OK_SHARE:
                    other = rnd.choice([c for c in range(1, CHANNELS + 1) if c != channel])
                    failed = [(other, rnd.randrange(50, 2000))]
                    retry_times = 1
                    attempts = json.dumps([{"channel_id": other, "code": 502, "ms": failed[0][1], "error": "bad gateway"},
                                           {"channel_id": channel, "code": 200, "ms": took}])
            cached = inp // 2 if inp and rnd.random() < 0.3 else 0
            request_id = f"{(created - took) * 1000 + request_seq % 1000:016d}"[-16:]
            row = (request_id, created - took, created, ttfb, model, model, channel, f"channel-{channel:02d}", code, 1,
                   "/v1/chat/completions", content, f"10.0.{token}.{channel}", retry_times, token, f"key-{token:02d}",
                   inp, out, inp + out, cached, False, round((inp * 0.5 + out * 1.5) / 1e6, 8), rnd.random() < 0.6,
                   False, attempts)
            yield row, detail, failed


LOG_COLS = ("request_id", "request_at", "created_at", "ttfb_milliseconds", "model", "actual_model", "channel",
            "channel_name", "code", "mode", "endpoint", "content", "ip", "retry_times", "token_id", "token_name",
            "input_tokens", "output_tokens", "total_tokens", "cached_tokens", "usage_estimated", "used_amount",
            "stream", "is_test", "attempts")


def generate(args) -> None:
    app = load_app(Path(args.app).resolve())
    data_dir = Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    dsn = args.dsn or f"sqlite:///{data_dir / 'aiproxy.db'}"
    engine = app.make_engine(dsn)
    app.create_schema(engine)
    end_ms = int(time.time() * 1000) // 3_600_000 * 3_600_000
    with engine.begin() as conn:
        conn.execute(sa.insert(app.Channel), [
            {"id": c, "type": 1, "name": f"channel-{c:02d}", "key": f"sk-synthetic-{c}", "base_url": "http://127.0.0.1:9",
             "models": MODELS, "status": 1, "priority": 0, "created_at": end_ms - 31 * DAY_MS}
            for c in range(1, CHANNELS + 1)])
        conn.execute(sa.insert(app.Token), [
            {"id": t, "name": f"key-{t:02d}", "key": f"synthetic{t:02d}" + "x" * 30, "status": 1, "models": [],
             "created_at": end_ms - 31 * DAY_MS} for t in range(1, KEYS + 1)])
    if engine.dialect.name == "postgresql":  # explicit ids leave the sequences behind
        with engine.begin() as conn:
            for table in ("channels", "tokens"):
                conn.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                     f"(SELECT MAX(id) FROM {table}))")
    started = time.perf_counter()
    raw = engine.raw_connection()
    cur = raw.cursor()
    kind = engine.dialect.name
    failed_sums: dict = {}
    details = []
    mark = "?" if kind == "sqlite" else "%s"
    insert = f"INSERT INTO logs ({', '.join(LOG_COLS)}) VALUES ({', '.join([mark] * len(LOG_COLS))})"
    batch = []

    def flush():
        if kind == "postgresql":
            with cur.copy(f"COPY logs ({', '.join(LOG_COLS)}) FROM STDIN") as cp:
                for row in batch:
                    cp.write_row(row)
        else:
            cur.executemany(insert, batch)
        batch.clear()

    for i, (row, detail, failed) in enumerate(synthetic_rows(args.rows, end_ms)):
        batch.append(row)
        if detail is not None:
            details.append((row[0], detail[0], detail[1]))
        minute = row[2] // 60000 * 60
        for channel, ms in failed:
            key = (minute, channel, row[4])
            n, t = failed_sums.get(key, (0, 0))
            failed_sums[key] = (n + 1, t + ms)
        if len(batch) >= 50_000:
            flush()
            if i % 500_000 < 50_000:
                log(f"  {i + 1:,} rows, {time.perf_counter() - started:.0f} s")
    flush()
    detail_sql = f"INSERT INTO log_details (request_id, request_body, response_body, request_body_truncated, " \
                 f"response_body_truncated) VALUES ({mark}, {mark}, {mark}, false, false)"
    cur.executemany(detail_sql, details)
    raw.commit()
    inserted = time.perf_counter() - started
    log(f"inserted {args.rows:,} log rows and {len(details):,} details in {inserted:.0f} s")
    cur.close()
    raw.close()
    started = time.perf_counter()
    if hasattr(app, "rebuild_summaries"):  # a version with rollups builds its own, from the logs
        app.rebuild_summaries(engine)
    else:  # the older log writer's per-minute table: every attempt counted on its channel
        old_summaries(engine, failed_sums)
    log(f"summaries in {time.perf_counter() - started:.0f} s")
    if kind == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    else:
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    (data_dir / "meta.json").write_text(json.dumps({"rows": args.rows, "end_ms": end_ms, "dsn": dsn,
                                                     "app": str(args.app), "insert_s": round(inserted, 1)}))
    engine.dispose()


def old_summaries(engine, failed_sums) -> None:
    calls = """INSERT INTO summary_minutes (minute, channel_id, model, request_count, exception_count, input_tokens,
        output_tokens, total_tokens, cached_tokens, cache_hit_count, total_time_milliseconds, total_ttfb_milliseconds,
        used_amount)
      SELECT created_at / 60000 * 60, channel, model, COUNT(*), SUM(CASE WHEN code <> 200 THEN 1 ELSE 0 END),
        SUM(input_tokens), SUM(output_tokens), SUM(total_tokens), SUM(cached_tokens),
        SUM(CASE WHEN cached_tokens > 0 THEN 1 ELSE 0 END), SUM(created_at - request_at), SUM(ttfb_milliseconds),
        SUM(used_amount)
      FROM logs WHERE is_test = false GROUP BY created_at / 60000 * 60, channel, model"""
    rows = [{"m": m, "c": c, "model": model, "n": n, "t": t} for (m, c, model), (n, t) in failed_sums.items()]
    with engine.begin() as conn:
        conn.exec_driver_sql(calls)
        conn.execute(sa.text(
            "INSERT INTO summary_minutes (minute, channel_id, model, request_count, exception_count, input_tokens, "
            "output_tokens, total_tokens, cached_tokens, cache_hit_count, total_time_milliseconds, "
            "total_ttfb_milliseconds, used_amount) VALUES (:m, :c, :model, :n, :n, 0, 0, 0, 0, 0, :t, 0, 0) "
            "ON CONFLICT (minute, channel_id, model) DO UPDATE SET request_count = summary_minutes.request_count + "
            "excluded.request_count, exception_count = summary_minutes.exception_count + excluded.exception_count, "
            "total_time_milliseconds = summary_minutes.total_time_milliseconds + excluded.total_time_milliseconds"),
            rows)


# ---- measure ----

class App:
    def __init__(self, app_path: Path, data_dir: Path, dsn: str | None, key: str, env: dict | None = None):
        self.port = free_port()
        self.base = f"http://{HOST}:{self.port}"
        e = dict(os.environ, ADMIN_KEY=key, AIPROXY_NO_BROWSER="1", LOG_RETENTION_DAYS="0",
                 AIPROXY_DATA_DIR=str(data_dir), AIPROXY_PORT=str(self.port), **(env or {}))
        e.pop("SQL_DSN", None)
        if dsn:
            e["SQL_DSN"] = dsn
        self.logf = open(data_dir / f"app-{self.port}.log", "w")
        self.started = time.perf_counter()
        self.p = subprocess.Popen([sys.executable, str(app_path)], env=e, stdout=self.logf, stderr=subprocess.STDOUT)

    async def wait(self, sess) -> float:
        while True:
            if self.p.poll() is not None:
                raise RuntimeError(f"the app exited: see {self.logf.name}")
            try:  # the port is bound before the schema is upgraded: a connection may wait that long
                async with sess.get(f"{self.base}/api/status", timeout=aiohttp.ClientTimeout(total=5)) as r:
                    if r.status == 200:
                        return time.perf_counter() - self.started
            except (aiohttp.ClientError, asyncio.TimeoutError):
                pass
            await asyncio.sleep(0.1)

    def stop(self) -> None:
        self.p.terminate()
        try:
            self.p.wait(30)
        except subprocess.TimeoutExpired:
            self.p.kill()
        self.logf.close()


class Counted(bytes):
    """A body too big to keep (a CSV of millions of rows): its size and its lines only."""
    lines = 0
    size = 0


async def timed_get(sess, url, params, headers, keep=True) -> tuple[float, float, int, bytes, dict]:
    """seconds to the first body byte, seconds in all, status, body, headers."""
    t0 = time.perf_counter()
    async with sess.get(url, params=params, headers=headers) as r:
        first = None
        chunks = []
        lines = size = 0
        async for chunk in r.content.iter_any():
            if first is None:
                first = time.perf_counter() - t0
            if keep:
                chunks.append(chunk)
            lines += chunk.count(b"\n")
            size += len(chunk)
        total = time.perf_counter() - t0
        body = b"".join(chunks) if keep else Counted()
        if not keep:
            body.lines, body.size = lines, size
        return first or total, total, r.status, body, dict(r.headers)


async def measure(args) -> None:
    data_dir = Path(args.data_dir)
    meta = json.loads((data_dir / "meta.json").read_text())
    end_ms, key = meta["end_ms"], "bench-admin-key-22"
    app_path = Path(args.app).resolve()
    auth = {"Authorization": f"Bearer {key}"}
    results: dict = {"label": args.label, "rows": meta["rows"], "dsn": (args.dsn or "sqlite").split("://")[0],
                     "app": str(app_path), "load": os.getloadavg()}
    upstream = subprocess.Popen([sys.executable, str(HERE / "upstream.py"), "--port", str(up_port := free_port())],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    app = App(app_path, data_dir, args.dsn, key, env={"AIPROXY_NO_UI": "1"} if args.no_ui else None)
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    out = Path(args.out)
    label = f"{args.label} {results['dsn']} {meta['rows'] // 1_000_000}M"

    def save(results):  # after every figure: a run cut short keeps what it measured
        every = json.loads(out.read_text()) if out.exists() else {}
        every[label] = {**every.get(label, {}), **results}
        out.write_text(json.dumps(every, indent=1))

    only = set(args.only.split(",")) if args.only else {"dash", "logs", "csv", "relay"}
    try:
        async with aiohttp.ClientSession(timeout=timeout) as sess:
            results["start_s"] = round(await app.wait(sess), 2)
            log(f"{args.label}: started in {results['start_s']} s")
            async with sess.get(f"{app.base}/api/channels/all", headers=auth) as r:  # an earlier run's, now dead
                stale = [c["id"] for c in (await r.json())["data"] if c["name"] == "bench-upstream"]
            for channel_id in stale:
                async with sess.delete(f"{app.base}/api/channel/{channel_id}", headers=auth) as r:
                    assert r.status == 200, await r.text()
            async with sess.post(f"{app.base}/api/channel", headers=auth, json={
                    "type": 1, "name": "bench-upstream", "key": "sk-bench", "base_url": f"http://{HOST}:{up_port}",
                    "models": ["bench-model"], "priority": 100}) as r:
                assert r.status == 200, await r.text()

            async def figure(name, path, params, check=None, keep=True, runs=None):
                times, firsts = [], []
                for i in range(args.repeat + 1 if runs is None else runs):  # the first run warms the caches
                    try:
                        first, total, status, body, headers = await timed_get(sess, app.base + path, params, auth,
                                                                              keep)
                    except asyncio.TimeoutError:
                        results[name] = {"error": f"timeout after {args.timeout} s"}
                        log(f"  {name:44s} timeout after {args.timeout} s")
                        return None
                    if i or runs is not None:
                        times.append(total)
                        firsts.append(first)
                fig = {"s": round(statistics.median(times), 3), "first_byte_s": round(statistics.median(firsts), 3),
                       "status": status, "bytes": len(body) if keep else body.size}
                if check:
                    fig.update(check(body, headers))
                results[name] = fig
                save(results)
                log(f"  {name:44s} {fig['s']:7.3f} s  first byte {fig['first_byte_s']:.3f} s  {fig['bytes']:,} B "
                    f"{ {k: v for k, v in fig.items() if k not in ('s', 'first_byte_s', 'bytes')} }")
                return body

            def dash_check(body, headers):
                doc = json.loads(body)
                data = doc.get("data") or []
                return {"buckets": len(data), "calls": sum(i["request_count"] for b in data for i in b["summary"]),
                        "message": doc.get("message", "")}

            def logs_check(body, headers):
                doc = json.loads(body)
                return {"total": (doc.get("data") or {}).get("total"), "rows_on_page": len((doc.get("data") or {}).get("logs") or [])}

            def csv_check(body, headers):
                return {"csv_rows": body.lines - 1}  # the header line is not a row

            d30 = {"start_timestamp": end_ms - 30 * DAY_MS, "end_timestamp": end_ms - 1}
            d7 = {"start_timestamp": end_ms - 7 * DAY_MS, "end_timestamp": end_ms - 1}
            d1 = {"start_timestamp": end_ms - DAY_MS, "end_timestamp": end_ms - 1}
            tz = {"timezone": "Asia/Shanghai"}
            if "dash" in only:
                await figure("dashboard 30 d by day", "/api/dashboardv2/", {**d30, **tz, "timespan": "day"}, dash_check)
                await figure("dashboard 7 d by hour", "/api/dashboardv2/", {**d7, **tz, "timespan": "hour"}, dash_check)
                await figure("dashboard 30 d by day, one channel", "/api/dashboardv2/",
                             {**d30, **tz, "timespan": "day", "channel": 3}, dash_check)
                await figure("dashboard 1 d by minute", "/api/dashboardv2/", {**d1, **tz, "timespan": "minute"}, dash_check)
                if not args.skip_minute_30d:
                    await figure("dashboard 30 d by minute", "/api/dashboardv2/", {**d30, **tz, "timespan": "minute"},
                                 dash_check)
            if "logs" in only:
                page = {"p": 1, "per_page": 20}
                # a request id that exists: the newest row's
                body = await figure("logs, first page, 30 d", "/api/logs/search", {**d30, **page}, logs_check)
                newest = json.loads(body)["data"]["logs"][0]["request_id"] if body else ""
                for name, extra in (("channel", {"channel": 3}), ("model", {"model_name": "gpt-4o-mini"}),
                                    ("token", {"token_name": "key-07"}), ("errors", {"code_type": "error"}),
                                    ("success", {"code_type": "success"}),
                                    ("keyword = key name", {"keyword": "key-07"}),
                                    ("keyword = request id", {"keyword": newest}),
                                    ("request id", {"request_id": newest}),
                                    ("channel + model + errors", {"channel": 3, "model_name": "gpt-4o", "code_type": "error"})):
                    await figure(f"logs by {name}, 30 d", "/api/logs/search", {**d30, **page, **extra}, logs_check)
                await figure("logs by channel, 1 d", "/api/logs/search", {**d1, **page, "channel": 3}, logs_check)
            if "csv" in only:
                await figure("CSV export, 1 d", "/api/logs/export", d1, csv_check, keep=False)
                await figure("CSV export, all", "/api/logs/export", {}, csv_check, keep=False, runs=1)
            if "dash" in only:  # calls in the range the logs page counts (model tests excluded) against the dashboard's
                calls_total = results["dashboard 30 d by day"].get("calls")
                async with sess.get(f"{app.base}/api/logs/search", headers=auth,
                                    params={**d30, "p": 1, "per_page": 1, "is_test": "false"}) as r:
                    logs_calls = (await r.json())["data"]["total"]
                results["totals"] = {"dashboard_calls": calls_total, "log_rows": logs_calls,
                                     "equal": calls_total == logs_calls}
                save(results)
                log(f"  totals: dashboard {calls_total:,} calls, logs {logs_calls:,} rows -> "
                    f"{'equal' if calls_total == logs_calls else 'DIFFERENT'}")
            if "relay" in only:
                results["relay"] = await relay_during_dashboard(sess, app.base, auth, key, d30, tz, args)
                save(results)
    finally:
        app.stop()
        upstream.terminate()


async def relay_call(sess, base, key) -> float:
    t0 = time.perf_counter()
    async with sess.post(f"{base}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                         json={"model": "bench-model", "messages": [{"role": "user", "content": "hi"}]}) as r:
        await r.read()
        assert r.status == 200
    return time.perf_counter() - t0


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


async def relay_during_dashboard(sess, base, auth, key, d30, tz, args) -> dict:
    """Relay calls one after another: alone, then while the 30-day dashboard loads again and again."""
    for _ in range(20):
        await relay_call(sess, base, key)
    alone = [await relay_call(sess, base, key) for _ in range(args.relay_calls)]
    stop = asyncio.Event()
    loads = 0

    async def dashboards():
        nonlocal loads
        while not stop.is_set():
            try:
                async with sess.get(f"{base}/api/dashboardv2/", headers=auth, timeout=aiohttp.ClientTimeout(total=600),
                                    params={**d30, **tz, "timespan": "day"}) as r:
                    await r.read()
            except asyncio.TimeoutError:
                pass
            loads += 1

    loaders = [asyncio.create_task(dashboards()) for _ in range(2)]
    await asyncio.sleep(0.2)
    during = [await relay_call(sess, base, key) for _ in range(args.relay_calls)]
    stop.set()
    await asyncio.gather(*loaders)
    out = {"alone_p50_ms": round(statistics.median(alone) * 1000, 1), "alone_p99_ms": round(pct(alone, 0.99) * 1000, 1),
           "during_p50_ms": round(statistics.median(during) * 1000, 1),
           "during_p99_ms": round(pct(during, 0.99) * 1000, 1),
           "during_max_ms": round(max(during) * 1000, 1), "dashboard_loads": loads, "calls": args.relay_calls}
    out["p99_added_ms"] = round(out["during_p99_ms"] - out["alone_p99_ms"], 1)
    log(f"  relay p99 alone {out['alone_p99_ms']} ms, during 30-day dashboards {out['during_p99_ms']} ms "
        f"(max {out['during_max_ms']} ms, {loads} dashboard loads)")
    return out


# ---- index-cost ----

OLD_INDEXES = {"ix_logs_created_at", "ix_logs_request_id"}  # what the logs had before issue 22 (+ ix_logs_model)


def index_cost(args) -> None:
    """Insert the same rows through the log writer into a fresh database with the indexes before issue 22 and
    with today's, arms interleaved in rounds; per million rows: seconds of writing and MB of each index."""
    app = load_app(Path(args.app).resolve())
    rows = [dict(zip(LOG_COLS, r)) for r, _, _ in synthetic_rows(args.rows, int(time.time() * 1000))]
    start = int(time.time() * 1000) - len(rows) * 60
    for i, r in enumerate(rows):  # as a busy gateway writes them: 1,000 calls a minute, batches of 500
        took = r["created_at"] - r["request_at"]
        r["created_at"] = start + i * 60
        r["request_at"] = r["created_at"] - took
    entries = [app.LogEntry(r, None, r["retry_times"]) for r in rows]
    out: dict = {}
    for round_ in range(args.rounds):
        for arm in ("before", "after"):
            if args.dsn:
                engine = app.make_engine(args.dsn)
                with engine.begin() as conn:
                    for t in ("log_details", "logs", "summary_minutes", "summary_hours"):
                        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {t}")
            else:
                path = Path(args.data_dir) / f"index-cost-{arm}.db"
                for suffix in ("", "-wal", "-shm"):
                    Path(str(path) + suffix).unlink(missing_ok=True)
                engine = app.make_engine(f"sqlite:///{path}")
            app.create_schema(engine)
            if arm == "before":
                with engine.begin() as conn:
                    for index in sa.inspect(engine).get_indexes("logs"):
                        if index["name"] not in OLD_INDEXES:
                            on = " ON logs" if engine.dialect.name in ("mysql", "mariadb") else ""
                            conn.exec_driver_sql(f"DROP INDEX {index['name']}{on}")
                    conn.exec_driver_sql("CREATE INDEX ix_logs_model ON logs (model)")
            writer = app.LogWriter(engine)
            started = time.perf_counter()
            for i in range(0, len(entries), 500):
                assert writer.write_batch(entries[i:i + 500]) == []
            took = time.perf_counter() - started
            sizes = index_sizes(engine)
            engine.dispose()
            arm_out = out.setdefault(arm, {"seconds": [], "sizes": sizes})
            arm_out["seconds"].append(took)
            log(f"  round {round_ + 1} {arm}: {len(entries):,} rows in {took:.1f} s "
                f"({took / len(entries) * 1e6:.0f} µs a row with its summaries)")
    per_m = 1_000_000 / len(entries)
    for arm, o in out.items():
        o["s_per_million"] = round(statistics.median(o["seconds"]) * per_m, 1)
        o["index_mb_per_million"] = {k: round(v / 1e6 * per_m, 1) for k, v in o["sizes"].items()}
        log(f"{arm}: {o['s_per_million']} s per million rows written; indexes, MB per million rows: "
            f"{o['index_mb_per_million']}")
    res = Path(args.out)
    every = json.loads(res.read_text()) if res.exists() else {}
    every[f"index cost {(args.dsn or 'sqlite').split(':')[0]}"] = out
    res.write_text(json.dumps(every, indent=1))


def index_sizes(engine) -> dict:
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            sized = conn.exec_driver_sql("SELECT name, SUM(pgsize) FROM dbstat WHERE name LIKE 'ix_logs%' "
                                         "OR name = 'logs' GROUP BY name").all()
        elif engine.dialect.name == "postgresql":
            sized = conn.exec_driver_sql("SELECT indexrelname, pg_relation_size(indexrelid) FROM pg_stat_user_indexes "
                                         "WHERE relname = 'logs' UNION ALL SELECT 'logs', pg_relation_size('logs')").all()
        else:
            sized = []
    return {name: int(size) for name, size in sized}


# ---- table ----

TABLE_ROWS = ["dashboard 30 d by day", "dashboard 7 d by hour", "dashboard 30 d by day, one channel",
              "dashboard 1 d by minute", "dashboard 30 d by minute", "logs, first page, 30 d", "logs by channel, 30 d",
              "logs by model, 30 d", "logs by token, 30 d", "logs by errors, 30 d", "logs by success, 30 d",
              "logs by keyword = key name, 30 d", "logs by keyword = request id, 30 d", "logs by request id, 30 d",
              "logs by channel + model + errors, 30 d", "logs by channel, 1 d", "CSV export, 1 d", "CSV export, all"]


def table(args) -> None:
    """The before/after table of the README, from the measured JSON."""
    every = json.loads(Path(args.out).read_text())
    arms = [k for k in ("before sqlite 5M", "after sqlite 5M", "before postgresql+psycopg 1M",
                        "after postgresql+psycopg 1M") if k in every]

    def cell(fig, name):
        if not isinstance(fig, dict):
            return "–"
        if "error" in fig:
            return fig["error"].replace("timeout after", "> ").replace(".0 s", " s (timeout)")
        text = f"{fig['s']:.2f} s" if fig["s"] >= 0.1 else f"{fig['s'] * 1000:.0f} ms"
        if name.startswith("CSV"):
            text += f", first byte {fig['first_byte_s'] * 1000:.0f} ms, {fig.get('csv_rows', 0):,} rows"
        if fig.get("message"):
            text += " (by the hour, said)"
        return text

    head = ["figure"] + [a.replace("postgresql+psycopg", "PostgreSQL").replace("sqlite", "SQLite") for a in arms]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in TABLE_ROWS:
        lines.append("| " + " | ".join([name] + [cell(every[a].get(name), name) for a in arms]) + " |")
    totals = ["dashboard calls = log rows (30 d)"]
    relay = ["relay p99 alone → during 30-day dashboards"]
    start = ["start (after: the first start upgrades)"]
    for a in arms:
        t = every[a].get("totals")
        totals.append(f"{t['dashboard_calls']:,} vs {t['log_rows']:,}: {'equal' if t['equal'] else 'different'}"
                      if t else "–")
        r = every[a].get("relay")
        relay.append(f"{r['alone_p99_ms']} → {r['during_p99_ms']} ms (+{r['p99_added_ms']})" if r else "–")
        start.append(f"{every[a].get('start_s', '–')} s")
    for row in (totals, relay, start):
        lines.append("| " + " | ".join(row) + " |")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--rows", type=int, default=1_000_000)
    g.add_argument("--data-dir", required=True)
    g.add_argument("--dsn", default="")
    g.add_argument("--app", default=str(ROOT / "aiproxy_local.py"))
    m = sub.add_parser("measure")
    m.add_argument("--data-dir", required=True)
    m.add_argument("--dsn", default="")
    m.add_argument("--app", default=str(ROOT / "aiproxy_local.py"))
    m.add_argument("--label", default="after")
    m.add_argument("--repeat", type=int, default=3)
    m.add_argument("--timeout", type=float, default=180)
    m.add_argument("--relay-calls", type=int, default=300)
    m.add_argument("--skip-minute-30d", action="store_true")
    m.add_argument("--no-ui", action="store_true")
    m.add_argument("--only", default="", help="comma-separated: dash,logs,csv,relay (default: all)")
    m.add_argument("--out", default=str(HERE / "scale-results.json"))
    c = sub.add_parser("index-cost")
    c.add_argument("--rows", type=int, default=200_000)
    c.add_argument("--rounds", type=int, default=2)
    c.add_argument("--data-dir", default="/tmp")
    c.add_argument("--dsn", default="", help="an empty server database to use instead of SQLite files")
    c.add_argument("--app", default=str(ROOT / "aiproxy_local.py"))
    c.add_argument("--out", default=str(HERE / "scale-results.json"))
    t = sub.add_parser("table")
    t.add_argument("--out", default=str(HERE / "scale-results.json"))
    args = parser.parse_args()
    if args.cmd == "table":
        table(args)
    elif args.cmd == "generate":
        generate(args)
    elif args.cmd == "index-cost":
        index_cost(args)
    else:
        asyncio.run(measure(args))


if __name__ == "__main__":
    main()
