"""App assembly & CLI: the command line, the packaging, and the single file running on its own."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

import aiproxy_local as app
from conftest import answered_ids_under_load, free_port, logged_ids, logged_rows, unique

ROOT = Path(__file__).resolve().parent.parent


def pep723_dependencies() -> list[str]:
    text = (ROOT / "aiproxy_local.py").read_text(encoding="utf-8")
    block = re.search(r"^# /// script\n((?:#.*\n)+?)# ///$", text, re.M)
    assert block, "aiproxy_local.py must start with a PEP 723 `# /// script` block"
    toml = "\n".join(line[2:] if line.startswith("# ") else line[1:] for line in block.group(1).splitlines())
    return tomllib.loads(toml)["dependencies"]


def test_inline_script_metadata_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert sorted(pep723_dependencies()) == sorted(project["dependencies"])
    for name in ("nicegui", "httpx", "sqlmodel", "pymysql"):
        assert any(d.startswith(name) for d in project["dependencies"]), name


def test_console_script_and_module_agree():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == "aiproxy-local"
    assert project["scripts"]["aiproxy-local"] == "aiproxy_local:main"
    assert "test" in project["optional-dependencies"]


def test_help_lists_the_flags():
    out = subprocess.run([sys.executable, str(ROOT / "aiproxy_local.py"), "--help"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0
    for flag in ("--host", "--port", "--data-dir", "--no-browser"):
        assert flag in out.stdout


def test_wheel_ships_the_assets(tmp_path):
    """A fresh `pip install .` must carry assets/, which a plain py-module would leave behind."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(tmp_path), str(ROOT)], check=True, timeout=300, capture_output=True)
    (wheel,) = tmp_path.glob("aiproxy_local-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "aiproxy_local.py" in names
    for asset in (ROOT / "assets").glob("*.json"):
        assert any(n.endswith(f"data/share/aiproxy-local/assets/{asset.name}") for n in names), asset.name


def test_importing_the_module_creates_nothing(tmp_path):
    code = "import aiproxy_local, sys; sys.exit(0 if aiproxy_local._STATE is None else 1)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=60).returncode == 0


def test_api_only_mode_serves_relay_and_api_without_ui(start_app):
    server = start_app(args=["--no-ui"])
    assert httpx.get(f"{server.url}/api/status").json()["success"]
    assert httpx.get(f"{server.url}/v1/models", headers=server.headers).status_code == 200
    assert httpx.get(f"{server.url}/").status_code == 404


def test_shutdown_flushes_logs(start_app, upstream):
    """Every answered request keeps its row, even when the app stops right after answering."""
    server = start_app()
    server.add_channel(base_url=upstream.url("ok"), models=["flush-model"])
    client = server.openai()
    for _ in range(20):
        client.embeddings.create(model="flush-model", input="x")
    server.stop()
    again = start_app()
    assert again.api("GET", "/api/logs/", params={"model_name": "flush-model"})["data"]["total"] == 20


def test_banner_warns_when_exposed():
    state = app.AppState(settings=app.Settings(host="0.0.0.0"), engine=None, catalog={}, admin_key="k" * 48,
                         admin_key_created=False)
    assert "WARNING" in app._banner(state)


async def test_log_retention_survives_a_bad_value_and_a_database_error(tmp_path, monkeypatch, caplog):
    """A bad value or a database error is logged, and the next round runs: retention never dies silently."""
    monkeypatch.setattr(app, "RETENTION_CHECK_SECONDS", 0.05)
    engine = app.make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    app.create_schema(engine)
    state = app.AppState(settings=app.Settings(data_dir=str(tmp_path)), engine=engine, catalog={}, admin_key="k",
                         admin_key_created=False, options={"log_retention_days": "soon"})
    old = app.LogEntry({**app.LOG_DEFAULTS, "request_id": "old", "created_at": 1000}, None, 0)
    assert app.LogWriter(engine).write_batch([old]) == []  # as the writer writes it: with its summaries
    cutoffs: list[int] = []  # each round that reached the delete, by its cut-off
    delete = app.delete_logs_before
    monkeypatch.setattr(app, "delete_logs_before",
                        lambda engine, cutoff: cutoffs.append(cutoff) or delete(engine, cutoff))

    async def until(condition: Callable[[], bool]) -> None:  # a condition the loop makes true, not a fixed wait
        for _ in range(250):
            if condition():
                return
            await asyncio.sleep(0.02)
        raise AssertionError("the retention loop never got there")

    loop = asyncio.create_task(app._retention_loop(state))
    try:
        await until(lambda: any("log retention failed" in r.getMessage() for r in caplog.records))
        assert not loop.done() and cutoffs == []
        state.options["log_retention_days"] = 10**17  # a huge number keeps everything
        await until(lambda: 0 in cutoffs)  # a round ran with it: its cut-off is 0, before every row
        assert app.query_logs(engine, app.LogFilter(), 1, 10)[1] == 1
        state.options["log_retention_days"] = 1
        await until(lambda: app.query_logs(engine, app.LogFilter(), 1, 10)[1] == 0)
        assert not loop.done()
    finally:
        loop.cancel()


def test_rebuild_summaries_recomputes_the_dashboard_from_the_logs(tmp_path):
    """`aiproxy-local rebuild-summaries`: after a crash (or an import of logs) lost the summaries, the dashboard
    counts every call again, on the channel that answered it."""
    engine = app.make_engine(f"sqlite:///{tmp_path / 'aiproxy.db'}")
    app.create_schema(engine)
    now = app.now_ms()
    rows = [{**app.LOG_DEFAULTS, "request_id": f"r{i}", "request_at": now - i * 200_000 - 50,
             "created_at": now - i * 200_000, "model": "m", "channel": 1 + i % 2, "code": 500 if i % 7 else 200}
            for i in range(50)]  # about three hours
    assert app.LogWriter(engine).write_batch([app.LogEntry(r, None, 0) for r in rows]) == []
    span = (now - 4 * 3_600_000, now)

    def calls() -> list[tuple[int, int, int]]:
        series = app.dashboard_answer(engine, *span, "UTC", "hour").series
        by_channel = collections.Counter()
        for item in (i for p in series for i in p["summary"]):
            by_channel.update({(item["channel_id"], "calls"): item["request_count"],
                               (item["channel_id"], "errors"): item["exception_count"]})
        return sorted((ch, by_channel[(ch, "calls")], by_channel[(ch, "errors")]) for ch in (1, 2))

    written = calls()
    assert written == [(1, 25, sum(1 for i in range(0, 50, 2) if i % 7)), (2, 25, sum(1 for i in range(1, 50, 2) if i % 7))]
    with engine.begin() as conn:
        conn.execute(app.sa.delete(app.SummaryHour))
        conn.execute(app.sa.delete(app.SummaryMinute))
    assert calls() == [(1, 0, 0), (2, 0, 0)]
    out = subprocess.run([sys.executable, str(ROOT / "aiproxy_local.py"), "rebuild-summaries", "--data-dir",
                          str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert re.search(r"rebuilt the summaries from the logs in [0-9.]+ s: [0-9]+ per-minute rows", out.stdout)
    assert calls() == written
    engine.dispose()


# ---- shutdown: bounded, and no answered call without its row ----

def stalled_stream(server, model: str) -> threading.Thread:
    """A client reading a stream whose upstream stalls after its first chunk; returns once a chunk is in."""
    first = threading.Event()

    def read() -> None:
        try:
            with httpx.stream("POST", f"{server.url}/v1/chat/completions", headers=server.headers, timeout=120,
                              json={"model": model, "stream": True, "messages": [{"role": "user", "content": "x"}]}) as r:
                for _ in r.iter_bytes():
                    first.set()
        except httpx.HTTPError:
            pass  # the shutdown cuts it
        first.set()

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    assert first.wait(30)
    return thread


def exit_within(server, seconds: float) -> float:
    started = time.monotonic()
    server.proc.wait(seconds)
    return time.monotonic() - started


def test_sigterm_under_load_keeps_a_row_for_every_answered_call(start_app, upstream):
    """Issues 9 and 10: calls under way finish, every answered call has its row, nothing is left over."""
    server = start_app(args=["--no-ui"])
    model = unique("sigterm")
    server.add_channel(base_url=upstream.url("delay-20"), models=[model])
    answered = answered_ids_under_load(server, model, 1.5, until=lambda _: server.proc.send_signal(signal.SIGTERM))
    exit_within(server, 30)
    assert server.proc.returncode == 0 and "Traceback" not in server.output_tail(200)
    rows = logged_ids(server.dsn, model)
    assert len(answered) > 20 and rows == answered
    assert list((server.data_dir / app.JOURNAL_DIR).iterdir()) == [], "a clean stop leaves no journal behind"
    print(f"SIGTERM under load: {len(answered)} answered, {len(rows)} rows")


def test_a_stalled_stream_holds_sigterm_no_longer_than_the_grace(start_app, upstream):
    server = start_app(args=["--no-ui"], env={"SHUTDOWN_GRACE_SECONDS": "1"})
    model = unique("stall")
    server.add_channel(base_url=upstream.url("chunks-3+gap-60000"), models=[model])
    stalled_stream(server, model)
    server.proc.send_signal(signal.SIGTERM)
    assert exit_within(server, 30) < 15  # 1 s of grace, then the cancel; not the 60 s the stream would take
    output = server.output_tail(200)
    assert "1 call(s) under way (POST /v1/chat/completions) after 1 s are cancelled" in output
    assert "Traceback" not in output and server.proc.returncode == 0
    (row,) = logged_rows(server.dsn, model)  # the cancelled call keeps its row, and says why
    assert row["code"] == 503 and "shut down before the answer ended" in row["content"]
    assert row["input_tokens"] > 0 and row["usage_estimated"]  # the tokens so far, estimated


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl+C"])
def test_a_second_signal_exits_at_once_without_a_traceback_or_a_lost_row(start_app, upstream, sig):
    server = start_app(args=["--no-ui"], env={"SHUTDOWN_GRACE_SECONDS": "120"})
    model = unique("twice")
    server.add_channel(base_url=upstream.url("ok"), models=[model], name=unique("fast"), priority=1)
    stalled = unique("stalled")
    server.add_channel(base_url=upstream.url("chunks-3+gap-60000"), models=[stalled])
    client = server.openai()
    answered = {client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "x"}]).headers["x-request-id"] for _ in range(20)}
    stalled_stream(server, stalled)
    server.proc.send_signal(sig)
    with pytest.raises(subprocess.TimeoutExpired):
        server.proc.wait(1.5)  # the first signal waits for the stalled stream (its grace is 120 s)
    server.proc.send_signal(sig)
    assert exit_within(server, 30) < 10
    output = server.output_tail(200)
    assert "second signal, stopping now; 1 call(s) under way" in output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output
    assert logged_ids(server.dsn, model) == answered


