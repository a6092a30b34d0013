#!/usr/bin/env python3
"""aiproxy-local benchmark: one command, three (or more) arms, nine scenarios (S1-S9).

    python bench/run.py [--quick] [--runs 3] [--out bench/results.json] [--arms direct,bare,aiproxy,aiproxy-api,litellm]

Arms (all against the same raw-ASGI upstream, bench/upstream.py, on 127.0.0.1):
  direct       the client talks to the upstream itself (the baseline);
  bare         bench/bare_relay.py, ~30 lines of raw ASGI + one aiohttp session: the practical limit;
  aiproxy      aiproxy_local.py as users run it (UI mounted);
  aiproxy-api  aiproxy_local.py with AIPROXY_NO_UI=1 (API only), for S6;
  litellm      LiteLLM's proxy (1 worker, no DB), only when litellm is installed.

Scenarios: S1 c=1 added latency; S2 c=1 streaming TTFT / inter-chunk gaps / fidelity; S3 wrk closed-loop
throughput at c=50 and c=200 with an instant and a 50 ms upstream; S4 log integrity; S5 RSS; S6 UI vs API-only;
S7 conversion cost (/v1/messages over an OpenAI channel, chat over an Anthropic one, beside the pass-through);
S8 durability (the log journal's cost in req/s; kill -9 under load, restart: answered calls without a row).
S9 a dead top-priority channel (401 on every call): the latency it adds, then after its auto-disable, and the
health bookkeeping's own cost per call.
Every scenario is repeated --runs times (arms interleaved within each run) and the median is reported.
"""
import argparse
import asyncio
import importlib.metadata
import importlib.util
import json
import os
import platform
import random
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable
HOST = "127.0.0.1"
CLK = os.sysconf("SC_CLK_TCK")

ALL_ARMS = ["direct", "bare", "aiproxy", "aiproxy-api", "litellm"]
PROXY_ARMS = ["bare", "aiproxy", "aiproxy-api", "litellm"]
MODEL, MODEL_SLOW = "bench-model", "bench-model-slow"
MODEL_CLAUDE = "bench-claude"  # S7: served by an Anthropic-format channel (type 14) on the instant upstream
MODEL_DEAD = "bench-dead"  # S9: a top-priority channel answering 401, then a healthy one, on the instant upstream
PROMPT = "Say hello to the benchmark."


def log(*a):
    print(*a, file=sys.stderr, flush=True)


_GIVEN_PORTS: set[int] = set()


def free_port() -> int:
    """A port free now and never handed out before in this run: the kernel may offer a port again as soon as the
    probe socket closes, and two arms on one port measure one arm twice (a bare relay on the 50 ms upstream once
    served 7,363 req/s that way, answered by the 0 ms one, while its own process had died on the taken port)."""
    while True:
        with socket.socket() as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if port not in _GIVEN_PORTS:
            _GIVEN_PORTS.add(port)
            return port


def pct(xs, p):
    """Nearest-rank-interpolated percentile (p in 0..100)."""
    if not xs:
        return None
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100.0
    f = int(k)
    c = min(f + 1, len(xs) - 1)
    return xs[f] + (xs[c] - xs[f]) * (k - f)


# ----------------------------------------------------------------------------------------------------
# processes
# ----------------------------------------------------------------------------------------------------

