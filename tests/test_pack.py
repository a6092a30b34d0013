"""App assembly & CLI: `aiproxy-local pack` builds the packaged app (nicegui-pack, PyInstaller), and
the binary, started as a double-click starts it (no arguments, no terminal), opens the browser logged in, answers
/api/status, serves the UI, relays a call, logs to a file in the data dir, and a second start finds it.

Slow (the build takes a few minutes on two cores; the numbers are printed), so it is built once per run, in the
test's tmp dir, with PyInstaller's cache there too. Skipped without PyInstaller only when CI is unset."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import child_env, free_port, unique
from test_desktop import fake_browser, opened_urls, signed_in, token_of

ROOT = Path(__file__).resolve().parent.parent
BUILD_TIMEOUT = 1500  # seconds; a build takes 1-5 minutes on two busy cores


@pytest.fixture(scope="module")
def binary(tmp_path_factory) -> Path:
    try:
        import PyInstaller  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("PyInstaller is missing: it is in the test extra (pip install -e '.[test]')")
        pytest.skip("PyInstaller is missing: pip install '.[pack]'")
    work = tmp_path_factory.mktemp("pack")
    started = time.monotonic()
    built = subprocess.run([sys.executable, str(ROOT / "aiproxy_local.py"), "pack"], cwd=work, capture_output=True,
                           text=True, timeout=BUILD_TIMEOUT,
                           env=child_env({"PYINSTALLER_CONFIG_DIR": str(work / "cache"), "TMPDIR": str(work)}))
    seconds = time.monotonic() - started
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    path = work / "dist" / "aiproxy-local"
    assert path.is_file() and os.access(path, os.X_OK)
    assert f"built dist/aiproxy-local ({path.stat().st_size / 2**20:.0f} MiB)" in built.stdout
    print(f"\naiproxy-local pack: {seconds:.0f} s, binary {path.stat().st_size / 2**20:.1f} MiB")
    return path


def test_pack_without_pyinstaller_says_what_to_install(tmp_path):
    code = ("import importlib.util, sys, aiproxy_local as app; importlib.util.find_spec = lambda name: None; "
            "sys.exit(app.pack([]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "pip install '.[pack]'" in out.stderr


def test_the_packaged_app_double_clicked(binary, tmp_path, upstream):
    home, run_tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    run_tmp.mkdir()
    port = free_port()
    browser_cmd, opened = fake_browser(tmp_path)
    env = child_env({"HOME": str(home), "TMPDIR": str(run_tmp), "AIPROXY_PORT": str(port), "BROWSER": str(browser_cmd),
                     "ADMIN_KEY": None, "AIPROXY_DATA_DIR": None})
    base = f"http://127.0.0.1:{port}"
    output = tmp_path / "binary.out"
    data = home / ".aiproxy-local"
    log_file = data / "aiproxy-local.log"

    def said() -> str:  # what the app printed, and what it wrote to its log file (a double-click has no terminal)
        logged = log_file.read_text(errors="replace") if log_file.is_file() else "(no log file)"
        return f"output: {output.read_text(errors='replace')}\nlog file: {logged}"

    started = time.monotonic()
    with open(output, "wb") as out:  # no arguments, no terminal on any stream: a double-click
        proc = subprocess.Popen([str(binary)], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, said()
            try:
                status = httpx.get(f"{base}/api/status", timeout=2)
                if status.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, said()
            time.sleep(0.1)
        print(f"\npackaged app answers /api/status after {time.monotonic() - started:.1f} s")
        assert status.json()["success"] and status.json()["data"]["version"]

        (url,) = opened_urls(opened, timeout=60)
        assert url.startswith(f"{base}/login?token=")
        with httpx.Client() as browser:  # logged in on arrival, and the UI is served with its assets
            assert browser.get(url, follow_redirects=False).status_code == 303
            assert signed_in(browser, base)
            page = browser.get(f"{base}/settings")
            assert page.status_code == 200 and str(log_file) in page.text  # the log file, named on the page
            assets = httpx.get(f"{base}/_nicegui/{__import__('nicegui').__version__}/static/vue.esm-browser.prod.js")
            assert assets.status_code == 200 and len(assets.content) > 10_000

        key = (data / "admin_key").read_text().strip()
        headers = {"Authorization": f"Bearer {key}"}
        model = unique("packed")
        assert httpx.post(f"{base}/api/channel/", headers=headers, json={
            "type": 1, "name": unique("ch"), "key": "sk-fake", "base_url": upstream.url("ok"),
            "models": [model]}).json()["success"]
        import openai

        answer = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0).chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}])
        assert answer.choices[0].message.content and answer.model == model

        second = subprocess.run([str(binary)], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                timeout=120, env=env, cwd=tmp_path)
        assert second.returncode == 0 and "is already running" in second.stdout, second.stdout + second.stderr
        first, again = opened_urls(opened, 2, timeout=60)
        assert again.startswith(f"{base}/login?token=") and token_of(again) != token_of(first)
        with httpx.Client() as browser:
            assert browser.get(again, follow_redirects=False).status_code == 303 and signed_in(browser, base)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    assert proc.returncode == 0, said()
    assert log_file.is_file(), "without a terminal the log goes to the data dir"
    logged = log_file.read_text()
    assert "started at" in logged and token_of(url) not in logged and token_of(again) not in logged
    assert key not in logged
    assert list(run_tmp.iterdir()) == [], "the unpacked files are cleaned up"