# ---- a second start ----

def run_second_start(tmp_path: Path, port: int, **env: str) -> subprocess.CompletedProcess[str]:
    from conftest import child_env

    data = tmp_path / "second"
    return subprocess.run([sys.executable, str(ROOT / "aiproxy_local.py"), "--port", str(port), "--data-dir",
                           str(data)], capture_output=True, text=True, timeout=60,
                          env=child_env({"ADMIN_KEY": "second-key", **env}))


def test_a_second_start_on_the_same_port_opens_the_running_one(start_app, tmp_path):
    running = start_app(args=["--no-ui"])
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser.sh"
    browser.write_text(f'#!/bin/sh\necho "$1" > {opened}\n')
    browser.chmod(0o755)
    second = run_second_start(tmp_path, running.port, BROWSER=str(browser))
    assert second.returncode == 0, second.stderr
    assert f"aiproxy-local is already running at {running.url}/" in second.stdout
    assert "is running\n" not in second.stdout and "Traceback" not in second.stderr
    deadline = time.monotonic() + 10
    while not opened.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert opened.read_text().strip() == f"{running.url}/"
    assert not (tmp_path / "second" / "aiproxy.db").exists(), "it bound first, before opening a database"


def test_a_port_held_by_another_program_is_a_clear_error(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        second = run_second_start(tmp_path, holder.getsockname()[1], AIPROXY_NO_BROWSER="1")
    assert second.returncode == 1 and "Traceback" not in second.stderr
    assert "another program uses it. Choose another port with --port" in second.stderr


# ---- the default port: 3010, where FastGPT looks (issue 21) ----

def start_plain(tmp_path: Path, data: Path, env: dict[str, str], name: str) -> tuple[subprocess.Popen, Path]:
    """The app as a user starts it: no --port, no --host."""
    from conftest import child_env

    log = tmp_path / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / "aiproxy_local.py"), "--data-dir", str(data),
                                 "--no-browser"], stdout=out, stderr=subprocess.STDOUT,
                                env=child_env({"AIPROXY_PORT": None, "ADMIN_KEY": None, **env}))
    return proc, log