def _children_map():
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
            ppid = int(st[st.rindex(")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(d))
    return kids


def proc_tree(pid):
    kids = _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def rss_mb(pids):
    tot = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        tot += int(line.split()[1])
                        break
        except OSError:
            pass
    return tot / 1024.0


def cpu_s(pids):
    tot = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                st = f.read()
            fields = st[st.rindex(")") + 2:].split()
            tot += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, ValueError, IndexError):
            pass
    return tot / CLK


class Proc:
    def __init__(self, name, argv, logdir, env=None, cwd=None):
        self.name = name
        self.argv = argv
        self.logpath = Path(logdir) / f"{name}.log"
        self._logf = open(self.logpath, "wb")
        e = dict(os.environ)
        e.update(env or {})
        self.p = subprocess.Popen(argv, stdout=self._logf, stderr=subprocess.STDOUT, env=e,
                                  cwd=str(cwd or ROOT), start_new_session=True)
        self.pid = self.p.pid

    def alive(self):
        return self.p.poll() is None

    def pids(self):
        return proc_tree(self.pid) if self.alive() else []

    def rss(self):
        return rss_mb(self.pids())

    def cpu(self):
        return cpu_s(self.pids())

    def tail(self, n=30):
        try:
            return "\n".join(self.logpath.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self):
        if self.alive():
            try:
                os.killpg(self.pid, signal.SIGTERM)  # our own session/process group, by id
            except ProcessLookupError:
                pass
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.p.wait(5)
        self._logf.close()


async def wait_http(session, url, proc, timeout=60.0, method="GET"):
    t0 = time.monotonic()
    last = None
    while time.monotonic() - t0 < timeout:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited (rc={proc.p.returncode}); log {proc.logpath}:\n{proc.tail()}")
        try:
            async with session.request(method, url, timeout=aiohttp.ClientTimeout(total=3)) as r:
                await r.read()
                if r.status < 500:
                    return time.monotonic() - t0
                last = r.status
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            last = e
        await asyncio.sleep(0.2)
    raise RuntimeError(f"{proc.name} not ready at {url} after {timeout}s ({last}); log {proc.logpath}:\n{proc.tail()}")


# ----------------------------------------------------------------------------------------------------
# arms
# ----------------------------------------------------------------------------------------------------

class Arm:
    def __init__(self, name, base, base_slow, headers=None, model=MODEL, model_slow=MODEL_SLOW,
                 procs=(), procs_slow=None):
        self.name = name
        self.base = base            # root URL that serves /v1/chat/completions with the instant upstream
        self.base_slow = base_slow  # same, with the 50 ms upstream
        self.headers = dict(headers or {})
        self.model = model
        self.model_slow = model_slow
        self.procs = list(procs)            # processes whose RSS/CPU is the arm's (instant path)
        self.procs_slow = list(procs_slow if procs_slow is not None else procs)
        self.ok2xx = 0      # every 2xx response any client of this bench received from this arm
        self.answered = 0   # every response (any status) received

    def url(self, slow=False):
        return (self.base_slow if slow else self.base) + "/v1/chat/completions"

    def body(self, slow=False, stream=False):
        d = {"model": self.model_slow if slow else self.model,
             "messages": [{"role": "user", "content": "Say hello to the benchmark."}],
             "max_tokens": 64}
        if stream:
            d["stream"] = True
            d["stream_options"] = {"include_usage": True}
        return json.dumps(d, separators=(",", ":")).encode()

    def req_headers(self):
        h = {"Content-Type": "application/json"}
        h.update(self.headers)
        return h


# ----------------------------------------------------------------------------------------------------
# wrk
# ----------------------------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(tok):
    m = re.match(r"([\d.]+)(us|ms|s|m|h)$", tok)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else None


def parse_wrk(out):
    r = {"rps": 0.0, "requests": 0, "non2xx": 0, "sock_err": 0, "p50": None, "p90": None, "p99": None,
         "avg": None}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        r["rps"] = float(m.group(1))
    m = re.search(r"(\d+) requests in", out)
    if m:
        r["requests"] = int(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if m:
        r["non2xx"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        r["sock_err"] = sum(int(x) for x in m.groups())
    for p in ("50", "90", "99"):
        m = re.search(rf"^\s+{p}%\s+(\S+)", out, re.M)
        if m:
            r["p" + p] = _ms(m.group(1))
    m = re.search(r"Latency\s+(\S+)", out)
    if m:
        r["avg"] = _ms(m.group(1))
    return r


def write_lua(path, arm, slow):
    body = arm.body(slow=slow).decode()
    lines = ['wrk.method = "POST"', f"wrk.body = [==[{body}]==]"]
    for k, v in arm.req_headers().items():
        lines.append(f'wrk.headers["{k}"] = [==[{v}]==]')
    Path(path).write_text("\n".join(lines) + "\n")


async def run_wrk(arm, lua, conns, dur, slow, quiet=False):
    procs = arm.procs_slow if slow else arm.procs
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{dur}s", "--timeout", "30s", "--latency", "-s", lua, arm.url(slow)]
    pids = [p for pr in procs for p in pr.pids()]
    c0 = cpu_s(pids)
    p = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    comm = asyncio.ensure_future(p.communicate())
    peak = 0.0
    while not comm.done():
        peak = max(peak, rss_mb(pids))
        await asyncio.wait([comm], timeout=0.1)
    out, err = comm.result()
    out = out.decode(errors="replace")
    c1 = cpu_s(pids)
    r = parse_wrk(out)
    if (p.returncode != 0 or not r["requests"]) and not quiet:
        log(f"  wrk failed for {arm.name} (rc={p.returncode}):\n{out}\n{err.decode(errors='replace')}")
    r["rss_peak"] = peak
    ok = max(0, r["requests"] - r["non2xx"])
    r["ok"] = ok
    r["cpu_ms_per_req"] = (c1 - c0) * 1000.0 / ok if (ok and pids) else None
    arm.ok2xx += ok
    arm.answered += r["requests"]
    return r


# ----------------------------------------------------------------------------------------------------
# c=1 clients (S1, S2) and the counted load (S4)
# ----------------------------------------------------------------------------------------------------

def client_session(limit=1):
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit, ttl_dns_cache=None),
                                 auto_decompress=False, timeout=aiohttp.ClientTimeout(total=120))


async def one_call(sess, arm):
    t0 = time.perf_counter()
    async with sess.post(arm.url(), data=arm.body(), headers=arm.req_headers()) as r:
        await r.read()
        st = r.status
    dt = (time.perf_counter() - t0) * 1000.0
    arm.answered += 1
    if 200 <= st < 300:
        arm.ok2xx += 1
    return st, dt


async def s1_latency(arms, rounds, warm):
    sessions = {a.name: client_session() for a in arms}
    lat = {a.name: [] for a in arms}
    diffs = {a.name: [] for a in arms if a.name != "direct"}
    errors = {a.name: 0 for a in arms}
    try:
        for i in range(warm + rounds):
            order = list(arms)
            random.shuffle(order)
            got = {}
            for a in order:
                try:
                    st, dt = await one_call(sessions[a.name], a)
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    st, dt = 0, None
                if st != 200:
                    errors[a.name] += 1
                    continue
                got[a.name] = dt
            if i < warm:
                continue
            for n, dt in got.items():
                lat[n].append(dt)
            if "direct" in got:
                for n in diffs:
                    if n in got:
                        diffs[n].append(got[n] - got["direct"])
    finally:
        for s in sessions.values():
            await s.close()
    res = {}
    for a in arms:
        m = {"s1_lat_p50": pct(lat[a.name], 50), "s1_lat_p99": pct(lat[a.name], 99),
             "s1_errors": errors[a.name], "s1_n": len(lat[a.name])}
        if a.name in diffs:
            m["s1_add_p50"] = pct(diffs[a.name], 50)
            m["s1_add_p99"] = pct(diffs[a.name], 99)
        res[a.name] = m
    return res


TOK_RE = re.compile(rb"tok(\d{3})")


async def one_stream(sess, arm, n_expected_events, n_chunks):
    t0 = time.perf_counter()
    times = []
    merged = 0
    buf = b""
    full = b""
    async with sess.post(arm.url(), data=arm.body(stream=True), headers=arm.req_headers()) as r:
        st = r.status
        async for chunk in r.content.iter_any():
            t = time.perf_counter()
            buf += chunk
            full += chunk
            k = 0
            while True:
                # SSE events end with a blank line; accept \n\n and \r\n\r\n
                i = buf.find(b"\n\n")
                j = buf.find(b"\r\n\r\n")
                if i < 0 and j < 0:
                    break
                if j >= 0 and (i < 0 or j < i):
                    ev, buf = buf[:j], buf[j + 4:]
                else:
                    ev, buf = buf[:i], buf[i + 2:]
                if b"data:" in ev:
                    times.append((t - t0) * 1000.0)
                    k += 1
            merged += max(0, k - 1)
    arm.answered += 1
    if 200 <= st < 300:
        arm.ok2xx += 1
    toks = [int(x) for x in TOK_RE.findall(full)]
    # every content chunk delivered once, in order, and the stream closed with [DONE]; a proxy may add events
    # (e.g. split usage into its own chunk) but may not drop any
    faithful = (st == 200 and len(times) >= n_expected_events and toks == list(range(n_chunks))
                and full.rstrip().endswith(b"[DONE]"))
    return {"status": st, "times": times, "merged": merged, "faithful": faithful, "events": len(times)}


async def s2_stream(arms, rounds, warm, n_chunks):
    n_events = n_chunks + 3  # role chunk + N content chunks + finish/usage chunk + [DONE]
    sessions = {a.name: client_session() for a in arms}
    ttft = {a.name: [] for a in arms}
    gaps = {a.name: [] for a in arms}
    add_ttft = {a.name: [] for a in arms if a.name != "direct"}
    merged = {a.name: 0 for a in arms}
    bad = {a.name: 0 for a in arms}
    events = {a.name: [] for a in arms}
    try:
        for i in range(warm + rounds):
            order = list(arms)
            random.shuffle(order)
            got = {}
            for a in order:
                try:
                    r = await one_stream(sessions[a.name], a, n_events, n_chunks)
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    r = None
                if i < warm:
                    continue
                if r is None or not r["times"]:
                    bad[a.name] += 1
                    continue
                merged[a.name] += r["merged"]
                events[a.name].append(r["events"])
                if not r["faithful"]:
                    bad[a.name] += 1
                ts = r["times"]
                got[a.name] = ts[0]
                ttft[a.name].append(ts[0])
                gaps[a.name].extend(b - a_ for a_, b in zip(ts, ts[1:]))
            if "direct" in got:
                for n in add_ttft:
                    if n in got:
                        add_ttft[n].append(got[n] - got["direct"])
    finally:
        for s in sessions.values():
            await s.close()
    res = {}
    dg50 = pct(gaps.get("direct", []), 50)
    dg99 = pct(gaps.get("direct", []), 99)
    for a in arms:
        n = a.name
        m = {"s2_ttft_p50": pct(ttft[n], 50), "s2_gap_p50": pct(gaps[n], 50), "s2_gap_p99": pct(gaps[n], 99),
             "s2_gap_max": max(gaps[n]) if gaps[n] else None,
             "s2_merged": merged[n], "s2_bad_streams": bad[n], "s2_streams": len(events[n]),
             "s2_events_min": min(events[n]) if events[n] else 0, "s2_events_expected": n_events}
        if n in add_ttft:
            m["s2_add_ttft_p50"] = pct(add_ttft[n], 50)
            m["s2_add_ttft_p99"] = pct(add_ttft[n], 99)
            if dg50 is not None and m["s2_gap_p50"] is not None:
                m["s2_add_gap_p50"] = m["s2_gap_p50"] - dg50
                m["s2_add_gap_p99"] = m["s2_gap_p99"] - dg99
        res[n] = m
    return res


async def counted_load(arm, total, conc):
    """Send exactly `total` requests at concurrency `conc`; every one runs to completion."""
    sess = client_session(limit=conc)
    ok = answered = failed = 0
    left = [total]

    async def worker():
        nonlocal ok, answered, failed
        while left[0] > 0:
            left[0] -= 1
            try:
                async with sess.post(arm.url(), data=arm.body(), headers=arm.req_headers()) as r:
                    await r.read()
                    answered += 1
                    if 200 <= r.status < 300:
                        ok += 1
            except (aiohttp.ClientError, asyncio.TimeoutError):
                failed += 1

    t0 = time.perf_counter()
    try:
        await asyncio.gather(*[worker() for _ in range(conc)])
    finally:
        await sess.close()
    arm.ok2xx += ok
    arm.answered += answered
    return {"sent": total, "ok": ok, "answered": answered, "failed": failed, "secs": time.perf_counter() - t0}


# ----------------------------------------------------------------------------------------------------
# S7: conversion cost. Each converted path is paired with the direct call of the upstream format it ends in:
# /v1/messages over an OpenAI channel makes the upstream do an OpenAI chat; chat over an Anthropic channel, an
# Anthropic message. The pass-through chat is measured in the same rounds.
# ----------------------------------------------------------------------------------------------------

S7_PATHS = {"pass": "chat, pass-through", "messages": "/v1/messages over OpenAI", "claude": "chat over Anthropic"}


def chat_body(model, stream):
    d = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 64}
    if stream:
        d.update(stream=True, stream_options={"include_usage": True})
    return json.dumps(d, separators=(",", ":")).encode()


def messages_body(model, stream):
    d = {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": PROMPT}]}
    if stream:
        d["stream"] = True
    return json.dumps(d, separators=(",", ":")).encode()


def s7_targets(rig, stream):
    """name -> (url, body, headers, baseline); a baseline (direct-*) has none."""
    arm = rig.arms["aiproxy"]
    auth = arm.req_headers()
    anthropic = {"Content-Type": "application/json", "x-api-key": "sk-bench", "anthropic-version": "2023-06-01"}
    return {
        "direct-openai": (rig.up0 + "/v1/chat/completions", chat_body(MODEL, stream),
                          {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}, None),
        "direct-anthropic": (rig.up0 + "/v1/messages", messages_body(MODEL, stream), anthropic, None),
        "pass": (arm.base + "/v1/chat/completions", chat_body(MODEL, stream), auth, "direct-openai"),
        "messages": (arm.base + "/v1/messages", messages_body(MODEL, stream), {**auth, "anthropic-version": "2023-06-01"},
                     "direct-openai"),
        "claude": (arm.base + "/v1/chat/completions", chat_body(MODEL_CLAUDE, stream), auth, "direct-anthropic"),
    }


async def s7_call(sess, url, body, headers, stream, n_chunks):
    """(ms, faithful, merged): the whole answer's time, or a stream's time to its first content token; a stream is
    faithful when every token arrives once and in order; merged counts tokens that shared a read with another."""
    t0 = time.perf_counter()
    first, toks, merged = None, [], 0
    async with sess.post(url, data=body, headers=headers) as r:
        if not stream:
            await r.read()
            return (time.perf_counter() - t0) * 1000.0, r.status == 200, 0
        async for chunk in r.content.iter_any():
            found = [int(x) for x in TOK_RE.findall(chunk)]
            if found and first is None:
                first = (time.perf_counter() - t0) * 1000.0
            merged += max(0, len(found) - 1)
            toks += found
        return first, r.status == 200 and toks == list(range(n_chunks)), merged


async def s7_conversion(rig, rounds, warm, n_chunks):
    res = {}
    for stream in (False, True):
        targets = s7_targets(rig, stream)
        sessions = {n: client_session() for n in targets}
        added = {n: [] for n in S7_PATHS}
        merged = {n: 0 for n in S7_PATHS}
        bad = {n: 0 for n in S7_PATHS}
        try:
            for i in range(warm + rounds):
                order = list(targets)
                random.shuffle(order)
                got = {}
                for n in order:
                    url, body, headers, _ = targets[n]
                    try:
                        ms, ok, mrg = await s7_call(sessions[n], url, body, headers, stream, n_chunks)
                    except (aiohttp.ClientError, asyncio.TimeoutError):
                        ms, ok, mrg = None, False, 0
                    if i < warm:
                        continue
                    if n in S7_PATHS:
                        merged[n] += mrg
                        bad[n] += not ok
                    if ok and ms is not None:
                        got[n] = ms
                for n in S7_PATHS:
                    baseline = targets[n][3]
                    if n in got and baseline in got:
                        added[n].append(got[n] - got[baseline])
        finally:
            for sess in sessions.values():
                await sess.close()
        key = "ttft_add_p50" if stream else "add_p50"
        for n in S7_PATHS:
            res[f"s7_{n}_{key}"] = pct(added[n], 50)
            if stream:
                res[f"s7_{n}_merged"], res[f"s7_{n}_bad"] = merged[n], bad[n]
            else:
                res[f"s7_{n}_bad_json"] = bad[n]
    return res


# ----------------------------------------------------------------------------------------------------
# S9: a dead top-priority channel. Rounds of two c=1 calls in random order, a healthy model and the model whose
# first channel answers 401; "added" is the dead model's call minus the healthy one in the same round. First
# with auto-disable off (every call pays the failed attempt), then with AUTO_DISABLE_AFTER=3 once the channel is
# auto-disabled (it must be back at the healthy figure). The health bookkeeping a healthy call does (ordering,
# success, hang-up registration, the trail) is also timed in process, alone.
# ----------------------------------------------------------------------------------------------------

async def _s9_pairs(arm, rounds, warm):
    healthy = Arm("healthy", arm.base, arm.base, arm.headers)
    dead = Arm("dead", arm.base, arm.base, arm.headers, model=MODEL_DEAD)
    added = []
    async with client_session() as sess:
        for i in range(warm + rounds):
            got = {}
            for a in random.sample([healthy, dead], 2):
                st, dt = await one_call(sess, a)
                if st == 200:
                    got[a.name] = dt
            if i >= warm and len(got) == 2:
                added.append(got["dead"] - got["healthy"])
    return added


async def s9_dead_channel(rig, sess, rounds, warm):
    base, key = rig.admin["aiproxy"]
    arm = rig.arms["aiproxy"]
    dead_id = rig.setup_info["aiproxy"]["bench-dead"]["id"]
    await api(sess, "PUT", f"{base}/api/option/", key, {"key": "auto_disable_after", "value": 0})
    await api(sess, "POST", f"{base}/api/channel/{dead_id}/status", key, {"status": 1})
    while_dead = await _s9_pairs(arm, rounds, warm)
    await api(sess, "PUT", f"{base}/api/option/", key, {"key": "auto_disable_after", "value": 3})
    await api(sess, "POST", f"{base}/api/channel/{dead_id}/status", key, {"status": 1})  # counts from zero
    calls, status, deadline = 0, 1, time.monotonic() + 30
    async with client_session() as s:
        while status != 3 and time.monotonic() < deadline:
            if calls < 3:
                await one_call(s, Arm("dead", base, base, arm.headers, model=MODEL_DEAD))
                calls += 1
            else:
                await asyncio.sleep(0.05)
            _, j = await api(sess, "GET", f"{base}/api/channel/{dead_id}", key)
            status = (j.get("data") or {}).get("status")
    after = await _s9_pairs(arm, rounds, warm) if status == 3 else []
    return {"s9_dead_add_p50": pct(while_dead, 50), "s9_dead_add_p99": pct(while_dead, 99),
            "s9_disabled_add_p50": pct(after, 50), "s9_disabled_add_p99": pct(after, 99),
            "s9_calls_to_disable": calls if status == 3 else None, "s9_health_us": health_bookkeeping_us(rig.args.app)}


_HEALTH_LOOP = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("aiproxy_bench_app", sys.argv[1])
mod = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)  # importing the app creates nothing (a test checks it)
routes = [mod.channel_route({"id": 1, "name": "c", "type": 1, "key": "sk-bench", "base_url": "http://h/v1",
                             "models": ["m"], "priority": 1}, mod.load_catalog())]
health, calls, n = mod.ChannelHealth(), set(), int(sys.argv[2])
event = b'data: {"choices":[{"delta":{"content":" tok001"}}]}\\n\\n'
t0 = time.perf_counter()
for _ in range(n):
    order, skipped = health.arrange(routes, "m", 0.0)
    watch = mod.HangupWatch(None, None, 0.0)
    calls.add(watch)
    health.succeeded(order[0].id, "m")
    mod.orjson.dumps([{"channel_id": order[0].id, "code": 200, "ms": 1}])
    order[0].scrub(event)
    calls.discard(watch)
print((time.perf_counter() - t0) / n * 1e6)
"""


def health_bookkeeping_us(app_path, n=50_000):
    """µs per call of what a healthy call adds for channel health (ordering, success, the hang-up registration,
    the trail, one scrubbed stream event), run alone in a process of its own."""
    out = subprocess.run([PY, "-c", _HEALTH_LOOP, str(Path(app_path).resolve()), str(n)], capture_output=True,
                         text=True, timeout=300)
    try:
        return float(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        log(f"  health bookkeeping timing failed: {out.stderr[-500:]}")
        return None


# ----------------------------------------------------------------------------------------------------
# aiproxy-local admin helpers
# ----------------------------------------------------------------------------------------------------

async def api(sess, method, url, key, body=None):
    async with sess.request(method, url, json=body, headers={"Authorization": f"Bearer {key}"}) as r:
        txt = await r.text()
        try:
            return r.status, json.loads(txt)
        except ValueError:
            return r.status, {"raw": txt}


async def overhead_histogram(sess, base, key):
    """aiproxy_overhead_seconds from GET /metrics: ({upper bound: cumulative count}, sum), or None."""
    try:
        async with sess.get(base + "/metrics", headers={"Authorization": f"Bearer {key}"}) as r:
            if r.status != 200:
                return None
            text = await r.text()
    except aiohttp.ClientError:
        return None
    buckets, total = {}, 0.0
    for m in re.finditer(r'^aiproxy_overhead_seconds_(bucket\{le="([^"]+)"\}|sum) (\S+)$', text, re.M):
        if m.group(2) is not None:
            buckets[float(m.group(2))] = float(m.group(3))
        else:
            total = float(m.group(3))
    return (buckets, total) if buckets else None


def overhead_figures(h0, h1):
    """Mean and p50 (interpolated in its bucket) of the overhead the gateway counted between two scrapes, in ms."""
    (b0, s0), (b1, s1) = h0, h1
    cum = sorted((le, b1[le] - b0.get(le, 0.0)) for le in b1)
    n = cum[-1][1]
    if n <= 0:
        return {}
    half, lo, below = n / 2, 0.0, 0.0
    p50 = None
    for le, c in cum:
        if c >= half:
            p50 = (lo + (le - lo) * (half - below) / max(c - below, 1e-9)) if le != float("inf") else lo
            break
        lo, below = le, c
    return {"s1_metrics_overhead_mean": (s1 - s0) / n * 1000.0, "s1_metrics_overhead_p50": p50 * 1000.0,
            "s1_metrics_calls": n}


async def log_total(sess, base, key, start_ms):
    end_ms = int(time.time() * 1000) + 3_600_000
    st, j = await api(sess, "GET", f"{base}/api/logs/?per_page=1&page=1&start_timestamp={start_ms}"
                                   f"&end_timestamp={end_ms}", key)
    if st != 200 or not isinstance(j, dict) or not j.get("success"):
        raise RuntimeError(f"GET /api/logs/ failed: {st} {str(j)[:300]}")
    return int((j.get("data") or {}).get("total") or 0)


async def settle_logs(sess, base, key, start_ms, expect=None, timeout=20.0, stable=2.0):
    """Poll the log count until it equals `expect` (if given) or stops changing for `stable` seconds."""
    t0 = time.monotonic()
    last, since = None, time.monotonic()
    while True:
        n = await log_total(sess, base, key, start_ms)
        now = time.monotonic()
        if expect is not None and n >= expect and now - t0 > 0.5:
            # give a straggler flush a moment, then read again
            await asyncio.sleep(0.5)
            return await log_total(sess, base, key, start_ms)
        if n != last:
            last, since = n, now
        elif now - since >= stable:
            return n
        if now - t0 > timeout:
            return n
        await asyncio.sleep(0.25)


async def setup_aiproxy(sess, base, key, up0, up50, logdir):
    info = {}
    for name, model, up in (("bench", MODEL, up0), ("bench-slow", MODEL_SLOW, up50)):
        body = {"type": 1, "name": name, "key": "sk-bench", "base_url": f"{up}/v1", "models": [model],
                "model_mapping": {}, "priority": 1}
        st, j = await api(sess, "POST", f"{base}/api/channel/", key, body)
        if not (st == 200 and j.get("success")) and "model config" in str(j).lower():
            # contract: channel models must exist in model_configs unless DISABLE_MODEL_CONFIG
            await api(sess, "POST", f"{base}/api/model_configs/", key, [{"model": model, "type": 1, "owner": "bench"}])
            st, j = await api(sess, "POST", f"{base}/api/channel/", key, body)
        if not (st == 200 and j.get("success")):
            raise RuntimeError(f"POST /api/channel/ failed: {st} {str(j)[:400]}")
        info[name] = j.get("data")
    for name, up, priority in (("bench-dead", f"{up0}/dead", 10), ("bench-dead-spare", up0, 1)):
        body = {"type": 1, "name": name, "key": "sk-bench", "base_url": f"{up}/v1", "models": [MODEL_DEAD],
                "priority": priority}
        st, j = await api(sess, "POST", f"{base}/api/channel/", key, body)
        if not (st == 200 and j.get("success")):
            raise RuntimeError(f"POST /api/channel/ ({name}) failed: {st} {str(j)[:400]}")
        info[name] = j.get("data")
    claude = {"type": 14, "name": "bench-claude", "key": "sk-bench", "base_url": f"{up0}/v1", "models": [MODEL_CLAUDE],
              "model_mapping": {}, "priority": 1}
    st, j = await api(sess, "POST", f"{base}/api/channel/", key, claude)
    if not (st == 200 and j.get("success")):
        raise RuntimeError(f"POST /api/channel/ (type 14) failed: {st} {str(j)[:400]}")
    # prefer a real token (the path users take); fall back to the admin key
    relay_key, how = key, "admin-key"
    st, j = await api(sess, "POST", f"{base}/api/tokens/", key, {"name": "bench"})
    if st == 200 and j.get("success") and isinstance(j.get("data"), dict) and j["data"].get("key"):
        k = j["data"]["key"]
        cand = k if k.startswith("sk-") else "sk-" + k
        probe = Arm("probe", base, base, {"Authorization": f"Bearer {cand}"})
        try:
            async with sess.post(probe.url(), data=probe.body(), headers=probe.req_headers()) as r:
                await r.read()
                if r.status == 200:
                    relay_key, how = cand, "token"
                else:
                    log(f"  token probe answered {r.status}; relaying with the admin key")
        except aiohttp.ClientError as e:
            log(f"  token probe failed ({e}); relaying with the admin key")
    else:
        log(f"  POST /api/tokens/ -> {st} {str(j)[:200]}; relaying with the admin key")
    info["relay_auth"] = how
    return relay_key, info


# ----------------------------------------------------------------------------------------------------
# S8: durability. What the log journal costs (S3's c=50 instant load on two API-only instances, one with it
# and one without) and what it buys (kill -9 under load, restart: every answered call has its row).
# ----------------------------------------------------------------------------------------------------

def logged_request_ids(db):
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return {r for (r,) in conn.execute("SELECT request_id FROM logs WHERE model = ?", (MODEL,))}


async def s8_journal_cost(rig, sess, run_idx, wrk_s):
    arms = []
    for name, env in (("s8-journal", {}), ("s8-no-journal", {"AIPROXY_NO_JOURNAL": "1"})):
        key = secrets.token_hex(16)
        p, base = await rig.spawn_aiproxy(sess, f"{name}-{run_idx}", key, env={"AIPROXY_NO_UI": "1", **env})
        relay_key, _ = await setup_aiproxy(sess, base, key, rig.up0, rig.up50, rig.logdir)
        arms.append(Arm(name, base, base, {"Authorization": f"Bearer {relay_key}"}, procs=[p]))
    rps = {}
    try:
        luadir = rig.tmp / "lua"
        luadir.mkdir(exist_ok=True)
        for arm in arms:
            lua = luadir / f"{arm.name}.lua"
            write_lua(lua, arm, False)
            await run_wrk(arm, str(lua), 50, 2, False, quiet=True)  # warm the pools
        for arm in arms[run_idx % 2:] + arms[:run_idx % 2]:  # the one that goes first alternates by run
            rps[arm.name] = (await run_wrk(arm, str(luadir / f"{arm.name}.lua"), 50, wrk_s, False))["rps"]
            await asyncio.sleep(0.5)
    finally:
        for arm in arms:
            arm.procs[0].stop()
    return {"s8_rps_journal": rps["s8-journal"], "s8_rps_no_journal": rps["s8-no-journal"]}


async def s8_kill(rig, sess, run_idx, seconds):
    """Load at c=50, SIGKILL the process, start it again on its data dir: which answered calls lack a row?"""
    key = secrets.token_hex(16)
    data_dir = rig.tmp / f"data-s8-kill-{run_idx}"
    p, base = await rig.spawn_aiproxy(sess, f"s8-kill-{run_idx}", key, data_dir=data_dir, env={"AIPROXY_NO_UI": "1"})
    relay_key, _ = await setup_aiproxy(sess, base, key, rig.up0, rig.up50, rig.logdir)
    arm = Arm("s8-kill", base, base, {"Authorization": f"Bearer {relay_key}"})
    answered = set()
    client = client_session(limit=50)

    async def worker():
        while p.alive():
            try:
                async with client.post(arm.url(), data=arm.body(), headers=arm.req_headers()) as r:
                    await r.read()
                    if r.status == 200:
                        answered.add(r.headers["x-request-id"])
            except (aiohttp.ClientError, asyncio.TimeoutError):
                pass

    workers = [asyncio.create_task(worker()) for _ in range(50)]
    await asyncio.sleep(seconds)
    os.killpg(p.pid, signal.SIGKILL)  # its own process group, by id
    p.p.wait()
    await asyncio.gather(*workers)
    await client.close()
    p.stop()
    db = data_dir / "aiproxy.db"
    pending = len(answered - logged_request_ids(db))
    again, _ = await rig.spawn_aiproxy(sess, f"s8-restart-{run_idx}", key, data_dir=data_dir,
                                       env={"AIPROXY_NO_UI": "1"})
    deadline = time.monotonic() + 30
    while not answered <= logged_request_ids(db) and time.monotonic() < deadline:
        await asyncio.sleep(0.25)
    again.stop()
    rows = logged_request_ids(db)
    return {"s8_kill_answered": len(answered), "s8_kill_rows": len(rows & answered),
            "s8_kill_lost": len(answered - rows), "s8_kill_pending": pending}


# ----------------------------------------------------------------------------------------------------
# orchestration
# ----------------------------------------------------------------------------------------------------

def litellm_cmd(args):
    if args.litellm_bin:
        return args.litellm_bin
    if importlib.util.find_spec("litellm") is None:
        return None
    return shutil.which("litellm")


def versions():
    out = {}
    for p in ("uvicorn", "uvloop", "httptools", "starlette", "fastapi", "httpx", "aiohttp", "nicegui",
              "sqlalchemy", "orjson", "litellm"):
        try:
            out[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            pass
    try:
        out["wrk"] = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0].strip()
    except OSError:
        pass
    return out


def _sha256(path):
    import hashlib
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


class Rig:
    def __init__(self, args):
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="aiproxy-bench-"))
        self.logdir = self.tmp / "logs"
        self.logdir.mkdir()
        self.procs = []
        self.arms = {}
        self.admin = {}      # arm name -> (base, admin key)
        self.setup_info = {}
        self.idle_rss = {}
        self.start_ms = int(time.time() * 1000) - 2000

    def spawn(self, name, argv, env=None):
        p = Proc(name, argv, self.logdir, env=env)
        self.procs.append(p)
        return p

    async def start(self, sess, want):
        a = self.args
        # upstreams: one process per delay setting
        u0p, u50p = free_port(), free_port()
        self.up0 = f"http://{HOST}:{u0p}"
        self.up50 = f"http://{HOST}:{u50p}"
        common = ["--chunks", str(a.chunks), "--gap-ms", str(a.gap_ms)]
        pu0 = self.spawn("upstream-0ms", [PY, str(HERE / "upstream.py"), "--port", str(u0p), "--delay-ms", "0"] + common)
        pu50 = self.spawn("upstream-50ms", [PY, str(HERE / "upstream.py"), "--port", str(u50p), "--delay-ms",
                                            str(a.slow_ms)] + common)
        await wait_http(sess, self.up0 + "/health", pu0)
        await wait_http(sess, self.up50 + "/health", pu50)
        self.upstream_procs = [pu0, pu50]
        self.arms["direct"] = Arm("direct", self.up0, self.up50, procs=[])

        if "bare" in want:
            b0, b50 = free_port(), free_port()
            pb0 = self.spawn("bare-0ms", [PY, str(HERE / "bare_relay.py"), "--port", str(b0), "--upstream", self.up0])
            pb50 = self.spawn("bare-50ms", [PY, str(HERE / "bare_relay.py"), "--port", str(b50), "--upstream", self.up50])
            await wait_http(sess, f"http://{HOST}:{b0}/", pb0)
            await wait_http(sess, f"http://{HOST}:{b50}/", pb50)
            self.arms["bare"] = Arm("bare", f"http://{HOST}:{b0}", f"http://{HOST}:{b50}", procs=[pb0],
                                    procs_slow=[pb50])

        for arm_name, no_ui in (("aiproxy", False), ("aiproxy-api", True)):
            if arm_name not in want:
                continue
            key = secrets.token_hex(16)
            t0 = time.monotonic()
            p, base = await self.spawn_aiproxy(sess, arm_name, key, env={"AIPROXY_NO_UI": "1"} if no_ui else {})
            t = time.monotonic() - t0
            relay_key, info = await setup_aiproxy(sess, base, key, self.up0, self.up50, self.logdir)
            info["startup_s"] = round(t, 2)
            self.setup_info[arm_name] = info
            self.admin[arm_name] = (base, key)
            self.arms[arm_name] = Arm(arm_name, base, base, {"Authorization": f"Bearer {relay_key}"}, procs=[p])

        if "litellm" in want:
            cmd = litellm_cmd(a)
            if cmd:
                port = free_port()
                ll_key = "sk-" + secrets.token_hex(32)
                cfg = self.tmp / "litellm.yaml"
                cfg.write_text(
                    "model_list:\n"
                    f"  - model_name: {MODEL}\n    litellm_params:\n      model: openai/{MODEL}\n"
                    f"      api_base: {self.up0}/v1\n      api_key: sk-bench\n"
                    f"  - model_name: {MODEL_SLOW}\n    litellm_params:\n      model: openai/{MODEL}\n"
                    f"      api_base: {self.up50}/v1\n      api_key: sk-bench\n"
                    "litellm_settings:\n  num_retries: 0\n  request_timeout: 600\n  telemetry: false\n"
                    "general_settings:\n  disable_spend_logs: true\n  disable_error_logs: true\n")
                p = self.spawn("litellm", [cmd, "--config", str(cfg), "--host", HOST, "--port", str(port),
                                           "--num_workers", "1"],
                               env={"LITELLM_MASTER_KEY": ll_key, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                                    "LITELLM_LOG": "ERROR",
                                    "LITELLM_TELEMETRY": "False", "DISABLE_ADMIN_UI": "True"})
                base = f"http://{HOST}:{port}"
                t = await wait_http(sess, base + "/health/liveliness", p, timeout=max(a.start_timeout, 120))
                self.setup_info["litellm"] = {"startup_s": round(t, 2), "cmd": cmd}
                self.arms["litellm"] = Arm("litellm", base, base, {"Authorization": f"Bearer {ll_key}"}, procs=[p])
            else:
                log("  litellm not installed (pip install 'litellm[proxy]' or pass --litellm-bin); arm skipped")

        # one request through each arm, then idle RSS
        for arm in self.arms.values():
            async with client_session() as s:
                st, _ = await one_call(s, arm)
                if st != 200:
                    raise RuntimeError(f"arm {arm.name}: first request answered {st}")
                async with s.post(arm.url(True), data=arm.body(True), headers=arm.req_headers()) as r:
                    await r.read()
                    arm.answered += 1
                    arm.ok2xx += 1 if r.status == 200 else 0
                    if r.status != 200:
                        raise RuntimeError(f"arm {arm.name}: first slow request answered {r.status}")
        await asyncio.sleep(1.0)
        for arm in self.arms.values():
            if arm.procs:
                self.idle_rss[arm.name] = round(sum(p.rss() for p in arm.procs), 1)

    async def spawn_aiproxy(self, sess, name, key, data_dir=None, env=None):
        """aiproxy_local.py on a free port with its own data dir (made if missing), ready; (process, base URL)."""
        data_dir = data_dir or self.tmp / f"data-{name}"
        data_dir.mkdir(exist_ok=True)
        port = free_port()
        p = self.spawn(name, [PY, str(Path(self.args.app).resolve()), "--host", HOST, "--port", str(port),
                              "--data-dir", str(data_dir), "--no-browser"], env={"ADMIN_KEY": key, **(env or {})})
        base = f"http://{HOST}:{port}"
        await wait_http(sess, base + "/api/status", p, timeout=self.args.start_timeout)
        return p, base

    def stop(self):
        for p in reversed(self.procs):
            try:
                p.stop()
            except Exception as e:  # noqa: BLE001
                log(f"  stopping {p.name}: {e}")


async def upstream_count(sess, base):
    async with sess.get(base + "/count") as r:
        return (await r.json())["requests"]


async def one_run(rig, sess, run_idx, P):
    arms = list(rig.arms.values())
    res = {a.name: {} for a in arms}
    rot = run_idx % len(arms)
    order = arms[rot:] + arms[:rot]  # interleave: a different arm goes first in each run
    log(f"run {run_idx + 1}: S1 c=1 latency ({P['s1_rounds']} rounds)")
    before = {n: await overhead_histogram(sess, *rig.admin[n]) for n in ("aiproxy", "aiproxy-api") if n in rig.arms}
    for n, m in (await s1_latency(arms, P["s1_rounds"], P["s1_warm"])).items():
        res[n].update(m)
    for n, h0 in before.items():  # the gateway's own account of the same calls (GET /metrics)
        h1 = await overhead_histogram(sess, *rig.admin[n])
        if h0 is not None and h1 is not None:
            res[n].update(overhead_figures(h0, h1))
    log(f"run {run_idx + 1}: S2 c=1 streaming ({P['s2_rounds']} rounds x {rig.args.chunks} chunks)")
    for n, m in (await s2_stream(arms, P["s2_rounds"], P["s2_warm"], rig.args.chunks)).items():
        res[n].update(m)
    if "aiproxy" in rig.arms:
        log(f"run {run_idx + 1}: S7 conversion cost ({P['s7_rounds']} rounds per mode)")
        res["aiproxy"].update(await s7_conversion(rig, P["s7_rounds"], P["s7_warm"], rig.args.chunks))
        log(f"run {run_idx + 1}: S9 dead top-priority channel ({P['s9_rounds']} rounds per phase)")
        res["aiproxy"].update(await s9_dead_channel(rig, sess, P["s9_rounds"], P["s9_warm"]))
    luadir = rig.tmp / "lua"
    luadir.mkdir(exist_ok=True)
    for conns, slow in ((50, False), (200, False), (50, True), (200, True)):
        tag = f"c{conns}_d{rig.args.slow_ms if slow else 0}"
        log(f"run {run_idx + 1}: S3 wrk {tag} ({P['wrk_s']} s per arm)")
        for arm in order:
            if arm.name == "aiproxy-api" and conns == 200:
                continue  # S6 compares UI vs API-only at c=50
            lua = luadir / f"{arm.name}-{'slow' if slow else 'fast'}.lua"
            if not lua.exists():
                write_lua(lua, arm, slow)
            r = await run_wrk(arm, str(lua), conns, P["wrk_s"], slow)
            for k in ("rps", "p50", "p99", "cpu_ms_per_req"):
                res[arm.name][f"s3_{tag}_{k}"] = r[k]
            res[arm.name][f"s3_{tag}_errors"] = r["non2xx"] + r["sock_err"]
            res[arm.name]["s3_errors"] = res[arm.name].get("s3_errors", 0) + r["non2xx"] + r["sock_err"]
            if arm.procs:
                res[arm.name]["rss_peak"] = max(res[arm.name].get("rss_peak", 0.0), r["rss_peak"])
            await asyncio.sleep(0.5)
        await asyncio.sleep(0.5)
    # S4: the aiproxy arms' log tables against what the clients saw
    for name in ("aiproxy", "aiproxy-api"):
        if name not in rig.arms:
            continue
        arm = rig.arms[name]
        base, key = rig.admin[name]
        log(f"run {run_idx + 1}: S4 log integrity ({name}, {P['s4_n']} requests at c=50)")
        before = await settle_logs(sess, base, key, rig.start_ms)
        up0 = await upstream_count(sess, rig.up0)
        load = await counted_load(arm, P["s4_n"], 50)
        up1 = await upstream_count(sess, rig.up0)
        after = await settle_logs(sess, base, key, rig.start_ms, expect=before + load["answered"])
        rows = after - before
        res[name].update({
            "s4_sent": load["sent"], "s4_ok": load["ok"], "s4_answered": load["answered"],
            "s4_client_failed": load["failed"], "s4_rows": rows,
            "s4_lost": max(0, load["answered"] - rows), "s4_extra": max(0, rows - load["answered"]),
            "s4_upstream_calls": up1 - up0,
            "s4_rows_total": after, "s4_ok_total": arm.ok2xx, "s4_answered_total": arm.answered,
            "s4_lost_total": max(0, arm.ok2xx - after),
        })
    for arm in arms:
        if arm.procs:
            res[arm.name]["rss_after"] = round(sum(p.rss() for p in arm.procs), 1)
    if "aiproxy" in rig.arms:
        log(f"run {run_idx + 1}: S8 durability (journal vs none, {P['wrk_s']} s each; kill -9 after "
            f"{P['s8_kill_s']} s of load)")
        res["aiproxy"].update(await s8_journal_cost(rig, sess, run_idx, P["wrk_s"]))
        res["aiproxy"].update(await s8_kill(rig, sess, run_idx, P["s8_kill_s"]))
    return res


# keys where the worst run (max) is reported instead of the median
WORST = {"s1_errors", "s2_merged", "s2_bad_streams", "s3_errors", "s4_lost", "s4_extra", "s4_client_failed",
         "s4_lost_total", "rss_peak", "s8_kill_lost", *(f"s7_{n}_{k}" for n in S7_PATHS for k in ("merged", "bad", "bad_json"))}


def combine(runs):
    med = {}
    arms = sorted({a for r in runs for a in r})
    for a in arms:
        keys = sorted({k for r in runs for k in r.get(a, {})})
        med[a] = {}
        for k in keys:
            vals = [r[a][k] for r in runs if a in r and r[a].get(k) is not None]
            if not vals:
                med[a][k] = None
            elif k == "s2_events_min":
                med[a][k] = min(vals)
            elif k in WORST:
                med[a][k] = max(vals)
            else:
                med[a][k] = statistics.median(vals)
    return med


# ----------------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------------

COLS = ["direct", "bare", "aiproxy", "aiproxy-api", "litellm"]
HEAD = ["scenario", "metric", "direct", "bare", "aiproxy-local", "api-only", "litellm", "ratio", "target", "result"]


def fmt(v, nd=2):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if isinstance(v, int):
        return str(v)
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.{nd}f}"


def build_table(med, idle, slow_ms, have):
    rows = []
    g = lambda a, k: (med.get(a) or {}).get(k)  # noqa: E731

    def row(sc, metric, key=None, vals=None, ratio=None, target="", ok=None, arms=COLS):
        vs = {}
        for a in COLS:
            if vals is not None:
                vs[a] = vals.get(a)
            elif key is not None and a in arms:
                vs[a] = g(a, key)
            else:
                vs[a] = None
        res = "" if ok is None else ("PASS" if ok else "FAIL")
        if target and ok is None:
            res = "n/a"
        rows.append({"scenario": sc, "metric": metric, "values": vs, "ratio": ratio, "target": target,
                     "result": res})

    def ratio(x, y):
        return (x / y) if (x is not None and y not in (None, 0)) else None

    ours, bare = "aiproxy", "bare"
    has_ours, has_ll = ours in have, "litellm" in have
    # S1
    row("S1", "c=1 latency p50 (ms)", "s1_lat_p50")
    r = ratio(g(ours, "s1_add_p50"), g(bare, "s1_add_p50"))
    row("S1", "added p50 (ms)", "s1_add_p50", ratio=r, target="<= 1.3x bare",
        ok=(r <= 1.3) if r is not None else None)
    r = ratio(g(ours, "s1_add_p99"), g(ours, "s1_add_p50"))
    row("S1", "added p99 (ms)", "s1_add_p99", ratio=r, target="<= 2.5x own p50",
        ok=(r <= 2.5) if r is not None else None)
    row("S1", "  p99 vs bare's added p50", vals={bare: g(bare, "s1_add_p50"), ours: g(ours, "s1_add_p99")},
        ratio=ratio(g(ours, "s1_add_p99"), g(bare, "s1_add_p50")), target="(info)")
    row("S1", "  /metrics overhead, same calls: p50 / mean (ms)",
        vals={a: (f"{fmt(g(a, 's1_metrics_overhead_p50'))} / {fmt(g(a, 's1_metrics_overhead_mean'))}"
                  if g(a, "s1_metrics_overhead_p50") is not None else None) for a in COLS},
        ratio=ratio(g(ours, "s1_metrics_overhead_p50"), g(ours, "s1_add_p50")), target="(info: vs added p50)")
    # S2
    row("S2", "c=1 TTFT p50 (ms)", "s2_ttft_p50")
    r = ratio(g(ours, "s2_add_ttft_p50"), g(bare, "s1_add_p50"))
    row("S2", "added TTFT p50 (ms)", "s2_add_ttft_p50", ratio=r, target="<= 1.5x bare S1 p50",
        ok=(r <= 1.5) if r is not None else None)
    r = ratio(g(ours, "s2_add_ttft_p50"), g(bare, "s2_add_ttft_p50"))
    row("S2", "  same, vs bare's own added TTFT", vals={bare: g(bare, "s2_add_ttft_p50"),
                                                       ours: g(ours, "s2_add_ttft_p50")}, ratio=r, target="(info)")
    row("S2", "added TTFT p99 (ms)", "s2_add_ttft_p99")
    row("S2", "inter-chunk gap p50 (ms)", "s2_gap_p50")
    row("S2", "added gap p50 / p99 (ms)", vals={a: (f"{fmt(g(a, 's2_add_gap_p50'))} / {fmt(g(a, 's2_add_gap_p99'))}"
                                                  if g(a, "s2_add_gap_p50") is not None else None) for a in COLS})
    fid = {}
    for a in COLS:
        if g(a, "s2_streams") is not None:
            fid[a] = (f"{g(a, 's2_events_min')}/{g(a, 's2_events_expected')} ev, "
                      f"{g(a, 's2_merged')} mrg, {g(a, 's2_bad_streams')} bad")
    okf = None
    if has_ours:
        okf = (g(ours, "s2_merged") == 0 and g(ours, "s2_bad_streams") == 0
               and g(ours, "s2_events_min") >= g(ours, "s2_events_expected"))
    row("S2", "chunks: min events, merged, bad", vals=fid, target="all, 0 merged", ok=okf)
    # S3
    for conns in (50, 200):
        tag = f"c{conns}_d0"
        r = ratio(g(ours, f"s3_{tag}_rps"), g(bare, f"s3_{tag}_rps"))
        row("S3", f"req/s c={conns}, instant", f"s3_{tag}_rps", ratio=r, target=">= 0.8x bare",
            ok=(r >= 0.8) if r is not None else None)
        row("S3", f"  latency p99 c={conns}, instant (ms)", f"s3_{tag}_p99")
    for conns in (50, 200):
        tag = f"c{conns}_d{slow_ms}"
        r = ratio(g(ours, f"s3_{tag}_rps"), g("direct", f"s3_{tag}_rps"))
        if conns == 50:
            row("S3", f"req/s c=50, {slow_ms} ms upstream", f"s3_{tag}_rps", ratio=r, target="eff >= 0.95",
                ok=(r >= 0.95) if r is not None else None)
            rb = ratio(g(bare, f"s3_{tag}_rps"), g("direct", f"s3_{tag}_rps"))
            gap = (rb - r) if (r is not None and rb is not None) else None
            row("S3", f"  efficiency c=50, {slow_ms} ms: bare / ours", vals={
                bare: rb, ours: r}, ratio=gap, target="gap <= 0.02", ok=(gap <= 0.02) if gap is not None else None)
        else:
            row("S3", f"req/s c=200, {slow_ms} ms upstream", f"s3_{tag}_rps", ratio=r, target="eff (info)")
        row("S3", f"  latency p99 c={conns}, {slow_ms} ms (ms)", f"s3_{tag}_p99")
    row("S3", "proxy CPU ms/request (c=50, instant)", "s3_c50_d0_cpu_ms_per_req",
        ratio=ratio(g(ours, "s3_c50_d0_cpu_ms_per_req"), g(bare, "s3_c50_d0_cpu_ms_per_req")))
    row("S3", "errors (non-2xx + socket), worst run", "s3_errors", target="0",
        ok=(g(ours, "s3_errors") == 0) if has_ours else None)
    # S4
    for a in ("aiproxy", "aiproxy-api"):
        if a not in have:
            continue
        lbl = "aiproxy-local" if a == "aiproxy" else "api-only"
        v = f"{fmt(g(a, 's4_rows'))}/{fmt(g(a, 's4_answered'))}"
        row("S4", f"{lbl}: log rows / answered (c=50 phase)", vals={a: v}, target="0 lost",
            ok=(g(a, "s4_lost") == 0 and g(a, "s4_extra") == 0))
        row("S4", f"{lbl}: upstream calls / requests", vals={a: f"{fmt(g(a, 's4_upstream_calls'))}/{fmt(g(a, 's4_sent'))}"},
            target="equal", ok=(g(a, "s4_upstream_calls") == g(a, "s4_sent")))
        row("S4", f"{lbl}: whole run rows / 2xx seen", vals={a: f"{fmt(g(a, 's4_rows_total'))}/{fmt(g(a, 's4_ok_total'))}"},
            target="rows >= 2xx", ok=(g(a, "s4_lost_total") == 0))
    # S5
    row("S5", "RSS idle (MB)", vals=dict(idle), target="<= 120 MB",
        ok=(idle[ours] <= 120) if ours in idle else None)
    row("S5", "RSS peak under load (MB)", "rss_peak", ratio=ratio(g(ours, "rss_peak"), g("litellm", "rss_peak")))
    # S6
    if has_ours and "aiproxy-api" in have:
        r = ratio(g(ours, "s3_c50_d0_rps"), g("aiproxy-api", "s3_c50_d0_rps"))
        row("S6", "UI vs API-only: req/s c=50 instant", vals={ours: g(ours, "s3_c50_d0_rps"),
                                                            "aiproxy-api": g("aiproxy-api", "s3_c50_d0_rps")},
            ratio=r, target=">= 0.95", ok=(r >= 0.95) if r is not None else None)
        tag = f"c50_d{slow_ms}"
        r = ratio(g(ours, f"s3_{tag}_rps"), g("aiproxy-api", f"s3_{tag}_rps"))
        row("S6", f"UI vs API-only: req/s c=50 {slow_ms} ms", vals={ours: g(ours, f"s3_{tag}_rps"),
                                                                  "aiproxy-api": g("aiproxy-api", f"s3_{tag}_rps")},
            ratio=r, target=">= 0.95", ok=(r >= 0.95) if r is not None else None)
        d = None
        if g(ours, "s1_add_p50") is not None and g("aiproxy-api", "s1_add_p50") is not None:
            d = g(ours, "s1_add_p50") - g("aiproxy-api", "s1_add_p50")
        row("S6", "UI vs API-only: S1 added p50 (ms)", vals={ours: g(ours, "s1_add_p50"),
                                                            "aiproxy-api": g("aiproxy-api", "s1_add_p50")},
            ratio=d, target="diff <= +0.1 ms", ok=(d <= 0.1) if d is not None else None)
    # S7
    if g(ours, "s7_pass_add_p50") is not None:
        for key, what in (("add_p50", "added p50"), ("ttft_add_p50", "stream added TTFT p50")):
            passed = g(ours, f"s7_pass_{key}")
            row("S7", f"{what}, {S7_PATHS['pass']} (ms)", vals={ours: passed})
            for n in ("messages", "claude"):
                r = ratio(g(ours, f"s7_{n}_{key}"), passed)
                row("S7", f"  {S7_PATHS[n]} (ms)", vals={ours: g(ours, f"s7_{n}_{key}")}, ratio=r,
                    target="<= 1.5x pass-through", ok=(r <= 1.5) if r is not None else None)
        for n, what in S7_PATHS.items():
            faults = (g(ours, f"s7_{n}_merged"), g(ours, f"s7_{n}_bad"), g(ours, f"s7_{n}_bad_json"))
            row("S7", f"  tokens 1:1, {what}: merged, bad stream, bad answer",
                vals={ours: f"{faults[0]} mrg, {faults[1]} bad, {faults[2]} bad"}, target="0, 0, 0",
                ok=all(f == 0 for f in faults))
    # S8
    if g(ours, "s8_rps_journal") is not None:
        r = ratio(g(ours, "s8_rps_journal"), g(ours, "s8_rps_no_journal"))
        row("S8", "req/s c=50 instant, API-only: journal / none",
            vals={ours: f"{fmt(g(ours, 's8_rps_journal'))} / {fmt(g(ours, 's8_rps_no_journal'))}"}, ratio=r,
            target=">= 0.95", ok=(r >= 0.95) if r is not None else None)
        row("S8", "kill -9 under load: rows / answered, worst run",
            vals={ours: f"{fmt(g(ours, 's8_kill_rows'))}/{fmt(g(ours, 's8_kill_answered'))}"}, target="0 lost",
            ok=g(ours, "s8_kill_lost") == 0)
        row("S8", "  answered calls whose row was not yet written at the kill", "s8_kill_pending", arms=(ours,),
            target="(info)")
    # S9
    if g(ours, "s9_dead_add_p50") is not None:
        dead, after = g(ours, "s9_dead_add_p50"), g(ours, "s9_disabled_add_p50")
        row("S9", "dead top channel (401): added p50 / p99 (ms)",
            vals={ours: f"{fmt(dead)} / {fmt(g(ours, 's9_dead_add_p99'))}"}, target="(info)")
        row("S9", "  after auto-disable: added p50 / p99 (ms)",
            vals={ours: f"{fmt(after)} / {fmt(g(ours, 's9_disabled_add_p99'))}"}, ratio=after,
            target="p50 within ±0.1 ms", ok=(abs(after) <= 0.1) if after is not None else None)
        calls = g(ours, "s9_calls_to_disable")
        row("S9", "  calls until auto-disabled (AUTO_DISABLE_AFTER=3)", vals={ours: calls}, target="3",
            ok=calls == 3)
        row("S9", "health bookkeeping per healthy call (µs, alone)", vals={ours: g(ours, "s9_health_us")},
            target="(info)")
    # LiteLLM
    if has_ll:
        r = ratio(g(ours, "s3_c50_d0_rps"), g("litellm", "s3_c50_d0_rps"))
        row("peer", "req/s c=50 instant: ours / litellm", vals={ours: g(ours, "s3_c50_d0_rps"),
                                                              "litellm": g("litellm", "s3_c50_d0_rps")},
            ratio=r, target=">= 30x", ok=(r >= 30) if r is not None else None)
        r = ratio(g("litellm", "s1_add_p50"), g(ours, "s1_add_p50"))
        row("peer", "S1 added p50: litellm / ours", vals={ours: g(ours, "s1_add_p50"),
                                                        "litellm": g("litellm", "s1_add_p50")},
            ratio=r, target=">= 15x", ok=(r >= 15) if r is not None else None)
    else:
        row("peer", "LiteLLM (litellm[proxy] not installed)", target=">= 30x rps, <= 1/15 lat")
    return rows


def headline(med, idle, slow_ms):
    """The four targets of the hot path (issue 18), each a ratio of arms measured in the same run."""
    g = lambda a, k: (med.get(a) or {}).get(k)  # noqa: E731
    out = []

    def line(what, ours, bare, value, target, ok):
        verdict = "n/a" if ok is None else ("PASS" if ok else "FAIL")
        out.append(f"  {what:<44} aiproxy {fmt(ours):>8}  bare {fmt(bare):>8}  -> {fmt(value):>6}  "
                   f"target {target:<12} {verdict}")

    o, b = g("aiproxy", "s3_c50_d0_rps"), g("bare", "s3_c50_d0_rps")
    r = o / b if o and b else None
    line("req/s c=50, instant upstream (ours / bare)", o, b, r, ">= 0.8", None if r is None else r >= 0.8)
    d = g("direct", f"s3_c50_d{slow_ms}_rps")
    eo = g("aiproxy", f"s3_c50_d{slow_ms}_rps") / d if d and g("aiproxy", f"s3_c50_d{slow_ms}_rps") else None
    eb = g("bare", f"s3_c50_d{slow_ms}_rps") / d if d and g("bare", f"s3_c50_d{slow_ms}_rps") else None
    gap = eb - eo if eo is not None and eb is not None else None
    line(f"efficiency c=50, {slow_ms} ms upstream (bare - ours)", eo, eb, gap, "<= 0.02",
         None if gap is None else gap <= 0.02)
    o, b = g("aiproxy", "s1_add_p50"), g("bare", "s1_add_p50")
    r = o / b if o is not None and b is not None and b > 0 and o >= 0 else None  # < 0: direct was the slowest
    line("added latency p50, c=1 (ours / bare)", o, b, r, "<= 1.3", None if r is None else r <= 1.3)
    o = idle.get("aiproxy")
    line("idle RSS with the UI (MB)", o, idle.get("bare"), o, "<= 120", None if o is None else o <= 120)
    return "Issue 18 hot-path targets (same run, both arms):\n" + "\n".join(out)


def render(rows):
    table = [HEAD]
    for r in rows:
        table.append([r["scenario"], r["metric"]] + [fmt(r["values"].get(a)) for a in COLS]
                     + [fmt(r["ratio"]), r["target"], r["result"]])
    w = [max(len(str(t[i])) for t in table) for i in range(len(HEAD))]
    lines = []
    for i, t in enumerate(table):
        lines.append("  ".join(str(c).ljust(w[j]) if j < 2 or j >= 8 else str(c).rjust(w[j])
                               for j, c in enumerate(t)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * x for x in w))
    return "\n".join(lines)


async def amain(args):
    want = [a.strip() for a in args.arms.split(",") if a.strip()]
    bad = [a for a in want if a not in ALL_ARMS]
    if bad:
        sys.exit(f"unknown arm(s) {bad}; choose from {ALL_ARMS}")
    if "direct" not in want:
        want.insert(0, "direct")
    if not shutil.which("wrk"):
        sys.exit("wrk not found: apt-get install wrk")
    P = dict(wrk_s=2, s1_rounds=60, s1_warm=5, s2_rounds=10, s2_warm=2, s4_n=300, s7_rounds=20, s7_warm=3,
             s8_kill_s=1.5, s9_rounds=30, s9_warm=3) \
        if args.quick else dict(wrk_s=args.wrk_seconds, s1_rounds=300, s1_warm=20, s2_rounds=60, s2_warm=3,
                                s4_n=2000, s7_rounds=200, s7_warm=10, s8_kill_s=4.0, s9_rounds=200, s9_warm=10)
    rig = Rig(args)
    runs = []
    t_start = time.time()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as sess:
            log(f"starting processes (logs in {rig.logdir})")
            await rig.start(sess, want)
            log("arms: " + ", ".join(rig.arms) + f"; idle RSS MB: {rig.idle_rss}")
            # warm-up: fill every proxy's connection pool
            luadir = rig.tmp / "lua"
            luadir.mkdir(exist_ok=True)
            for arm in rig.arms.values():
                for slow in (False, True):
                    lua = luadir / f"{arm.name}-{'slow' if slow else 'fast'}.lua"
                    write_lua(lua, arm, slow)
                    await run_wrk(arm, str(lua), 50, 2, slow, quiet=True)
            for i in range(args.runs):
                runs.append(await one_run(rig, sess, i, P))
    finally:
        rig.stop()
    med = combine(runs)
    have = set(rig.arms)
    rows = build_table(med, rig.idle_rss, args.slow_ms, have)
    table = render(rows)
    print(table)
    targets = headline(med, rig.idle_rss, args.slow_ms)
    print("\n" + targets)
    verdicts = [r["result"] for r in rows if r["result"] in ("PASS", "FAIL")]
    summary = f"{verdicts.count('PASS')} PASS, {verdicts.count('FAIL')} FAIL"
    print(f"\n{summary}  (medians of {args.runs} run(s){', quick' if args.quick else ''}; "
          f"{time.time() - t_start:.0f} s)")
    out = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "env": {"cpu": cpu_model(), "cores": os.cpu_count(), "kernel": platform.release(),
                "python": platform.python_version(), "versions": versions()},
        "config": {"quick": args.quick, "runs": args.runs, "arms": sorted(have), "slow_ms": args.slow_ms,
                   "chunks": args.chunks, "gap_ms": args.gap_ms, **P},
        "app": {"path": str(Path(args.app).resolve()), "sha256": _sha256(args.app)},
        "setup": rig.setup_info, "idle_rss_mb": rig.idle_rss,
        "runs": runs, "median": med, "table": rows, "table_text": table, "targets_text": targets, "summary": summary,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2, default=str))
    log(f"wrote {args.out}")
    if not args.keep:
        shutil.rmtree(rig.tmp, ignore_errors=True)
    else:
        log(f"kept {rig.tmp}")
    if args.strict and verdicts.count("FAIL"):
        sys.exit(1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke check: a few seconds per scenario")
    ap.add_argument("--runs", type=int, default=3, help="repeat the suite; medians are reported (default 3)")
    ap.add_argument("--out", default=str(HERE / "results.json"))
    ap.add_argument("--arms", default=",".join(ALL_ARMS),
                    help=f"comma list from {ALL_ARMS} (direct is always included; litellm only if installed)")
    ap.add_argument("--wrk-seconds", type=int, default=8, help="duration of each wrk run (full mode)")
    ap.add_argument("--chunks", type=int, default=10, help="content chunks per stream (S2)")
    ap.add_argument("--gap-ms", type=float, default=20.0, help="upstream gap between stream events (S2)")
    ap.add_argument("--slow-ms", type=int, default=50, help="delay of the slow upstream (0, 20 or 50)")
    ap.add_argument("--app", default=str(ROOT / "aiproxy_local.py"), help="the aiproxy_local.py to benchmark")
    ap.add_argument("--litellm-bin", default=os.environ.get("LITELLM_BIN"), help="path to a `litellm` CLI, e.g. in its own venv (default: $LITELLM_BIN, else `litellm` on PATH "
                         "when `import litellm` works)")
    ap.add_argument("--start-timeout", type=float, default=90.0)
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (process logs, data dirs)")
    ap.add_argument("--strict", action="store_true", help="exit 1 if any target FAILs")
    args = ap.parse_args()
    if args.quick and args.runs == 3 and "--runs" not in " ".join(sys.argv):
        args.runs = 1
    try:
        import uvloop
        uvloop.run(amain(args))
    except ImportError:
        asyncio.run(amain(args))


if __name__ == "__main__":
    main()
