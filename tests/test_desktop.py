"""App assembly & CLI; Settings & app state; UI pages: the double-click user (issue 20). The browser the app opens
arrives logged in with a one-time token, a second start finds the first and opens the browser there,
`aiproxy-local shortcut` adds (and removes) an app-menu entry, and "Stop the gateway" in the UI ends the process as
SIGTERM does. The packaged binary itself is built and started in test_pack.py."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import httpx
import pytest

import aiproxy_local as app
from conftest import child_env, free_port, launch_app, logged_rows, unique

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else shutil.which("chromium")


def fake_browser(tmp_path: Path) -> tuple[Path, Path]:
    """A BROWSER command that writes down each address it is asked to open (Python's webbrowser honours it)."""
    opened = tmp_path / "opened.txt"
    script = tmp_path / "browser.sh"
    script.write_text(f'#!/bin/sh\necho "$1" >> {opened}\n')
    script.chmod(0o755)
    return script, opened


def opened_urls(opened: Path, count: int = 1, timeout: float = 30) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if opened.exists() and len(urls := opened.read_text().split()) >= count:
            return urls
        time.sleep(0.05)
    raise AssertionError(f"the browser was not opened {count} time(s)")


def token_of(url: str) -> str:
    return urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["token"][0]


def launch_with_browser(tmp_path: Path, host: str = "127.0.0.1", data_dir: Path | None = None,
                        env: dict[str, str] | None = None):
    """Like conftest.launch_app, without --no-browser, and with a BROWSER that notes the addresses."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    script, opened = fake_browser(tmp_path)
    port = free_port()
    data = data_dir or tmp_path / "data"
    log = tmp_path / f"app-{port}.log"
    key = f"test-admin-{secrets.token_hex(8)}"
    cmd = [sys.executable, str(ROOT / "aiproxy_local.py"), "--host", host, "--port", str(port), "--data-dir",
           str(data)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=child_env({"ADMIN_KEY": key, "BROWSER": str(script), **(env or {})}))
    server = app_server(proc, port, key, data, log)
    server.wait_ready()
    return server, opened


def app_server(proc, port, key, data, log):
    from conftest import AppServer

    return AppServer(proc, f"http://127.0.0.1:{port}", key, data, log)


@pytest.fixture
def running(tmp_path):
    servers = []

    def start(**kw):
        server, opened = launch_with_browser(tmp_path / f"run{len(servers)}", **kw)
        servers.append(server)
        return server, opened

    yield start
    for server in servers:
        server.stop()


def signed_in(client: httpx.Client, base: str) -> bool:
    """Whether this browser's session opens a page (else the page sends it to /login)."""
    answer = client.get(f"{base}/channels", follow_redirects=False)
    assert answer.status_code in (200, 303), answer.status_code
    return answer.status_code == 200


# ---- one-time login token ----

def test_the_browser_the_app_opens_arrives_logged_in_and_the_link_works_once(running):
    server, opened = running()
    (url,) = opened_urls(opened)
    assert url.startswith(f"{server.url}/login?token=")
    token = token_of(url)
    assert len(token) >= 32
    with httpx.Client() as browser:
        arrival = browser.get(url, follow_redirects=False)
        assert arrival.status_code == 303 and arrival.headers["location"] == "/dashboard"  # token off the address
        assert signed_in(browser, server.url)
    with httpx.Client() as another:  # the same link again: spent
        again = another.get(url, follow_redirects=False)
        assert again.status_code == 200 and "already used or has expired" in again.text
        assert not signed_in(another, server.url)
    with httpx.Client() as guesser:
        assert guesser.get(f"{server.url}/login?token={secrets.token_urlsafe(32)}").status_code == 200
        assert not signed_in(guesser, server.url)
    output = server.output_tail(500)
    assert f"log in once with     : {url}" in output  # printed with the admin URL, for a terminal
    server.stop()
    output = server.log_path.read_text()
    assert output.count(token) == 1, "printed once in the banner, never logged"
    for stored in server.data_dir.rglob("*"):  # nor stored: database, journal, UI storage
        assert not stored.is_file() or token.encode() not in stored.read_bytes(), stored


def test_no_login_token_on_a_non_loopback_bind(running):
    server, opened = running(host="0.0.0.0")
    (url,) = opened_urls(opened)
    assert url == f"{server.url}/", "the browser opens without a token"
    assert "log in once" not in server.output_tail(500)
    secret = (server.data_dir / app.LOCAL_SECRET_FILE).read_text().strip()
    refused = httpx.get(f"{server.url}{app.LOGIN_LINK_PATH}", headers={app.LOCAL_SECRET_HEADER: secret})
    assert refused.status_code == 403 and refused.json()["success"] is False


def test_tokens_are_spent_on_the_first_try_and_refused_on_a_non_loopback_bind(tmp_path):
    state = app.AppState(settings=app.Settings(data_dir=str(tmp_path)), engine=None, catalog={}, admin_key="k",
                         admin_key_created=False)
    token = app.issue_login_token(state)
    assert app.spend_login_token(state, token) and not app.spend_login_token(state, token)
    assert not app.spend_login_token(state, "") and not app.spend_login_token(state, "made-up")
    stale = app.issue_login_token(state)
    state.login_tokens[stale] = time.monotonic() - 1  # past its LOGIN_TOKEN_SECONDS
    assert not app.spend_login_token(state, stale)
    exposed = app.AppState(settings=app.Settings(host="0.0.0.0"), engine=None, catalog={}, admin_key="k",
                           admin_key_created=False)
    assert app.issue_login_token(exposed) == ""
    exposed.login_tokens["planted"] = time.monotonic() + 60
    assert not app.spend_login_token(exposed, "planted")


def test_only_a_caller_holding_the_data_dirs_secret_gets_a_login_link(start_app):
    server = start_app(args=["--no-ui"])
    route = f"{server.url}{app.LOGIN_LINK_PATH}"
    secret = (server.data_dir / app.LOCAL_SECRET_FILE).read_text().strip()
    assert len(secret) >= 32 and (server.data_dir / app.LOCAL_SECRET_FILE).stat().st_mode & 0o077 == 0
    for headers in ({}, {app.LOCAL_SECRET_HEADER: "guess"}, server.headers):  # the admin key is not it either
        answer = httpx.get(route, headers=headers)
        assert answer.status_code == 403 and answer.json()["success"] is False, headers
    answer = httpx.get(route, headers={app.LOCAL_SECRET_HEADER: secret})
    assert answer.status_code == 200 and answer.json()["success"]
    assert answer.json()["data"]["url"].startswith(f"{server.url}/login?token=")


# ---- a second start ----

def test_a_second_start_opens_the_browser_logged_in_at_the_running_one_and_exits_0(running, tmp_path):
    server, opened = running()
    opened_urls(opened)
    script, second_opened = fake_browser(tmp_path)
    second = subprocess.run([sys.executable, str(ROOT / "aiproxy_local.py"), "--port", str(server.port),
                             "--data-dir", str(server.data_dir)], capture_output=True, text=True, timeout=60,
                            stdin=subprocess.DEVNULL, env=child_env({"BROWSER": str(script)}))
    assert second.returncode == 0, second.stderr
    assert f"aiproxy-local is already running at {server.url}/" in second.stdout and "Traceback" not in second.stderr
    (url,) = opened_urls(second_opened)
    assert url.startswith(f"{server.url}/login?token=")
    assert token_of(url) not in second.stdout + second.stderr, "the fresh token is not printed"
    with httpx.Client() as browser:
        assert browser.get(url, follow_redirects=False).status_code == 303
        assert signed_in(browser, server.url)


# ---- the app-menu entry ----

def desktop_file_validate() -> str:
    found = shutil.which("desktop-file-validate")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("desktop-file-validate is missing (apt-get install desktop-file-utils; .ci/run does)")
        pytest.skip("desktop-file-validate is missing (apt-get install desktop-file-utils)")
    return found


def run_shortcut(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "aiproxy_local.py"), "shortcut", *args], capture_output=True,
                          text=True, timeout=60, env=child_env({"HOME": str(home), "XDG_DATA_HOME": None}))