def ready_on(proc: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/api/status", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise AssertionError(f"not answering on {port}:\n{log.read_text()}")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(30)


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_with_no_port_it_listens_on_3010_and_an_older_data_dir_hears_once_that_the_default_moved(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "admin_key").write_text("older-admin-key-0123456789\n")  # a data dir from when 3000 was the default
    if not port_is_free(3010):  # a gateway someone runs on this machine: the default is still what is tried
        proc, log = start_plain(tmp_path, data, {}, "taken")
        proc.wait(60)
        assert "127.0.0.1:3010" in log.read_text()
        return
    proc, log = start_plain(tmp_path, data, {}, "first")
    try:
        ready_on(proc, 3010, log)
        output = log.read_text()
        assert "web UI and admin API : http://127.0.0.1:3010" in output
        assert "AIPROXY_API_ENDPOINT=http://127.0.0.1:3010\n" in output
        assert "AIPROXY_API_TOKEN=ol…89 " in output and "older-admin-key-0123456789" not in output
        assert "NOTE: The default port moved from 3000 to 3010" in output and "--port 3000" in output
    finally:
        stop(proc)
    proc, log = start_plain(tmp_path, data, {}, "second")
    try:
        ready_on(proc, 3010, log)
        assert "AIPROXY_API_ENDPOINT=http://127.0.0.1:3010" in log.read_text()
        assert "default port moved" not in log.read_text(), "said once"
    finally:
        stop(proc)


def test_aiproxy_port_overrides_the_default(tmp_path):
    port = free_port()
    data = tmp_path / "data"
    data.mkdir()
    (data / "admin_key").write_text("older-admin-key-0123456789\n")
    proc, log = start_plain(tmp_path, data, {"AIPROXY_PORT": str(port)}, "env")
    try:
        ready_on(proc, port, log)
        output = log.read_text()
        assert f"AIPROXY_API_ENDPOINT=http://127.0.0.1:{port}\n" in output
        assert "default port moved" not in output, "a chosen port relies on no default"
    finally:
        stop(proc)


# ---- body size limits ----

def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.M).group(1)) / 1024


