"""Shared pytest fixtures: a fake upstream provider and the real app running as a subprocess.

* ``upstream``      session FakeUpstream (see fake_upstream.py); ``upstream.url("status-500")`` is a base_url.
* ``app_server``    session AppServer: ``aiproxy_local.py`` started with a temp data dir and a random ADMIN_KEY.
* ``start_app``     factory for extra, fresh app processes (own data dir, custom env); stopped at test end.
* ``backend``       the database both run on: in MATRIX_MODULES each test runs on SQLite, MariaDB and
                    PostgreSQL (a fresh database each; skipped without a server, except under CI=true).
* ``free_port()``   a free loopback TCP port; ``unique()`` a fresh name; ``wait_logs()`` polls the log API.

The app runs as a real process (not in-process) because it owns a uvicorn server, a NiceGUI UI and background
jobs; this is also how users start it.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from fake_upstream import FakeUpstream

REPO_ROOT = Path(__file__).resolve().parent.parent
APP_SCRIPT = REPO_ROOT / "aiproxy_local.py"
READY_TIMEOUT = 30.0

# Unit tests may import the app module's internals directly.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

_KEEP_ENV = object()  # sentinel: "generate a random admin key" vs None = "leave ADMIN_KEY unset"


_GIVEN_PORTS: set[int] = set()


def free_port() -> int:
    """A port free now and never handed out before in this session: the kernel may offer a port again once the
    probe socket closes, and a port a test keeps dead (or a server not started yet) must not become another's."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _GIVEN_PORTS:
            _GIVEN_PORTS.add(port)
            return port