def test_shortcut_adds_a_valid_desktop_entry_that_runs_the_installed_app_and_remove_takes_it_away(tmp_path):
    validate = desktop_file_validate()
    home = tmp_path / "home"
    added = run_shortcut(home)
    assert added.returncode == 0, added.stderr
    entry = home / ".local" / "share" / "applications" / "aiproxy-local.desktop"
    assert f"added {entry}" in added.stdout
    checked = subprocess.run([validate, str(entry)], capture_output=True, text=True)
    assert checked.returncode == 0 and checked.stdout == checked.stderr == "", checked.stdout + checked.stderr
    text = entry.read_text()
    exec_line = re.search(r"^Exec=(.*)$", text, re.M).group(1)
    assert exec_line == str(Path(sys.executable).parent / "aiproxy-local")  # the installed console script
    assert Path(exec_line).exists() and "Terminal=false" in text
    removed = run_shortcut(home, "--remove")
    assert removed.returncode == 0 and not entry.exists() and f"removed {entry}" in removed.stdout
    assert "no shortcut" in run_shortcut(home, "--remove").stdout


def test_desktop_entries_quote_odd_paths_as_the_spec_says(tmp_path):
    validate = desktop_file_validate()
    entry = tmp_path / "odd.desktop"
    entry.write_text(app.desktop_entry(['/opt/my apps/aiproxy "local"', "--data-dir", "$HOME/100%\\x"]))
    checked = subprocess.run([validate, str(entry)], capture_output=True, text=True)
    assert checked.returncode == 0 and checked.stdout == "", checked.stdout
    assert r'Exec="/opt/my apps/aiproxy \\"local\\"" --data-dir "\\$HOME/100%%\\\\x"' in entry.read_text()