def fifty_megabytes() -> Iterator[bytes]:
    """A 50 MB body sent in chunks without a Content-Length, so no header announces its size."""
    chunk = b"x" * (1024 * 1024)
    for _ in range(50):
        yield chunk


def test_oversized_bodies_are_refused_without_being_held(start_app, upstream):
    """Issue 10: three 50 MB chat bodies took the process to 581 MB. Each is refused with 413 in its route's
    envelope, and the process's peak memory barely moves."""
    server = start_app(args=["--no-ui", "--relay-max-body-mib", "1", "--api-max-body-mib", "1"])
    model = unique("size")
    server.add_channel(base_url=upstream.url("ok"), models=[model])
    under = {"model": model, "messages": [{"role": "user", "content": "y" * 900_000}]}
    assert httpx.post(f"{server.url}/v1/chat/completions", headers=server.headers, json=under,
                      timeout=60).status_code == 200
    assert server.api("POST", "/api/channel/", json={"type": 1, "key": "k", "name": unique("c"),
                                                     "models": [model], "padding": "z" * 900_000})["success"]
    before = peak_rss_mb(server.proc.pid)

    def relay_call(_: int) -> httpx.Response:
        return httpx.post(f"{server.url}/v1/chat/completions", headers=server.headers, content=fifty_megabytes(),
                          timeout=120)

    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(relay_call, range(3)))
    for answer in answers:
        assert answer.status_code == 413
        assert answer.json()["error"]["code"] == "request_too_large" and "1 MiB" in answer.json()["error"]["message"]
    declared = httpx.post(f"{server.url}/api/channel/", headers=server.headers, content=b"{" * 50_000_000,
                          timeout=120)
    assert declared.status_code == 413 and declared.json() == {
        "success": False, "message": "The request body is larger than 1 MiB (API_MAX_BODY_MIB)."}
    chunked = httpx.post(f"{server.url}/api/channel/", headers=server.headers, content=fifty_megabytes(),
                         timeout=120)
    assert chunked.status_code == 413 and chunked.json()["success"] is False
    anonymous = httpx.post(f"{server.url}/api/channel/", content=fifty_megabytes(), timeout=120)
    assert anonymous.status_code == 401 and "admin key" in anonymous.json()["message"]
    growth = peak_rss_mb(server.proc.pid) - before
    print(f"peak RSS growth {growth:.1f} MB")
    assert growth < 30, f"peak memory grew by {growth:.0f} MB for bodies of 50 MB"
    assert server.api("GET", "/api/channels/all")["success"], "the app still answers"