def unique(prefix: str = "t") -> str:
    """A name no other test uses (tests share one app and one upstream per session)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def streamed_chat_one_to_one(app_server: "AppServer", model: str) -> list[Any]:
    """A streamed chat through the openai SDK, against an upstream scenario "chunks-4+gap-20": its 4 content
    chunks arrive one by one (none merged), it ends once with "stop", and the usage chunk counts 4 tokens."""
    from fake_upstream import reply_text

    chunks = list(app_server.openai().chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}], stream=True, stream_options={"include_usage": True}))
    content = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert content == [reply_text(4)[:5]] + [" " + w for w in reply_text(4).split()[1:]]
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].usage.completion_tokens == 4 and all(c.model == model for c in chunks)
    return chunks


def make_state(tmp_path: Path, engine: sa.Engine | None = None, admin_key: str = "adm") -> Any:
    """An AppState to drive the pipeline in process: a fresh SQLite database in `tmp_path` unless `engine` is
    given, the catalog, the routing table and a log writer (not started)."""
    import aiproxy_local as app

    if engine is None:
        engine = app.make_engine(f"sqlite:///{tmp_path / 'w.db'}")
        app.create_schema(engine)
    state = app.AppState(settings=app.Settings(data_dir=str(tmp_path)), engine=engine, catalog=app.load_catalog(),
                         admin_key=admin_key, admin_key_created=False)
    app.reload_routes(state)
    state.writer = app.LogWriter(engine)
    return state


def eventually(check: Callable[[], Any], timeout: float = 20.0, what: str = "the condition") -> Any:
    """Poll until `check()` is truthy and return it (the machine may be busy: generous bounds, no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s (last: {value!r})")
        time.sleep(0.05)


def wait_logs(app_server: "AppServer", total: int, timeout: float = 10.0, **filters: Any) -> list[dict[str, Any]]:
    """Log rows come from a batching writer (flushed every ≤ 0.5 s): poll until `total` rows match `filters`,
    then insist on exactly that many."""
    deadline = time.monotonic() + timeout
    while True:
        body = app_server.api("GET", "/api/logs/", params={"per_page": 100, **filters})
        assert body["success"], body
        if body["data"]["total"] >= total or time.monotonic() > deadline:
            assert body["data"]["total"] == total, body["data"]
            return body["data"]["logs"]
        time.sleep(0.05)


def child_env(extra: dict[str, str | None] | None = None) -> dict[str, str]:
    """os.environ without pytest/NiceGUI markers (NiceGUI changes behaviour when it sees them), plus ``extra``;
    a None value in ``extra`` removes that variable."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTEST_CURRENT_TEST", "ADMIN_KEY") and not k.startswith("NICEGUI")
    }
    env["PYTHONUNBUFFERED"] = "1"
    for key, value in (extra or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


class AppServer:
    """A running ``aiproxy_local.py`` process plus small HTTP helpers bound to its admin key."""

    def __init__(self, proc: subprocess.Popen[bytes], url: str, admin_key: str | None, data_dir: Path, log_path: Path,
                 dsn: str | None = None):
        self.proc = proc
        self.dsn = dsn or f"sqlite:///{data_dir / 'aiproxy.db'}"  # the database it runs on
        self.url = url
        self.port = int(url.rsplit(":", 1)[1])
        self.admin_key = admin_key
        self.data_dir = data_dir
        self.log_path = log_path
        self._client: httpx.Client | None = None
        self._stopped = False

    # -- process ----------------------------------------------------------------------------------------------

    def output_tail(self, lines: int = 60) -> str:
        """Last lines of the child's combined stdout/stderr."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    stderr_tail = output_tail

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"app exited with {self.proc.returncode} before ready:\n{self.output_tail()}")
            try:
                resp = httpx.get(f"{self.url}/api/status", timeout=2)
                if resp.status_code == 200:
                    return
                last = f"HTTP {resp.status_code}: {resp.text[:200]}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.1)
        raise RuntimeError(f"app not ready after {timeout}s ({last}):\n{self.output_tail()}")

    def stop(self, timeout: float = 10.0) -> int:
        """Terminate (SIGTERM, then SIGKILL), print the output tail if it had crashed; returns the exit code.
        Idempotent, so a test may stop a server (e.g. to restart on the same data dir) before teardown."""
        if self._stopped:
            return self.proc.returncode
        self._stopped = True
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        rc = self.proc.returncode
        if rc not in (0, -signal.SIGTERM):
            print(f"\n--- aiproxy_local exited with {rc}; output tail ---\n{self.output_tail()}", file=sys.stderr)
        return rc

    # -- HTTP helpers -----------------------------------------------------------------------------------------

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key}"} if self.admin_key else {}

    @property
    def client(self) -> httpx.Client:
        """A reusable httpx client with base_url and the admin key set."""
        if self._client is None:
            self._client = httpx.Client(base_url=self.url, headers=self.headers, timeout=30)
        return self._client

    def api(self, method: str, path: str, **kw: Any) -> Any:
        """Call the app with the admin key and return the parsed JSON, whatever the status."""
        resp = self.client.request(method, path, **kw)
        try:
            return resp.json()
        except ValueError:
            raise AssertionError(f"{method} {path} -> HTTP {resp.status_code}, not JSON: {resp.text[:500]}") from None

    def openai(self, api_key: str | None = None, **kw: Any) -> Any:
        """An ``openai.OpenAI`` client pointed at this app's /v1 (admin key unless ``api_key`` is given)."""
        import openai

        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=api_key or self.admin_key, max_retries=0, **kw)

    def channels(self) -> list[dict[str, Any]]:
        body = self.api("GET", "/api/channels/all")
        assert body.get("success"), body
        data = body.get("data") or []
        return data["channels"] if isinstance(data, dict) else data

    def add_channel(self, **fields: Any) -> int | list[int]:
        """POST /api/channel/ and return the new id (a list of ids when a multi-line key made several).

        Defaults: type 1 (OpenAI), key "sk-fake", a unique name. Names must be unique per test run,
        since the id is found by name."""
        fields.setdefault("type", 1)
        fields.setdefault("key", "sk-fake")
        fields.setdefault("name", f"ch-{uuid.uuid4().hex[:8]}")
        body = self.api("POST", "/api/channel/", json=fields)
        assert body.get("success"), f"add_channel failed: {body}"
        ids = sorted(ch["id"] for ch in self.channels() if ch.get("name") == fields["name"])
        assert ids, f"channel {fields['name']!r} not found after create"
        return ids[0] if len(ids) == 1 else ids

    def delete_all_channels(self) -> None:
        for ch in self.channels():
            body = self.api("DELETE", f"/api/channel/{ch['id']}")
            assert body.get("success"), f"delete channel {ch['id']} failed: {body}"