def test_the_entry_goes_where_each_desktop_looks(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("APPDATA", str(tmp_path / "Roaming"))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    assert app.shortcut_path("linux") == tmp_path / ".local/share/applications/aiproxy-local.desktop"
    assert app.shortcut_path("darwin") == tmp_path / "Applications/aiproxy-local.command"
    assert app.shortcut_path("win32") == tmp_path / "Roaming/Microsoft/Windows/Start Menu/Programs/aiproxy-local.lnk"
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    assert app.launcher() == [sys.executable], "run from the packaged binary, the entry points at it"


# ---- quit without a terminal ----

def test_stop_the_gateway_in_the_ui_drains_calls_like_sigterm(start_app, upstream, tmp_path):
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing")
        pytest.skip("Chromium is not installed")
    from playwright.sync_api import expect, sync_playwright

    from test_cli import stalled_stream

    server = start_app(env={"SHUTDOWN_GRACE_SECONDS": "1"})
    model = unique("ui-stop")
    server.add_channel(base_url=upstream.url("chunks-3+gap-60000"), models=[model])
    secret = (server.data_dir / app.LOCAL_SECRET_FILE).read_text().strip()
    link = httpx.get(f"{server.url}{app.LOGIN_LINK_PATH}", headers={app.LOCAL_SECRET_HEADER: secret}).json()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(link["data"]["url"])
        expect(page.get_by_text("Log out")).to_be_visible(timeout=30_000)  # arrived logged in
        page.goto(f"{server.url}/settings")
        expect(page.get_by_text("the terminal it was started from")).to_be_visible(timeout=30_000)
        stalled_stream(server, model)
        page.get_by_role("button", name="Stop the gateway").click()
        expect(page.get_by_text("Calls under way get 1 s to finish")).to_be_visible()
        page.locator(".q-dialog").get_by_role("button", name="Stop the gateway").click()
        server.proc.wait(30)
        browser.close()
    output = server.output_tail(200)
    assert server.proc.returncode == 0 and "Traceback" not in output
    assert "stop requested from the web UI" in output
    assert "1 call(s) under way (POST /v1/chat/completions) after 1 s are cancelled" in output
    (row,) = logged_rows(server.dsn, model)  # as after SIGTERM: the cut call keeps its row, and says why
    assert row["code"] == 503 and "shut down before the answer ended" in row["content"]


# ---- without a console ----

def test_a_packaged_app_without_a_terminal_logs_to_a_file(monkeypatch, tmp_path):
    class Stream:
        def __init__(self, tty: bool) -> None:
            self.tty = tty

        def isatty(self) -> bool:
            return self.tty

    monkeypatch.setattr(sys, "frozen", True, raising=False)
    for streams, console in (((None, None, None), False), ((Stream(False),) * 3, False),
                             ((Stream(True), Stream(False), Stream(False)), True)):
        monkeypatch.setattr(sys, "stdin", streams[0])
        monkeypatch.setattr(sys, "stdout", streams[1])
        monkeypatch.setattr(sys, "stderr", streams[2])
        assert app.has_console() is console, streams
    monkeypatch.delattr(sys, "frozen")
    monkeypatch.setattr(sys, "stderr", Stream(False))
    monkeypatch.setattr(sys, "stdout", Stream(False))
    assert app.has_console(), "python aiproxy_local.py with its output redirected keeps it"