def test_body_limits_default_to_2_and_20_mib():
    assert (app.Settings().api_max_body_mib, app.Settings().relay_max_body_mib) == (2, 20)
    s = app.load_settings({"API_MAX_BODY_MIB": "5", "RELAY_MAX_BODY_MIB": "64"})
    assert (s.api_max_body_mib, s.relay_max_body_mib) == (5, 64)


# ---- DNS rebinding and CORS ----

def test_bound_to_loopback_it_answers_only_loopback_names(start_app, upstream):
    """A page on evil.example whose name is pointed at 127.0.0.1 (DNS rebinding) reaches nothing; each route
    refuses in its own shape."""
    server = start_app(env={"ALLOWED_HOSTS": "gateway.example, Other.Example"})
    port = server.port
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "LOCALHOST", f"gateway.example:{port}",
                 "other.example"):
        assert httpx.get(f"{server.url}/api/status", headers={"Host": host}).status_code == 200, host
    evil = {"Host": f"evil.example:{port}", **server.headers}
    api = httpx.get(f"{server.url}/api/channels/all", headers=evil)
    assert api.status_code == 403 and api.json()["success"] is False and "ALLOWED_HOSTS" in api.json()["message"]
    chat = httpx.post(f"{server.url}/v1/chat/completions", headers=evil, json={"model": "m", "messages": []})
    assert chat.status_code == 403 and chat.json()["error"]["code"] == "host_not_allowed"
    messages = httpx.post(f"{server.url}/v1/messages", headers=evil, json={"model": "m", "messages": []})
    assert messages.status_code == 403 and messages.json()["type"] == "error"
    page = httpx.get(f"{server.url}/", headers=evil)
    assert page.status_code == 403 and "evil.example" in page.text
    with socket.create_connection(("127.0.0.1", port)) as ws:  # the UI's websocket, from the rebound page
        ws.sendall(f"GET /_nicegui_ws/socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: evil.example:{port}\r\n"
                   "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode())
        assert ws.recv(200).startswith(b"HTTP/1.1 403")


def test_only_a_loopback_bind_checks_the_host():
    assert app.is_loopback("127.0.0.1") and app.is_loopback("::1") and app.is_loopback("localhost")
    assert not app.is_loopback("0.0.0.0") and not app.is_loopback("192.168.1.5") and not app.is_loopback("::")


def test_browsers_may_call_v1_from_any_origin_and_api_only_from_listed_ones(start_app, upstream):
    server = start_app(args=["--no-ui"], env={"CORS_ORIGINS": "https://admin.example"})
    model = unique("cors")
    server.add_channel(base_url=upstream.url("ok"), models=[model])
    preflight = httpx.options(f"{server.url}/v1/chat/completions", headers={
        "Origin": "https://chat.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert preflight.status_code == 204 and preflight.headers["access-control-allow-origin"] == "*"
    assert preflight.headers["access-control-allow-headers"] == "authorization, content-type"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "access-control-allow-credentials" not in preflight.headers
    call = httpx.post(f"{server.url}/v1/chat/completions", json={"model": model, "messages": [{"role": "user",
                      "content": "hi"}]}, headers={"Origin": "https://chat.example", **server.headers}, timeout=30)
    assert call.status_code == 200 and call.headers["access-control-allow-origin"] == "*"
    assert "x-request-id" in call.headers["access-control-expose-headers"]
    sdk = server.openai().chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "hi"}])
    assert "access-control-allow-origin" not in sdk.headers, "no Origin, no CORS headers"

    stranger = {"Origin": "https://chat.example", **server.headers}
    assert "access-control-allow-origin" not in httpx.get(f"{server.url}/api/channels/all", headers=stranger).headers
    refused = httpx.options(f"{server.url}/api/channels/all", headers={
        "Origin": "https://chat.example", "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in refused.headers
    listed = {"Origin": "https://admin.example"}
    preflight = httpx.options(f"{server.url}/api/channels/all", headers={
        **listed, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"})
    assert preflight.status_code == 204 and preflight.headers["access-control-allow-origin"] == "https://admin.example"
    answer = httpx.get(f"{server.url}/api/channels/all", headers={**listed, **server.headers})
    assert answer.json()["success"] and answer.headers["access-control-allow-origin"] == "https://admin.example"


# ---- aiproxy-local run claude|codex|gemini (the real tools run in test_clients.py) ----

FAKE_TOOL = """#!/bin/sh
# prints what the launcher gave it, as the real tool would read it
echo "args: $*"
for name in ANTHROPIC_BASE_URL ANTHROPIC_AUTH_TOKEN ANTHROPIC_MODEL CLAUDE_CONFIG_DIR CODEX_HOME AIPROXY_API_KEY \\
            GEMINI_CLI_HOME GOOGLE_GEMINI_BASE_URL GEMINI_API_KEY GEMINI_MODEL GEMINI_CLI_TRUST_WORKSPACE; do
    eval "value=\\${$name:-}"
    [ -n "$value" ] && echo "$name=$value"
done
exit 3
"""


def run_launcher(tmp_path: Path, port: int, data_dir: Path, *args: str, path: str = "",
                 admin_key: str | None = None) -> subprocess.CompletedProcess[str]:
    from conftest import child_env
    env = child_env({"PATH": f"{path}:/usr/bin:/bin" if path else "/usr/bin:/bin", "HOME": str(tmp_path / "home"),
                     "AIPROXY_NO_UI": "1",
                     "ADMIN_KEY": admin_key})
    return subprocess.run([sys.executable, str(ROOT / "aiproxy_local.py"), "--port", str(port), "--data-dir",
                           str(data_dir), "run", *args], env=env, capture_output=True, text=True, timeout=60)


def test_run_starts_a_gateway_makes_a_key_per_tool_and_stops_the_gateway(tmp_path):
    from conftest import free_port
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("claude", "codex", "gemini"):
        (bin_dir / name).write_text(FAKE_TOOL)
        (bin_dir / name).chmod(0o755)
    port, data = free_port(), tmp_path / "data"
    first = run_launcher(tmp_path, port, data, "claude", "--model", "deepseek-chat", "-p", "Say hello",
                         path=str(bin_dir))
    assert first.returncode == 3, first.stderr  # the tool's own exit code
    lines = dict(line.split("=", 1) for line in first.stdout.splitlines()[1:])
    assert first.stdout.splitlines()[0] == "args: -p Say hello"  # --model is the launcher's, the rest the tool's
    assert lines["ANTHROPIC_BASE_URL"] == f"http://127.0.0.1:{port}" and lines["ANTHROPIC_MODEL"] == "deepseek-chat"
    assert lines["CLAUDE_CONFIG_DIR"] == str(data / "clients" / "claude")
    assert "starting the gateway" in first.stderr
    with pytest.raises(httpx.ConnectError):  # the gateway it started stopped with the tool
        httpx.get(f"http://127.0.0.1:{port}/api/status", timeout=2)
    admin = (data / "admin_key").read_text().strip()
    again = run_launcher(tmp_path, port, data, "claude", path=str(bin_dir))
    assert dict(line.split("=", 1) for line in again.stdout.splitlines()[1:])["ANTHROPIC_AUTH_TOKEN"] == \
        lines["ANTHROPIC_AUTH_TOKEN"]  # the key named claude, reused
    codex = run_launcher(tmp_path, port, data, "codex", "exec", "hi", path=str(bin_dir))
    config = (data / "clients" / "codex" / "config.toml").read_text()
    assert f'base_url = "http://127.0.0.1:{port}/v1"' in config and 'model_provider = "aiproxy"' in config
    assert "AIPROXY_API_KEY=sk-" in codex.stdout and lines["ANTHROPIC_AUTH_TOKEN"] not in codex.stdout
    gemini = run_launcher(tmp_path, port, data, "gemini", "-p", "hi", path=str(bin_dir))
    assert "GEMINI_CLI_TRUST_WORKSPACE=true" in gemini.stdout
    settings = (data / "clients" / "gemini" / ".gemini" / "settings.json").read_text()
    assert '"selectedType": "gemini-api-key"' in settings
    assert admin and not (tmp_path / "home" / ".claude").exists()  # the user's own config is never touched


def test_run_names_the_npm_command_of_a_missing_tool(tmp_path):
    from conftest import free_port
    done = run_launcher(tmp_path, free_port(), tmp_path / "data", "gemini", "-p", "hi", path=str(tmp_path))
    assert done.returncode == 127
    assert "Gemini CLI is not installed" in done.stderr and "npm install -g @google/gemini-cli" in done.stderr
    unknown = run_launcher(tmp_path, free_port(), tmp_path / "data", "vim")
    assert unknown.returncode != 0 and "name a tool: claude, codex, gemini" in unknown.stderr
