"""Settings & app state: defaults, environment and flags; the admin key's first run; masking."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import httpx

import aiproxy_local as app

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def test_defaults_then_environment_then_flags():
    assert app.load_settings({}) == app.Settings()
    assert app.Settings().host == "127.0.0.1"  # local-only unless told otherwise
    assert app.Settings().port == 3010  # where FastGPT's AIPROXY_API_ENDPOINT points by default
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


def modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}


def test_the_data_dir_is_private_whatever_the_umask(start_app, upstream):
    """Keys live in the database, the admin key file and the journal: 0700 for the dir, 0600 for each file,
    even when the gateway starts under umask 000."""
    server = start_app(admin_key=None, umask=0o000)
    server.add_channel(base_url=upstream.url("ok"), models=["private-model"])
    server.openai().embeddings.create(model="private-model", input="x")  # the WAL and the journal are in use
    httpx.get(f"{server.url}/login")  # the UI's storage
    running = modes(server.data_dir)
    for suffix in ("aiproxy.db", "aiproxy.db-wal", "aiproxy.db-shm", "admin_key", "storage_secret"):
        assert suffix in running, suffix
    assert any(name.startswith("journal/") for name in running)
    server.stop()
    for name, mode in [*running.items(), *modes(server.data_dir).items()]:
        is_dir = name == "." or (server.data_dir / name).is_dir()
        assert mode == (0o700 if is_dir else 0o600), f"{name} is {oct(mode)}"


def test_an_older_data_dir_is_made_private_on_start(start_app, tmp_path):
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    (data / "admin_key").write_text("old-admin-key-0123456789\n")
    for path in (data, data / "admin_key"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    sqlite3.connect(data / "aiproxy.db").close()
    (data / "aiproxy.db").chmod(0o644)
    server = start_app(admin_key=None, data_dir=data)
    assert server.admin_key == "old-admin-key-0123456789"
    assert {n: m for n, m in modes(data).items() if n in (".", "admin_key", "aiproxy.db")} == {
        ".": 0o700, "admin_key": 0o600, "aiproxy.db": 0o600}


# ---- the default port: 3010, FastGPT's default endpoint (issue 21) ----

def test_the_port_is_chosen_by_the_environment_or_the_flag_else_it_is_the_default():
    assert app.load_settings({}, []).port == 3010
    assert not app.port_chosen({}, []) and not app.port_chosen({"AIPROXY_PORT": ""}, ["--no-browser"])
    assert app.port_chosen({"AIPROXY_PORT": "3000"}, []) and app.load_settings({"AIPROXY_PORT": "3000"}, []).port == 3000
    for argv in (["--port", "3000"], ["--port=3000"], ["--po", "3000"]):  # argparse takes a prefix too
        assert app.port_chosen({}, argv) and app.load_settings({}, argv).port == 3000, argv


def test_an_older_data_dir_is_told_once_that_the_default_port_moved(tmp_path):
    older = tmp_path / "older"
    older.mkdir()
    (older / "admin_key").write_text("k" * 48)  # what a version listening on 3000 left behind
    settings = app.Settings(data_dir=str(older))
    assert app.default_port_moved_from(settings, chosen=False) == 3000
    assert (older / app.DEFAULT_PORT_FILE).read_text().strip() == "3010"
    assert app.default_port_moved_from(settings, chosen=False) == 0  # once

    fresh = app.Settings(data_dir=str(tmp_path / "fresh"))  # a new user: nothing moved for them
    assert app.default_port_moved_from(fresh, chosen=False) == 0
    assert (fresh.data_path / app.DEFAULT_PORT_FILE).read_text().strip() == "3010"

    explicit = tmp_path / "explicit"
    explicit.mkdir()
    (explicit / "aiproxy.db").write_bytes(b"")
    settings = app.Settings(data_dir=str(explicit), port=3000)
    assert app.default_port_moved_from(settings, chosen=True) == 0  # --port 3000 relies on no default
    assert app.default_port_moved_from(settings, chosen=False) == 0  # and the dir now knows the new one


def banner(**kw) -> str:
    fields = dict(settings=app.Settings(), engine=None, catalog={}, admin_key="abcdefghij" * 4 + "wxyz0123",
                  admin_key_created=False)
    return app._banner(app.AppState(**{**fields, **kw}))


def test_the_banner_prints_fastgpts_two_lines_with_the_token_masked_unless_just_generated():
    key = "abcdefghij" * 4 + "wxyz0123"
    text = banner()
    assert "AIPROXY_API_ENDPOINT=http://127.0.0.1:3010\n" in text and "web UI and admin API : http://127.0.0.1:3010" in text
    assert f"AIPROXY_API_TOKEN={app.mask_key(key)} " in text and key not in text
    assert key not in banner(settings=app.Settings(admin_key=key))
    fresh = banner(admin_key_created=True)
    assert f"AIPROXY_API_TOKEN={key}\n" in fresh + "\n"  # shown whole only the time it is generated
    assert "AIPROXY_API_ENDPOINT=http://127.0.0.1:4000" in banner(settings=app.Settings(port=4000))
    assert "NOTE" not in text and "default port moved" not in text
    moved = banner(port_moved_from=3000)
    assert "The default port moved from 3000 to 3010" in moved and "--port 3000" in moved
    assert "AIPROXY_PORT=3000" in moved


def test_readme_pairs_with_fastgpts_defaults():
    section = README.split("## Use with FastGPT", 1)[1].split("\n## ", 1)[0]
    assert section.lstrip().startswith("Nothing to change in FastGPT's `.env` except the token")
    assert "AIPROXY_API_ENDPOINT=http://localhost:3010" in section
    for stale in ("127.0.0.1:3000", "localhost:3000", "host.docker.internal:3000", "--port 3001", ":3001"):
        assert stale not in README, stale  # the snippets and recipes follow the default
    assert "| `--port` | `AIPROXY_PORT` | `3010` |" in README