def launch_app(
    tmp_dir: Path,
    *,
    data_dir: Path | None = None,
    admin_key: Any = _KEEP_ENV,
    env: dict[str, str | None] | None = None,
    args: list[str] | None = None,
    port: int | None = None,
    wait: bool = True,
    umask: int = -1,
) -> AppServer:
    """Start ``aiproxy_local.py`` and (by default) wait for /api/status.

    ``admin_key``: omitted → a random ``test-admin-...``; None → ADMIN_KEY unset (the app generates one, read
    back from ``data_dir/admin_key`` once ready); a string → that key."""
    data_dir = data_dir or tmp_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    if admin_key is _KEEP_ENV:
        admin_key = f"test-admin-{secrets.token_hex(8)}"
    extra: dict[str, str | None] = {"ADMIN_KEY": admin_key}
    extra.update(env or {})
    log_path = tmp_dir / f"app-{port}.log"
    cmd = [sys.executable, str(APP_SCRIPT), "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir)]
    cmd += ["--no-browser", *(args or [])]
    # Output goes to a file, not a pipe: nobody drains a pipe while tests run, and a full pipe blocks the app.
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=child_env(extra), stdout=log, stderr=subprocess.STDOUT,
                                umask=umask)
    server = AppServer(proc, f"http://127.0.0.1:{port}", extra["ADMIN_KEY"], data_dir, log_path, extra.get("SQL_DSN"))
    if wait:
        try:
            server.wait_ready()
        except BaseException:
            server.stop()
            raise
        key_file = data_dir / "admin_key"
        if server.admin_key is None and key_file.exists():
            server.admin_key = key_file.read_text().strip()
    return server


# ---- load: calls answered vs rows logged ----

def answered_ids_under_load(servers: "AppServer | list[AppServer]", models: str | list[str], seconds: float,
                            threads: int = 8, until: Callable[[set[str]], Any] | None = None,
                            at_least: int = 25) -> set[str]:
    """Call the models (each client starts at another one) through the servers (clients spread over them) for
    `seconds` and until `at_least` calls are answered (a busy machine answers fewer per second), then run `until`
    with the ids answered so far (it stops or kills a server) while the clients go on; returns the request ids
    of the calls answered in full."""
    servers = servers if isinstance(servers, list) else [servers]
    models = models if isinstance(models, list) else [models]
    answered: set[str] = set()
    stop = threading.Event()

    def client(server: AppServer, start: int) -> None:
        turn = itertools.count(start)
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                model = models[next(turn) % len(models)]
                try:
                    r = http.post(f"{server.url}/v1/chat/completions", headers=server.headers,
                                  json={"model": model, "messages": [{"role": "user", "content": "hi"}]})
                except httpx.HTTPError:
                    if server.proc.poll() is not None:
                        return
                    continue
                if r.status_code == 200:
                    answered.add(r.headers["x-request-id"])

    workers = [threading.Thread(target=client, args=(servers[i % len(servers)], i)) for i in range(threads)]
    for w in workers:
        w.start()
    time.sleep(seconds)
    deadline = time.monotonic() + 60
    while len(answered) < at_least and time.monotonic() < deadline:
        time.sleep(0.05)
    if until is not None:
        until(answered)
    stop.set()
    for w in workers:
        w.join(60)
    return answered


def logged_rows(dsn: str, *models: str) -> list[dict[str, Any]]:
    """The models' log rows, read from the database itself."""
    import aiproxy_local

    engine = sa.create_engine(aiproxy_local.with_default_driver(dsn))
    query = sa.text("SELECT * FROM logs WHERE model IN :models").bindparams(sa.bindparam("models", expanding=True))
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query, {"models": list(models)})]
    finally:
        engine.dispose()


def logged_ids(dsn: str, *models: str) -> set[str]:
    """The request ids of the models' log rows."""
    return {r["request_id"] for r in logged_rows(dsn, *models)}


# ---- database servers: MariaDB and PostgreSQL for the SQL_DSN matrix ----

#: server kind -> (admin URLs to try in order, app DSN template for a database on that server)
SERVERS: dict[str, tuple[tuple[str, ...], str]] = {
    "mariadb": (("mysql+pymysql://root@127.0.0.1:3306/test",), "mysql://{user}@127.0.0.1:3306/{db}"),
    "postgresql": (
        ("postgresql+psycopg://postgres@127.0.0.1:5432/test", "postgresql+psycopg://root@127.0.0.1:5432/test",
         "postgresql+psycopg://postgres@127.0.0.1:5432/postgres", "postgresql+psycopg://root@127.0.0.1:5432/postgres"),
        "postgresql+psycopg://{user}@127.0.0.1:5432/{db}"),
}


