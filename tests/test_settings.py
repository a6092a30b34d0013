"""Section 1, Settings & app state: defaults, environment and flags; the admin key's first run; masking."""

from __future__ import annotations

import stat
from pathlib import Path

import httpx

import aiproxy_local as app

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def test_defaults_then_environment_then_flags():
    assert app.load_settings({}) == app.Settings()
    assert app.Settings().host == "127.0.0.1" and app.Settings().port == 3000  # local-only unless told otherwise
    env = {"AIPROXY_PORT": "4000", "RETRY_TIMES": "1", "AIPROXY_NO_BROWSER": "true", "AIPROXY_DATA_DIR": "/x"}
    s = app.load_settings(env)
    assert (s.port, s.retry_times, s.no_browser, s.data_dir) == (4000, 1, True, "/x")
    s = app.load_settings(env, ["--port", "5000", "--data-dir", "/y", "--host", "0.0.0.0"])
    assert (s.port, s.data_dir, s.host, s.retry_times) == (5000, "/y", "0.0.0.0", 1)


def test_default_dsn_is_sqlite_in_the_data_dir():
    s = app.load_settings({"AIPROXY_DATA_DIR": "/tmp/somewhere"})
    assert s.dsn == "sqlite:////tmp/somewhere/aiproxy.db"
    assert app.load_settings({"SQL_DSN": "postgresql://u@h/db"}).dsn == "postgresql://u@h/db"
    assert app.Settings().data_path == Path.home() / ".aiproxy-local"


def test_admin_key_is_not_a_flag():
    """A key on the command line would show up in `ps` for every user of the machine."""
    assert "--admin-key" not in app.build_arg_parser().format_help()


def test_mask_key():
    assert app.mask_key("sk-abcdefghijklmnop89") == "sk-ab…89"
    assert app.mask_key("abcdefghijkl") == "ab…kl"
    assert app.mask_key("short") == "•••••" and app.mask_key("") == ""


def test_generated_keys_are_strong():
    keys = {app.generate_key() for _ in range(50)}
    assert len(keys) == 50 and all(len(k) == 48 and k.isalnum() for k in keys)


def test_readme_documents_every_setting():
    for s in app.SETTINGS:
        assert s.env in README, f"README does not mention {s.env}"
        if s.flag:
            assert "--" + s.name.replace("_", "-") in README, f"README does not mention the flag of {s.name}"


def test_first_run_generates_stores_and_prints_the_admin_key(start_app):
    server = start_app(admin_key=None)
    key_file = server.data_dir / "admin_key"
    key = key_file.read_text().strip()
    assert len(key) == 48
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    output = server.output_tail(200)
    assert key in output and server.url in output  # printed clearly, with the admin URL
    assert httpx.get(f"{server.url}/api/channels/all", headers={"Authorization": f"Bearer {key}"}).json()["success"]
    assert httpx.get(f"{server.url}/api/channels/all", headers={"Authorization": "Bearer nope"}).status_code == 401
    server.stop()
    again = start_app(admin_key=None)  # second start: same key, not printed again
    assert (again.data_dir / "admin_key").read_text().strip() == key
    assert key not in again.output_tail(200)
    assert httpx.get(f"{again.url}/api/channels/all", headers={"Authorization": f"Bearer {key}"}).json()["success"]