def unreachable(kind: str, why: str) -> None:
    """Skip, but only outside CI: in CI a missing database server is a failure."""
    message = f"{kind} server unreachable: {why}"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI is set, so this may not skip)", pytrace=False)
    pytest.skip(message)


def admin_engine(kind: str) -> sa.Engine:
    """An autocommit engine on the server (for CREATE/DROP DATABASE), from the first admin URL that connects."""
    errors = []
    for url in SERVERS[kind][0]:
        engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        try:
            with engine.connect():
                return engine
        except sa.exc.SQLAlchemyError as exc:
            errors.append(f"{url}: {type(exc.orig or exc).__name__}")
            engine.dispose()
    unreachable(kind, "; ".join(errors))
    raise AssertionError("unreachable")


BACKENDS = ("sqlite", *sorted(SERVERS))


def backend_dsn(kind: str, sqlite_dir: Path) -> Iterator[str]:
    """The DSN of a fresh, empty database of `kind`: a new SQLite file in `sqlite_dir`, or a server database."""
    if kind == "sqlite":
        yield f"sqlite:///{sqlite_dir / 'aiproxy.db'}"
    else:
        yield from fresh_database(kind)


def quote(kind: str, name: str) -> str:
    return f"`{name}`" if kind == "mariadb" else f'"{name}"'


def fresh_database(kind: str) -> Iterator[str]:
    """Create `aiproxy_t_<random>` on the server, yield the app's DSN for it, drop it afterwards."""
    admin = admin_engine(kind)
    name = f"aiproxy_t_{uuid.uuid4().hex[:12]}"
    create = f"CREATE DATABASE {quote(kind, name)}" + (" CHARACTER SET utf8mb4" if kind == "mariadb" else "")
    with admin.connect() as conn:
        conn.exec_driver_sql(create)
    try:
        yield SERVERS[kind][1].format(user=admin.url.username, db=name)
    finally:
        drop = f"DROP DATABASE IF EXISTS {quote(kind, name)}" + (" WITH (FORCE)" if kind == "postgresql" else "")
        with admin.connect() as conn:
            conn.exec_driver_sql(drop)
        admin.dispose()


@pytest.fixture(scope="session")
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream().start()
    yield fake
    fake.stop()


#: modules whose app fixtures run on every backend: their tests get a [sqlite], [mariadb] or [postgresql] id
MATRIX_MODULES = frozenset({"test_admin_api", "test_relay"})


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames and metafunc.module.__name__ in MATRIX_MODULES:
        metafunc.parametrize("backend", BACKENDS, indirect=True, scope="session")


@pytest.fixture(scope="session")
def backend(request: pytest.FixtureRequest) -> str:
    """The database kind the app fixtures use: every kind in MATRIX_MODULES, else SQLite."""
    return getattr(request, "param", "sqlite")


@pytest.fixture(scope="session")
def app_server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    for dsn in backend_dsn(backend, tmp_path_factory.mktemp(f"app-{backend}")):
        env = {} if backend == "sqlite" else {"SQL_DSN": dsn}
        try:
            server = launch_app(tmp_path_factory.mktemp("app"), env=env)
        except RuntimeError as exc:
            pytest.fail(str(exc), pytrace=False)
        yield server
        server.stop()


@pytest.fixture
def start_app(backend: str, tmp_path: Path) -> Iterator[Callable[..., AppServer]]:
    """Factory: ``start_app(data_dir=<tmp>/data, admin_key=<random>, env=None, args=None, port=None, wait=True,
    umask=-1)`` (-1: the test's own umask).
    Calls in one test share the default data dir and, on a server backend, one fresh database (stop one, start
    another = restart); ``env={"SQL_DSN": None}`` keeps SQLite. Each call gets its own log file; every process
    started is stopped when the test ends."""
    started: list[AppServer] = []
    databases = contextlib.ExitStack()
    dsn: list[str] = []

    def factory(**kw: Any) -> AppServer:
        run_dir = tmp_path / f"run{len(started)}"
        run_dir.mkdir()
        kw.setdefault("data_dir", tmp_path / "data")
        if backend != "sqlite":
            if not dsn:
                dsn.append(databases.enter_context(contextlib.contextmanager(fresh_database)(backend)))
            kw["env"] = {"SQL_DSN": dsn[0], **(kw.get("env") or {})}
        server = launch_app(run_dir, **kw)
        started.append(server)
        return server

    with databases:
        yield factory
        for server in reversed(started):
            server.stop()
