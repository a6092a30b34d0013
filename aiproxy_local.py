# /// script
# requires-python = ">=3.11"
# dependencies = [
#     "nicegui>=3.18",
#     "httpx>=0.28",
#     "sqlmodel>=0.0.22",
#     "pymysql>=1.1",
#     "aiohttp>=3.10",
#     "uvicorn[standard]>=0.30",
#     "orjson>=3.10",
#     "pyyaml>=6.0",
#     "prometheus-client>=0.20",
#     "aiohttp-socks>=0.9",
# ]
# ///
"""aiproxy-local: a local, single-file AI gateway with an OpenAI-compatible relay and an admin UI.

Add model providers as *channels*; every app talks to one OpenAI-compatible endpoint (`/v1`). Calls are routed
by priority, fail over when a channel breaks, and are logged with tokens and timings. The `/api` admin API
speaks labring/aiproxy's contract, so FastGPT's model tabs work unchanged.

    pip install . && aiproxy-local                                  # or: uv run aiproxy_local.py
    pip install -e '.[test]' -c tests/constraints.txt && pytest     # the tests

Contents (`grep -n '^# ====' aiproxy_local.py`):
    1. Settings & app state   11. AWS Bedrock
    2. Storage                12. Google Vertex AI
    3. Relay contract         13. Registry
    4. Router                 14. Log writer
    5. Relay pipeline         15. Admin API
    6. Upstream client        16. Import
    7. OpenAI & Azure         17. UI kit
    8. Anthropic Messages     18. UI pages
    9. Google Gemini          19. Migrate wizard
   10. OpenAI Responses       20. App assembly & CLI
"""

from __future__ import annotations

__version__ = "0.1.0"

import os
import sys

if (__name__ == "__main__" and os.name == "posix" and not os.environ.get("NICEGUI_USER_SIMULATION")
        and not getattr(sys, "frozen", False)):
    # Run as a script (`python aiproxy_local.py`, `uv run aiproxy_local.py`), the same gateway stays ~30 MB larger
    # for good than when this file is imported, as `aiproxy-local` does (idle with the UI: 138 vs 105 MB, bench/
    # S5). So start again, before any other import, as an import of this very file (same process id, same flags).
    # Not in the packaged app: there sys.executable is the app itself, which would start this again, forever.
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:len(sys.orig_argv) - len(sys.argv)], "-c", (
        "import importlib.util as u, sys; s = u.spec_from_file_location('aiproxy_local', sys.argv.pop(1)); "
        "m = sys.modules[s.name] = u.module_from_spec(s); s.loader.exec_module(m); m.main()"),
        os.path.abspath(__file__), *sys.argv[1:]])

import argparse
import asyncio
import base64
import bisect
import collections
import csv
import dataclasses
import email.utils
import enum
import errno
import functools
import gc
import hashlib
import hmac
import importlib.util
import io
import ipaddress
import itertools
import json
import logging
import math
import operator
import mimetypes
import random
import re
import secrets
import shlex
import signal
import shutil
import socket
import sqlite3
import ssl
import string
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import wave
import webbrowser
import zlib
import contextlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, AsyncIterator, Awaitable, Callable, Iterable, Iterator, Literal, Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

try:
    import httptools  # uvicorn[standard]'s HTTP parser; without it every upstream call goes through aiohttp
except ImportError:
    httptools = None
try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt

import aiohttp
import orjson
import yarl
import pydantic
import sqlalchemy as sa
import uvicorn
from fastapi import APIRouter, Body, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError
from sqlmodel import Field, SQLModel
from sqlalchemy.orm import registry
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send


# ==== 1. Settings & app state ==============================================================================

#: next to this file in a checkout or `uv run`; under <prefix>/share after `pip install .`
ASSETS_DIR = next((d for d in (Path(__file__).resolve().parent / "assets",
                               Path(sys.prefix) / "share" / "aiproxy-local" / "assets") if d.is_dir()),
                  Path(__file__).resolve().parent / "assets")
logger = logging.getLogger("aiproxy_local")


@dataclass(frozen=True)
class Setting:
    name: str
    env: str
    default: Any
    help: str
    flag: bool = True  # False keeps a secret out of argv (visible in `ps`)


#: One row per setting: it feeds the CLI flags, the environment variables and the README (tests check all three).
SETTINGS: tuple[Setting, ...] = (
    Setting("host", "AIPROXY_HOST", "127.0.0.1", "interface to bind; 0.0.0.0 exposes the gateway to your network"),
    Setting("port", "AIPROXY_PORT", 3010, "port of the relay, the admin API and the UI (FastGPT's default endpoint)"),
    Setting("data_dir", "AIPROXY_DATA_DIR", "~/.aiproxy-local", "where the database, admin key and UI secret live"),
    Setting("admin_key", "ADMIN_KEY", "", "admin key; generated into <data-dir>/admin_key when unset", flag=False),
    Setting("sql_dsn", "SQL_DSN", "", "any SQLAlchemy URL; default sqlite:///<data-dir>/aiproxy.db"),
    Setting("retry_times", "RETRY_TIMES", 3, "extra attempts on other channels when one fails"),
    Setting("connect_timeout", "UPSTREAM_CONNECT_TIMEOUT", 10.0, "seconds to connect to an upstream"),
    Setting("ttfb_timeout", "UPSTREAM_TTFB_TIMEOUT", 300.0, "seconds to wait for an upstream's first byte"),
    Setting("model_test_timeout", "MODEL_TEST_TIMEOUT", 30.0, "seconds a model test may take before it fails"),
    Setting("auto_disable_after", "AUTO_DISABLE_AFTER", 3,
            "fatal upstream errors in a row (bad key, no quota or balance) that auto-disable a channel; 0: never"),
    Setting("channel_retest_interval", "CHANNEL_RETEST_INTERVAL", 600,
            "seconds between retests of auto-disabled channels; one that passes is enabled again (0: no retests)"),
    Setting("cooldown_seconds", "CHANNEL_COOLDOWN_SECONDS", 5.0,
            "first cool-down of a (channel, model) after a 5xx, 429, timeout or connect error; doubles each time"),
    Setting("cooldown_max_seconds", "CHANNEL_COOLDOWN_MAX_SECONDS", 300.0,
            "longest cool-down, also the cap on an upstream's Retry-After"),
    Setting("log_retention_days", "LOG_RETENTION_DAYS", 30, "delete call logs older than this (0 keeps all)"),
    Setting("api_max_body_mib", "API_MAX_BODY_MIB", 2, "largest request body /api accepts, in MiB (else 413)"),
    Setting("relay_max_body_mib", "RELAY_MAX_BODY_MIB", 20, "largest request body /v1 accepts, in MiB (else 413)"),
    Setting("upstream_max_body_mib", "UPSTREAM_MAX_BODY_MIB", 32,
            "largest answer (and largest single stream event) read from an upstream, in MiB; a larger one fails "
            "over to the next channel, else the client gets a 502"),
    Setting("allowed_hosts", "ALLOWED_HOSTS", "",
            "more Host names to answer when bound to loopback, comma-separated (e.g. behind a local reverse proxy)"),
    Setting("cors_origins", "CORS_ORIGINS", "", "origins whose web pages may call /api, comma-separated "
            "(/v1 allows every origin)"),
    Setting("shutdown_grace_seconds", "SHUTDOWN_GRACE_SECONDS", 10.0,
            "on SIGTERM or Ctrl+C, seconds calls under way get to finish before they are cancelled"),
    Setting("metrics_token", "METRICS_TOKEN", "",
            "a bearer token that may read GET /metrics (the admin key always may)", flag=False),
    Setting("no_browser", "AIPROXY_NO_BROWSER", False, "do not open the browser on start"),
    Setting("no_ui", "AIPROXY_NO_UI", False, "serve only /v1 and /api, without the web UI"),
    Setting("no_journal", "AIPROXY_NO_JOURNAL", False,
            "log calls without the crash journal: a kill -9 then loses up to half a second of log rows"),
    Setting("allow_weak_admin_key", "AIPROXY_ALLOW_WEAK_ADMIN_KEY", False,
            "start on a non-loopback --host even with a weak admin key (shorter than 16 characters or a "
            "well-known default); a loopback bind only warns"),
    Setting("auth_failures_allowed", "AUTH_FAILURES_ALLOWED", 10,
            "different wrong keys one client address may send within a minute (on /api, /v1 and the UI "
            "login) before its attempts get 429; 0: no limit"),
    Setting("auth_lockout_seconds", "AUTH_LOCKOUT_SECONDS", 5.0,
            "first wait of an address that sent too many wrong keys; doubles with each further different one, "
            "up to 15 minutes; a right key resets it"),
)


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 3010
    data_dir: str = "~/.aiproxy-local"
    admin_key: str = ""
    sql_dsn: str = ""
    retry_times: int = 3
    connect_timeout: float = 10.0
    ttfb_timeout: float = 300.0
    model_test_timeout: float = 30.0
    auto_disable_after: int = 3
    channel_retest_interval: int = 600
    cooldown_seconds: float = 5.0
    cooldown_max_seconds: float = 300.0
    log_retention_days: int = 30
    api_max_body_mib: int = 2
    relay_max_body_mib: int = 20
    upstream_max_body_mib: int = 32
    allowed_hosts: str = ""
    cors_origins: str = ""
    shutdown_grace_seconds: float = 10.0
    metrics_token: str = ""
    no_browser: bool = False
    no_ui: bool = False
    no_journal: bool = False
    allow_weak_admin_key: bool = False
    auth_failures_allowed: int = 10
    auth_lockout_seconds: float = 5.0

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser()

    @property
    def dsn(self) -> str:
        return self.sql_dsn or f"sqlite:///{self.data_path / 'aiproxy.db'}"


def _coerce(value: str, default: Any) -> Any:
    if isinstance(default, bool):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return type(default)(value)


def load_settings(env: dict[str, str] | None = None, argv: list[str] | None = None) -> Settings:
    """Defaults < environment < command line."""
    env = os.environ if env is None else env
    values = {s.name: _coerce(env[s.env], s.default) if env.get(s.env, "") != "" else s.default for s in SETTINGS}
    if argv is not None:
        args = build_arg_parser().parse_args(argv)
        values.update({k: v for k, v in vars(args).items() if v is not None and k in values})
    return Settings(**values)


def build_arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aiproxy-local", description=__doc__.splitlines()[0], epilog=(
        "commands: `aiproxy-local pack` builds the packaged app (pip install '.[pack]'); `aiproxy-local shortcut "
        "[--remove]` adds (or removes) an app-menu entry that starts the gateway or opens the running one"))
    for s in SETTINGS:
        if not s.flag:
            continue
        name = "--" + s.name.replace("_", "-")
        if isinstance(s.default, bool):
            parser.add_argument(name, action="store_const", const=True, default=None, help=f"{s.help} [{s.env}]")
        else:
            parser.add_argument(name, type=type(s.default), default=None, help=f"{s.help} [{s.env}, default {s.default}]")
    parser.add_argument("--version", action="version", version=__version__)
    return parser


# ---- the default port: 3010, where FastGPT looks (its AIPROXY_API_ENDPOINT default); its own UI has 3000 ----

FORMER_DEFAULT_PORT = 3000  # the default until 0.1.0; a data dir from then has no DEFAULT_PORT_FILE
DEFAULT_PORT_FILE = "default_port"  # the default port the data dir last started under


def port_chosen(env: dict[str, str], argv: list[str]) -> bool:
    """Whether the port came from AIPROXY_PORT or --port (argparse also takes `--po 1`), not from the default."""
    if env.get("AIPROXY_PORT", "") != "":
        return True
    args, _ = build_arg_parser().parse_known_args(argv)
    return getattr(args, "port", None) is not None


def default_port_moved_from(settings: Settings, chosen: bool) -> int:
    """The former default port (else 0), once per data dir: a data dir an older version made (it listened on
    3000 by default) is told that the default moved, and how to keep 3000. The data dir then remembers the new
    default; a fresh one, or a port given explicitly, needs no notice."""
    data = settings.data_path
    marker = data / DEFAULT_PORT_FILE
    default = Settings.port
    try:
        before = int(marker.read_text().strip())
    except FileNotFoundError:
        older = data.is_dir() and any(p.name != DEFAULT_PORT_FILE for p in data.iterdir())
        before = FORMER_DEFAULT_PORT if older else default
    except (OSError, ValueError):
        before = default
    if before != default or not marker.exists():
        with contextlib.suppress(OSError):
            write_secret_file(marker, str(default))
    return 0 if before == default or chosen else before


def port_moved_text(before: int) -> str:
    default = Settings.port
    return (f"The default port moved from {before} to {default} (FastGPT's own web UI listens on 3000, and its "
            f"AIPROXY_API_ENDPOINT defaults to http://localhost:{default}). To keep {before}, start with "
            f"--port {before} or set AIPROXY_PORT={before}; apps that call :{before} otherwise need the new port.")


def generate_key(length: int = 48) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def write_secret_file(path: Path, value: str) -> None:
    """Write a secret readable only by its owner: created 0600, and chmod-ed too, since a file that already
    existed keeps its old mode through O_CREAT."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    os.chmod(path, 0o600)


def prepare_data_dir(settings: Settings) -> None:
    """The data dir holds every key: 0700, and the files in it 0600, whatever the umask. The SQLite file is
    made before SQLite opens it, because SQLite gives its -wal and -shm files the database file's mode; an
    older version's files are narrowed here too."""
    data = settings.data_path
    data.mkdir(parents=True, exist_ok=True)
    os.chmod(data, 0o700)
    url = sa.engine.make_url(settings.dsn)
    database = url.database if url.get_backend_name() == "sqlite" else None
    if database and database != ":memory:" and not database.startswith("file:"):
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT, 0o600))
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.chmod(database + suffix, 0o600)
    for name in ("admin_key", "storage_secret"):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(data / name, 0o600)


def load_or_create_secret(path: Path) -> tuple[str, bool]:
    """Return (secret, created_now)."""
    if path.exists():
        value = path.read_text().strip()
        if value:
            return value, False
    value = generate_key()
    write_secret_file(path, value)
    return value, True


def mask_key(key: str) -> str:
    """`sk-abcdef…wxyz` → `sk-ab…yz`: enough to recognise a key, never enough to use it."""
    key = key or ""
    if len(key) <= 8:
        return "•" * len(key)
    head = 5 if key.startswith("sk-") else 2
    return f"{key[:head]}…{key[-2:]}"


def mask_proxy_url(url: str) -> str:
    """A proxy URL with its password masked (`http://user:pa…ss@host:3128`): its password is a secret like a
    channel key, while the user and the host may show."""
    parts = urllib.parse.urlsplit(url or "")
    if not parts.password:
        return url or ""
    user, hostport = parts.netloc.rpartition("@")[0].partition(":")[0], parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:{mask_key(parts.password)}@{hostport}"))


def strip_bearer(value: str) -> str:
    value = value.strip()
    return value[7:].strip() if value[:7].lower() == "bearer " else value


def is_admin_key(state: AppState, raw_key: str) -> bool:
    """The admin key as sent, with or without aiproxy's `sk-` prefix."""
    admin = state.admin_key.encode()  # bytes: compare_digest refuses non-ASCII str (a 500 on `Bearer é`)
    return bool(raw_key) and (secrets.compare_digest(raw_key.encode(), admin)
                              or secrets.compare_digest(raw_key.removeprefix("sk-").encode(), admin))


ADMIN_KEY_MIN = 16  # a shorter admin key is weak: 10,000 four-digit keys take 16 s to try without a throttle
#: admin keys found in docs, compose files and examples (compared lower-cased, without an "sk-" prefix)
WELL_KNOWN_KEYS = frozenset({
    "token", "aiproxy", "admin", "password", "secret", "changeme", "test", "root", "fastgpt", "oneapi", "newapi",
    "123456", "12345678", "1234567890", "admin123", "your-admin-key", "your_admin_key", "your-api-key",
    "xxxxxxxx", "1234567890abcdef", "1234567890abcdef1234567890abcdef", "abcdef1234567890",
    "aiproxy-admin-key", "your-secret-key", "sk-xxxxxxxx",
})


def weak_admin_key(key: str) -> str:
    """Why an admin key is weak ("" when it is not): too short, a well-known default or example, or made of a
    few characters repeated."""
    bare = key.strip().lower().removeprefix("sk-")
    if bare in WELL_KNOWN_KEYS or "your" in bare or "example" in bare or "placeholder" in bare:
        return "it is a well-known default or example"
    if len(key.strip()) < ADMIN_KEY_MIN:
        return f"it is shorter than {ADMIN_KEY_MIN} characters"
    if len(set(bare)) < 6:
        return "it repeats a few characters"
    return ""


AUTH_WINDOW_S = 60.0  # wrong keys are counted over this long, until the first lockout
AUTH_LOCKOUT_MAX_S = 900.0  # the longest wait; an address quiet this long after a lockout starts afresh
AUTH_TRACKED_MAX = 10_000  # addresses remembered at once; beyond, the quietest are forgotten


class AuthThrottle:
    """Wrong keys per client address, on /api, /v1 and the UI login (issue 18). After `allowed` different wrong keys
    within AUTH_WINDOW_S, the address waits `lockout` seconds, during which every attempt from it, right key or
    wrong, gets 429 with Retry-After (a right key that got through would confirm a guess); each further different
    wrong key after a wait doubles the next one, up to AUTH_LOCKOUT_MAX_S. A right key from the address resets it.
    Only different keys count: guessing tries new ones, while a client left with an old key (after a rotation)
    repeats the same one, and must not lock its whole machine out. Other addresses never notice."""

    def __init__(self, allowed: int = 10, lockout: float = 5.0) -> None:
        self.allowed, self.lockout = allowed, lockout
        #: address → [different wrong keys, last wrong key, lockouts, waits until, the wrong keys' hashes]
        self.addresses: dict[str, list[Any]] = {}
        self.noted: set[str] = set()  # addresses the server log has named

    def wait(self, address: str, now: float) -> float:
        """hot path: seconds the address must still wait; 0.0 when it may try (an empty dict while all is well)."""
        if not self.addresses:
            return 0.0
        entry = self.addresses.get(address)
        return entry[3] - now if entry is not None and entry[3] > now else 0.0

    def failed(self, address: str, now: float, key: str = "") -> float:
        """Count a wrong key (once per different key); the seconds of the lockout it starts, or 0.0."""
        if self.allowed <= 0:
            return 0.0
        entry = self.addresses.get(address)
        if entry is not None and now - entry[1] > (AUTH_LOCKOUT_MAX_S if entry[2] else AUTH_WINDOW_S):
            entry = None  # quiet long enough: starts afresh
        if entry is None:
            if len(self.addresses) >= AUTH_TRACKED_MAX:
                for old in sorted(self.addresses, key=lambda a: self.addresses[a][1])[:AUTH_TRACKED_MAX // 10]:
                    self.addresses.pop(old, None)
            entry = self.addresses[address] = [0, now, 0, 0.0, set()]
        fingerprint = hashlib.blake2b(key.encode("utf-8", "replace"), digest_size=8).digest()
        if fingerprint in entry[4]:
            return 0.0
        if len(entry[4]) < self.allowed + 64:
            entry[4].add(fingerprint)
        entry[0] += 1
        entry[1] = now
        if entry[0] < self.allowed:
            return 0.0
        entry[2] += 1
        length = min(self.lockout * 2 ** min(entry[2] - 1, 32), AUTH_LOCKOUT_MAX_S)
        entry[3] = now + length
        if address not in self.noted:
            self.noted.add(address)
            logger.warning("%s sent %d different wrong keys: its attempts now wait %g s, twice as long after each "
                           "further one, until a right key (this address is not named again)", address or "?",
                           int(entry[0]), length)
        return length

    def succeeded(self, address: str) -> None:
        """hot path: a right key resets its address (a lookup in an empty dict while all is well)."""
        if self.addresses:
            self.addresses.pop(address, None)

    def refusal(self, address: str, now: float) -> str:
        """The message of a 429 for an address that must wait, or "" when it may try."""
        left = self.wait(address, now)
        return (f"Too many wrong keys from {address or 'your address'}: try again in {math.ceil(left)} s."
                if left > 0 else "")


# ---- one-time login tokens: the browser the app opens itself arrives logged in (Jupyter's pattern) ----

LOGIN_TOKEN_SECONDS = 600.0  # an unused login link dies after this long
LOCAL_SECRET_FILE = "local_secret"


def issue_login_token(state: AppState) -> str:
    """A token that logs one browser in, once; "" unless bound to loopback (only this machine can use it)."""
    if not is_loopback(state.settings.host):
        return ""
    now = time.monotonic()
    for token, deadline in list(state.login_tokens.items()):
        if deadline < now:
            del state.login_tokens[token]
    token = secrets.token_urlsafe(32)
    state.login_tokens[token] = now + LOGIN_TOKEN_SECONDS
    return token


def spend_login_token(state: AppState, token: str) -> bool:
    """True once for a token issued and not expired; the token is gone after the first try, right or wrong."""
    deadline = state.login_tokens.pop(token, None) if token else None
    return deadline is not None and deadline >= time.monotonic() and is_loopback(state.settings.host)


def is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


MIB = 1024 * 1024


def now_ms() -> int:
    return int(time.time() * 1000)


def loads_object(data: bytes | str) -> dict[str, Any] | None:
    """JSON text that should hold an object: the object, else None (not JSON, or another JSON value)."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return f"{type(exc).__name__}: {text.splitlines()[0][:300] if text else ''}"


@dataclass
class AppState:
    """Everything the running app owns. Built by `create_app()`; reached through `get_state()`."""

    settings: Settings
    engine: sa.Engine
    catalog: dict[int, "Provider"]
    admin_key: str
    admin_key_created: bool
    started_ms: int = field(default_factory=now_ms)
    routes: "RoutingTable | None" = None
    writer: "LogWriter | None" = None
    http: aiohttp.ClientSession | None = None
    upstream: "UpstreamPool | None" = None  # the relay's own connections to upstreams (section 6)
    socks: dict[str, aiohttp.ClientSession] = field(default_factory=dict)  # one session per SOCKS proxy in use
    options: dict[str, Any] = field(default_factory=dict)
    version: int = -1  # the shared version that `routes` and `options` were loaded at
    responses: "ResponseStore" = field(default_factory=lambda: ResponseStore())  # /v1/responses answers
    health: "ChannelHealth | None" = None  # this instance's memory of how channels answered (section 4)
    calls: set["HangupWatch"] = field(default_factory=set)  # relay calls under way, watched for hang-ups
    metrics: "CallMetrics" = field(default_factory=lambda: CallMetrics())  # GET /metrics (section 14)
    background: set[asyncio.Task] = field(default_factory=set)  # fire-and-forget work, referenced until done
    throttle: AuthThrottle | None = None  # wrong keys per client address
    port_moved_from: int = 0  # the first start after the default port moved says so (terminal, settings page)
    login_tokens: dict[str, float] = field(default_factory=dict)  # one-time login tokens -> monotonic deadline
    local_secret: str = ""  # <data dir>/local_secret: a second start proves with it that it is this user's
    request_stop: Callable[[], None] | None = None  # the UI's "Stop the gateway": a SIGTERM's drain (section 18)
    loop: asyncio.AbstractEventLoop | None = None  # the loop serving the app, set by its lifespan
    log_file: Path | None = None  # where the log goes when there is no console (section 18)

    def __post_init__(self) -> None:
        if self.health is None:
            self.health = ChannelHealth(self.settings.cooldown_seconds, self.settings.cooldown_max_seconds)
        if self.throttle is None:
            self.throttle = AuthThrottle(self.settings.auth_failures_allowed, self.settings.auth_lockout_seconds)

    @property
    def retry_times(self) -> int:
        return int(self.options.get("retry_times", self.settings.retry_times))

    @property
    def auto_disable_after(self) -> int:
        return int(self.options.get("auto_disable_after", self.settings.auto_disable_after))

    @property
    def channel_retest_interval(self) -> int:
        return int(self.options.get("channel_retest_interval", self.settings.channel_retest_interval))

    @property
    def log_retention_days(self) -> int:
        return int(self.options.get("log_retention_days", self.settings.log_retention_days))


_STATE: AppState | None = None  # the module's one mutable slot, set by create_app()


def get_state() -> AppState:
    if _STATE is None:
        raise RuntimeError("the app is not created yet: call create_app() first")
    return _STATE


# ==== 2. Storage ============================================================================================


SQLITE_BUSY_TIMEOUT_S = 30  # writers wait instead of failing with "database is locked"
BODY_DETAIL_MAX = 8 * 1024  # request/response bodies of failed calls are kept up to this size
LOG_CONTENT_MAX = 1024  # error text shown in the log list


class Base(SQLModel, registry=registry()):
    """Own metadata, so NiceGUI's test plugin can re-execute this file without duplicate-table errors."""


def _json_col() -> Any:
    return Field(default=None, sa_type=sa.JSON)


def _ms_col(index: bool = False) -> Any:
    return Field(default=0, sa_type=sa.BigInteger, index=index)


#: channel and token status values, as aiproxy and FastGPT number them (3 is FastGPT's "自动禁用")
STATUS_ENABLED, STATUS_DISABLED, STATUS_AUTO_DISABLED = 1, 2, 3


class Channel(Base, table=True):
    __tablename__ = "channels"
    id: int | None = Field(default=None, primary_key=True)
    type: int = 1
    name: str = Field(default="", index=True, max_length=128)
    key: str = Field(default="", sa_type=sa.Text)
    base_url: str = Field(default="", max_length=512)
    models: list[str] | None = _json_col()
    model_mapping: dict[str, str] | None = _json_col()
    config: dict[str, Any] | None = _json_col()
    status: int = 1
    status_reason: str = Field(default="", max_length=255)
    status_time: int = _ms_col()  # when the status last changed by itself (auto-disabled, or enabled by a retest)
    priority: int = 0
    weight: int = 1
    created_at: int = _ms_col()
    request_count: int = Field(default=0, sa_type=sa.BigInteger)
    retry_count: int = Field(default=0, sa_type=sa.BigInteger)
    error_count: int = Field(default=0, sa_type=sa.BigInteger)  # failed calls and failed attempts on this channel
    used_amount: float = 0.0
    last_test_error_at: int = _ms_col()
    source: str = Field(default="", max_length=255, index=True)
    source_id: str = Field(default="", max_length=64)
    #: aiproxy's names: this channel's own outbound proxy (http, https, socks5; "" = HTTP(S)_PROXY from the
    #: environment), and whether its upstream's TLS certificate goes unchecked (a private endpoint's own CA)
    proxy_url: str = Field(default="", max_length=255)
    skip_tls_verify: bool = False
    #: aiproxy's balance check and ban rules: FastGPT's full PUT sends them, so they are kept and sent back as they
    #: came (nothing here acts on them; a failing call moves on to the next channel anyway)
    enabled_auto_balance_check: bool = False
    enabled_no_permission_ban: bool = False
    warn_error_rate: float = 0.0
    max_error_rate: float = 0.0


class Token(Base, table=True):
    __tablename__ = "tokens"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(default="", max_length=128)
    key: str = Field(default="", max_length=128, unique=True)
    status: int = 1
    models: list[str] | None = _json_col()
    quota: float = 0.0
    used_amount: float = 0.0
    request_count: int = Field(default=0, sa_type=sa.BigInteger)
    expired_at: int = _ms_col()
    created_at: int = _ms_col()
    source: str = Field(default="", max_length=255)
    source_id: str = Field(default="", max_length=64)


class ModelConfig(Base, table=True):
    """Per-model switches. A row exists only when a user changed something: any model name works without one."""

    __tablename__ = "model_configs"
    model: str = Field(primary_key=True, max_length=191)
    enabled: bool = True
    kind: str = Field(default="", max_length=32)
    input_price: float = 0.0  # USD per 1K tokens, like aiproxy; 0: unset, the model snapshot's price applies
    output_price: float = 0.0
    cached_price: float = 0.0  # cache reads
    cache_creation_price: float = 0.0  # cache writes
    updated_at: int = _ms_col()


class ChannelTest(Base, table=True):
    __tablename__ = "channel_tests"
    channel_id: int = Field(primary_key=True)
    model: str = Field(primary_key=True, max_length=191)
    actual_model: str = ""
    test_at: int = _ms_col()
    took: float = 0.0
    success: bool = False
    code: int = 0
    response: str = Field(default="", sa_type=sa.Text)


_LOG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite auto-increments only INTEGER keys


class LogRow(Base, table=True):
    __tablename__ = "logs"
    id: int | None = Field(default=None, primary_key=True, sa_type=_LOG_ID)
    request_id: str = Field(default="", max_length=64, index=True)
    request_at: int = _ms_col()
    created_at: int = _ms_col(index=True)
    ttfb_milliseconds: int = 0
    model: str = Field(default="", max_length=191)  # indexed with created_at, below
    actual_model: str = Field(default="", max_length=191)
    channel: int = 0
    channel_name: str = Field(default="", max_length=128)  # kept, so a deleted channel's calls still say whose
    code: int = 0
    mode: int = 0
    endpoint: str = Field(default="", max_length=128)
    content: str = Field(default="", sa_type=sa.Text)
    ip: str = Field(default="", max_length=64)
    retry_times: int = 0
    token_id: int = 0
    token_name: str = Field(default="", max_length=128)
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    usage_estimated: bool = False
    used_amount: float = 0.0
    stream: bool = False
    is_test: bool = False  # a model test, not traffic: kept out of request counts and the dashboard
    #: of input_tokens, written to the provider's cache; nullable (NULL reads as 0), so that an older instance on the
    #: same database, which does not know the column, still inserts rows
    cache_creation_tokens: int | None = Field(default=None, nullable=True)
    #: the call's cost is unknown (a price it needs is in neither the model config nor the snapshot): the API
    #: shows used_amount as null. Nullable, so an older instance on the same database still inserts rows.
    cost_unknown: bool | None = Field(default=None, nullable=True)
    #: the routing trail, JSON `[{channel_id, code, ms, error?, skipped?}]`; nullable, so that an older instance
    #: on the same database still inserts rows
    attempts: str | None = Field(default=None, sa_type=sa.Text)


_LOGS = LogRow.__table__
#: literals, not parameters: a partial index serves `code != 200` or `is_test = true` only when the query says so
CODE_OK = sa.literal_column("200")
#: Each filter of the log search, with created_at after it, so that a filtered page is read in order from its index
#: and its count never scans the table (aiproxy's own: (model, created_at), (channel_id, created_at),
#: (channel_id, model, created_at)). Failed calls and model tests are a few percent of the rows: partial indexes
#: where the database has them, (code, created_at) and (is_test, created_at) on MySQL/MariaDB. The keyword's OR
#: names request_id, model, token_name and actual_model, each the head of an index. The cost of each, per million
#: rows, on insert and on disk: README, "Months of logs".
LOG_INDEXES = (
    sa.Index("ix_logs_model_created_at", _LOGS.c.model, _LOGS.c.created_at),
    sa.Index("ix_logs_channel_created_at", _LOGS.c.channel, _LOGS.c.created_at),
    sa.Index("ix_logs_channel_model_created_at", _LOGS.c.channel, _LOGS.c.model, _LOGS.c.created_at),
    sa.Index("ix_logs_token_name_created_at", _LOGS.c.token_name, _LOGS.c.created_at),
    sa.Index("ix_logs_actual_model_created_at", _LOGS.c.actual_model, _LOGS.c.created_at),
    sa.Index("ix_logs_errors", _LOGS.c.created_at, sqlite_where=_LOGS.c.code != CODE_OK,
             postgresql_where=_LOGS.c.code != CODE_OK).ddl_if(dialect=("sqlite", "postgresql")),
    sa.Index("ix_logs_tests", _LOGS.c.created_at, sqlite_where=_LOGS.c.is_test == sa.true(),
             postgresql_where=_LOGS.c.is_test == sa.true()).ddl_if(dialect=("sqlite", "postgresql")),
    sa.Index("ix_logs_code_created_at", _LOGS.c.code, _LOGS.c.created_at).ddl_if(dialect=("mysql", "mariadb")),
    sa.Index("ix_logs_is_test_created_at", _LOGS.c.is_test, _LOGS.c.created_at).ddl_if(dialect=("mysql", "mariadb")),
)
#: indexes an older version made that a composite one above replaces
OLD_LOG_INDEXES = ("ix_logs_model",)


def index_applies(index: sa.Index, dialect: str) -> bool:
    """Whether `index` is made on this kind of database (the partial ones are not, on MySQL/MariaDB)."""
    wanted = getattr(index, "_ddl_if", None)
    return wanted is None or not wanted.dialect or dialect in wanted.dialect


class LogDetail(Base, table=True):
    __tablename__ = "log_details"
    request_id: str = Field(primary_key=True, max_length=64)
    request_body: str = Field(default="", sa_type=sa.Text)
    response_body: str = Field(default="", sa_type=sa.Text)
    request_body_truncated: bool = False
    response_body_truncated: bool = False


class SummaryMinute(Base, table=True):
    """Per-minute counters per (channel, model) of the recent past (SUMMARY_MINUTE_DAYS): the dashboard reads
    these and the hourly rollup below, never the logs. A row counts the calls the channel answered last
    (request_count, exception_count …), and apart from them the failed tries it made for calls another channel
    then answered or failed (failed_attempts): totals over all channels equal the logs', a channel's own figures
    count its every try (issue 19)."""

    __tablename__ = "summary_minutes"
    minute: int = Field(primary_key=True, sa_type=sa.BigInteger)  # unix seconds, start of the UTC minute
    channel_id: int = Field(primary_key=True)
    model: str = Field(primary_key=True, max_length=191)
    request_count: int = 0
    exception_count: int = 0
    input_tokens: int = Field(default=0, sa_type=sa.BigInteger)
    output_tokens: int = Field(default=0, sa_type=sa.BigInteger)
    total_tokens: int = Field(default=0, sa_type=sa.BigInteger)
    cached_tokens: int = Field(default=0, sa_type=sa.BigInteger)
    cache_hit_count: int = 0
    total_time_milliseconds: int = Field(default=0, sa_type=sa.BigInteger)
    total_ttfb_milliseconds: int = Field(default=0, sa_type=sa.BigInteger)
    used_amount: float = 0.0
    failed_attempts: int = 0
    failed_attempt_ms: int = Field(default=0, sa_type=sa.BigInteger)


class SummaryHour(Base, table=True):
    """The hourly rollup, kept as long as the logs: the same counters per (UTC hour, channel, model), plus the
    busiest minute's calls and tokens (aiproxy keeps hourly `summaries` beside its per-minute table)."""

    __tablename__ = "summary_hours"
    hour: int = Field(primary_key=True, sa_type=sa.BigInteger)  # unix seconds, start of the UTC hour
    channel_id: int = Field(primary_key=True)
    model: str = Field(primary_key=True, max_length=191)
    request_count: int = Field(default=0, sa_type=sa.BigInteger)
    exception_count: int = Field(default=0, sa_type=sa.BigInteger)
    input_tokens: int = Field(default=0, sa_type=sa.BigInteger)
    output_tokens: int = Field(default=0, sa_type=sa.BigInteger)
    total_tokens: int = Field(default=0, sa_type=sa.BigInteger)
    cached_tokens: int = Field(default=0, sa_type=sa.BigInteger)
    cache_hit_count: int = Field(default=0, sa_type=sa.BigInteger)
    total_time_milliseconds: int = Field(default=0, sa_type=sa.BigInteger)
    total_ttfb_milliseconds: int = Field(default=0, sa_type=sa.BigInteger)
    used_amount: float = 0.0
    failed_attempts: int = Field(default=0, sa_type=sa.BigInteger)
    failed_attempt_ms: int = Field(default=0, sa_type=sa.BigInteger)
    max_rpm: int = 0  # the most calls in one of its minutes
    max_tpm: int = Field(default=0, sa_type=sa.BigInteger)  # the most tokens in one of its minutes


class Option(Base, table=True):
    __tablename__ = "options"
    key: str = Field(primary_key=True, max_length=64)
    value: str = Field(default="", sa_type=sa.Text)


class SharedVersion(Base, table=True):
    """One row, bumped by every change to channels, tokens, model configs or options. Each instance polls it
    and reloads when it moves, so instances on one database see each other's changes."""

    __tablename__ = "shared_version"
    id: int = Field(default=1, primary_key=True)
    version: int = Field(default=0, sa_type=sa.BigInteger)
    summaries: int = 0  # the SUMMARIES_LAYOUT the summaries were last built in; an older one is rebuilt at start


#: what the summaries hold: 1 = calls on their answering channel, failed tries apart, and the hourly rollup
SUMMARIES_LAYOUT = 1


class StoredResponse(Base, table=True):
    """A /v1/responses answer, kept for GET /v1/responses/{id} and for `previous_response_id`, which replays the
    turns before it; deleted with the logs of its age."""

    __tablename__ = "responses"
    id: str = Field(primary_key=True, max_length=128)
    created_at: int = _ms_col(index=True)
    token_id: int = 0  # the API key that asked (0: the admin key); only it may read or continue it
    native_channel: int = 0  # the channel whose upstream stored it too (an OpenAI pass-through); 0: none did
    model: str = Field(default="", max_length=191)
    previous_response_id: str = Field(default="", max_length=128)
    input_items: list[dict[str, Any]] | None = _json_col()
    answer: dict[str, Any] | None = _json_col()


def _json_dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)  # "模型" stays searchable with LIKE, not "\u6a21\u578b"


def make_engine(dsn: str) -> sa.Engine:
    if dsn.startswith("sqlite"):
        engine = sa.create_engine(
            dsn, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S}, pool_pre_ping=False,
            json_serializer=_json_dumps,
        )

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(conn: Any, _record: Any) -> None:
            cur = conn.cursor()
            cur.execute("PRAGMA auto_vacuum=INCREMENTAL")  # a new file gives deleted rows' pages back, in steps
            cur.execute("PRAGMA journal_mode=WAL")  # readers never block the log writer
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
            cur.close()

        return engine
    return sa.create_engine(with_default_driver(dsn), pool_pre_ping=True, pool_recycle=3600,
                            json_serializer=_json_dumps)


def with_default_driver(dsn: str) -> str:
    """`mysql://` and `postgres://` as users write them, with the drivers we ship or suggest."""
    scheme, sep, rest = dsn.partition("://")
    if scheme == "mysql":
        return f"mysql+pymysql://{rest}"
    if scheme in ("postgres", "postgresql"):
        return f"postgresql+psycopg://{rest}"
    return dsn


def create_schema(engine: sa.Engine) -> None:
    """Create missing tables, then add the columns a newer version defines to tables an older one made, so an
    upgrade keeps every stored row."""
    existed = set(sa.inspect(engine).get_table_names())
    Base.metadata.create_all(engine)
    inspector = sa.inspect(engine)
    dialect = engine.dialect.name
    analyze: set[str] = set()  # tables with new indexes: the planner needs their statistics to choose them
    with engine.begin() as conn:
        for table in Base.metadata.sorted_tables:
            present = {c["name"] for c in inspector.get_columns(table.name)}
            added = [c for c in table.columns if c.name not in present]
            for column in added:
                conn.exec_driver_sql(_add_column_sql(engine, table, column))
            indexes = {i["name"] for i in inspector.get_indexes(table.name)}
            for index in table.indexes:
                if index.name in indexes or not index_applies(index, dialect):
                    continue
                if table.name in existed:
                    logger.warning("creating the index %s on %s (once; on a large table this takes a while)",
                                   index.name, table.name)
                    analyze.add(table.name)
                index.create(conn)
            for name in (OLD_LOG_INDEXES if table is LogRow.__table__ else ()):
                if name in indexes:
                    on = " ON logs" if dialect in ("mysql", "mariadb") else ""
                    conn.exec_driver_sql(f"DROP INDEX {name}{on}")
        # the one row of the shared version, created if missing and left as it is otherwise
        upsert(conn, SharedVersion.__table__, [{"id": 1, "version": 0}], ("id",), add=("version",))
        if dialect == "sqlite" and analyze:  # sampled: seconds, not minutes, on millions of rows
            conn.exec_driver_sql("PRAGMA analysis_limit=1000")
            for name in sorted(analyze):
                conn.exec_driver_sql(f"ANALYZE {name}")
    with engine.begin() as conn:
        built = conn.execute(sa.select(SharedVersion.summaries).where(SharedVersion.id == 1)).scalar_one()
        if built < SUMMARIES_LAYOUT and conn.execute(sa.select(LogRow.id).limit(1)).first() is None:
            _summaries_built(conn)  # no logs: nothing to rebuild
            built = SUMMARIES_LAYOUT
    if built < SUMMARIES_LAYOUT:  # an older version's summaries count every try as a call, and have no hours
        logger.warning("rebuilding the dashboard's summaries from the logs (once, after an upgrade)")
        rebuild_summaries(engine)


def _summaries_built(conn: sa.Connection) -> None:
    conn.execute(sa.update(SharedVersion).where(SharedVersion.id == 1).values(summaries=SUMMARIES_LAYOUT))


def _add_column_sql(engine: sa.Engine, table: sa.Table, column: sa.Column) -> str:
    quote = engine.dialect.identifier_preparer.quote
    sql = f"ALTER TABLE {quote(table.name)} ADD COLUMN {quote(column.name)} {column.type.compile(engine.dialect)}"
    default = column.default.arg if column.default is not None and column.default.is_scalar else None
    if default is None:
        return sql  # nullable: old rows read as NULL, which the converters treat as empty
    literal = sa.literal(default).compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True})
    return f"{sql} NOT NULL DEFAULT {literal}"


# ---- writes that several instances run at once ----

_UPSERT_DIALECTS = frozenset({"postgresql", "sqlite"})  # INSERT … ON CONFLICT; MySQL and MariaDB: ON DUPLICATE KEY


def _dialect_insert(name: str) -> Any:
    """The insert() of one SQL dialect, imported when first used: a gateway on SQLite never loads the others'."""
    module = {"postgresql": "postgresql", "sqlite": "sqlite", "mysql": "mysql", "mariadb": "mysql"}[name]
    return importlib.import_module(f"sqlalchemy.dialects.{module}").insert
_CONFLICT_SQLSTATES = frozenset({"40001", "40P01", "55P03"})  # serialization failure, deadlock, lock not available
_CONFLICT_MYSQL_ERRORS = frozenset({1205, 1213})  # lock wait timeout, deadlock


def upsert(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]], keys: tuple[str, ...],
           add: tuple[str, ...] = (), greatest: tuple[str, ...] = ()) -> None:
    """Insert `rows`, or update those whose `keys` already exist: columns in `add` are added to, those in
    `greatest` keep the larger value, the others are replaced. Rows in key order, so two instances writing the
    same rows lock them in the same order and cannot deadlock each other (issue 10). One statement, run for
    every row: it is compiled once and cached (a multi-row VALUES is compiled anew for each number of rows, which
    cost the log writer more than the writing)."""
    if not rows:
        return
    rows = sorted(rows, key=lambda r: tuple(r[k] for k in keys))
    changed = tuple(c for c in rows[0] if c not in keys)
    dialect = conn.dialect.name

    def merged(old: Any, new: Any, c: str) -> Any:
        if c in add:
            return old + new
        if c in greatest:
            return sa.func.max(old, new) if dialect == "sqlite" else sa.func.greatest(old, new)
        return new

    if dialect in ("mysql", "mariadb"):
        stmt = _dialect_insert(dialect)(table)
        new = stmt.inserted
        conn.execute(stmt.on_duplicate_key_update({c: merged(table.c[c], new[c], c) for c in changed}), rows)
    elif dialect in _UPSERT_DIALECTS:
        stmt = _dialect_insert(dialect)(table)
        new = stmt.excluded
        set_ = {c: merged(table.c[c], new[c], c) for c in changed}
        conn.execute(stmt.on_conflict_do_update(index_elements=list(keys), set_=set_) if set_
                     else stmt.on_conflict_do_nothing(index_elements=list(keys)), rows)
    else:  # any other SQLAlchemy dialect: update, then insert what matched nothing
        for row in rows:
            where = [table.c[k] == row[k] for k in keys]
            values = {c: table.c[c] + row[c] if c in add else
                      sa.case((table.c[c] < row[c], row[c]), else_=table.c[c]) if c in greatest else row[c]
                      for c in changed}
            if not values or conn.execute(sa.update(table).where(*where).values(values)).rowcount == 0:
                conn.execute(sa.insert(table).values(row))


def is_write_conflict(exc: BaseException) -> bool:
    """A deadlock, serialization failure or lock timeout: the same transaction may succeed when run again."""
    orig = getattr(exc, "orig", None)
    if getattr(orig, "sqlstate", None) in _CONFLICT_SQLSTATES:
        return True
    if isinstance(orig, sqlite3.OperationalError):
        return "locked" in str(orig) or "busy" in str(orig)
    args = getattr(orig, "args", ())
    return bool(args) and args[0] in _CONFLICT_MYSQL_ERRORS


def is_database_reachable(engine: sa.Engine) -> bool:
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        return True
    except sa.exc.SQLAlchemyError:
        return False


def bump_shared_version(conn: sa.Connection) -> None:
    conn.execute(sa.update(SharedVersion).where(SharedVersion.id == 1).values(version=SharedVersion.version + 1))


def read_shared_version(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(SharedVersion.version).where(SharedVersion.id == 1)).scalar_one()


def load_options(engine: sa.Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(Option.key, Option.value)).all()
    out: dict[str, Any] = {}
    for key, value in rows:
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def save_option(engine: sa.Engine, key: str, value: Any) -> None:
    with engine.begin() as conn:
        upsert(conn, Option.__table__, [{"key": key, "value": json.dumps(value)}], ("key",))
        bump_shared_version(conn)


def channel_to_api(ch: dict[str, Any], test: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A channel in aiproxy's wire shape: lists and maps are never null, times are Unix ms."""
    return {
        "id": ch["id"],
        "type": ch["type"],
        "name": ch["name"],
        "key": ch["key"],
        "base_url": ch["base_url"] or "",
        "models": list(ch["models"] or []),
        "model_mapping": dict(ch["model_mapping"] or {}),
        "config": dict(ch["config"] or {}),
        "configs": dict(ch["config"] or {}),
        "status": ch["status"],
        "status_reason": ch["status_reason"] or "",
        "status_time": ch["status_time"] or 0,
        "priority": ch["priority"],
        "weight": ch["weight"],
        "created_at": ch["created_at"],
        "request_count": ch["request_count"],
        "retry_count": ch["retry_count"],
        "error_count": ch["error_count"] or 0,
        "used_amount": ch["used_amount"],
        "last_test_error_at": ch["last_test_error_at"],
        "source": ch["source"] or "",
        "source_id": ch["source_id"] or "",
        "proxy_url": ch.get("proxy_url") or "",
        "skip_tls_verify": bool(ch.get("skip_tls_verify")),
        "enabled_auto_balance_check": bool(ch.get("enabled_auto_balance_check")),
        "enabled_no_permission_ban": bool(ch.get("enabled_no_permission_ban")),
        "warn_error_rate": ch.get("warn_error_rate") or 0.0,
        "max_error_rate": ch.get("max_error_rate") or 0.0,
        "balance_threshold": 0,  # FastGPT refuses to write a channel whose balance_threshold is not 0
        "sets": ["default"],
        "channel_tests": test or [],
    }


def select_channels(engine: sa.Engine, where: Iterable[Any] = (), order: Any = None,
                    limit: int | None = None, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    where = list(where)
    with engine.connect() as conn:
        total = conn.execute(sa.select(sa.func.count()).select_from(Channel).where(*where)).scalar_one()
        stmt = sa.select(*Channel.__table__.columns).where(*where).order_by(
            order if order is not None else Channel.id.desc())
        if limit is not None:
            stmt = stmt.limit(limit).offset(offset)
        rows = [dict(r._mapping) for r in conn.execute(stmt)]
        tests = _tests_by_channel(conn, [r["id"] for r in rows])
    return [channel_to_api(r, tests.get(r["id"])) for r in rows], total


def _tests_by_channel(conn: sa.Connection, ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    if not ids:
        return {}
    out: dict[int, list[dict[str, Any]]] = collections.defaultdict(list)
    for r in conn.execute(sa.select(*ChannelTest.__table__.columns).where(ChannelTest.channel_id.in_(ids))):
        out[r.channel_id].append(channel_test_to_api(dict(r._mapping)))
    return out


def channel_test_to_api(t: dict[str, Any], channel: dict[str, Any] | None = None) -> dict[str, Any]:
    out = {
        "channel_id": t["channel_id"], "model": t["model"], "actual_model": t["actual_model"],
        "test_at": t["test_at"], "took": t["took"], "success": bool(t["success"]), "code": t["code"],
        "response": t["response"],
    }
    if channel is not None:
        out.update(channel_name=channel["name"], channel_type=channel["type"])
    return out


def token_to_api(t: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": t["id"], "name": t["name"], "key": "sk-" + t["key"], "status": t["status"],
        "models": list(t["models"] or []), "quota": t["quota"], "used_amount": t["used_amount"],
        "request_count": t["request_count"], "expired_at": t["expired_at"], "created_at": t["created_at"],
        "group": "", "subnets": [],
    }


def log_to_api(r: dict[str, Any]) -> dict[str, Any]:
    """A log row as aiproxy sends it, plus the top-level token fields older FastGPT versions read."""
    usage = {
        "input_tokens": r["input_tokens"], "output_tokens": r["output_tokens"],
        "total_tokens": r["total_tokens"], "cached_tokens": r["cached_tokens"],
        "cache_creation_tokens": r.get("cache_creation_tokens") or 0,
    }
    return {
        "id": r["id"], "request_id": r["request_id"], "request_at": r["request_at"], "created_at": r["created_at"],
        "ttfb_milliseconds": r["ttfb_milliseconds"], "model": r["model"], "actual_model": r["actual_model"],
        "channel": r["channel"], "channel_name": r["channel_name"], "code": r["code"], "mode": r["mode"],
        "endpoint": r["endpoint"],
        "content": r["content"], "ip": r["ip"], "retry_times": r["retry_times"], "token_id": r["token_id"],
        "token_name": r["token_name"], "usage": usage, "usage_estimated": bool(r["usage_estimated"]),
        "prompt_tokens": r["input_tokens"], "completion_tokens": r["output_tokens"],
        "used_amount": None if r.get("cost_unknown") else r["used_amount"],  # None: a price it needs is unknown
        "stream": bool(r["stream"]), "is_test": bool(r["is_test"]), "group": "",
        "attempts": row_attempts(r),
    }


def row_attempts(r: dict[str, Any]) -> list[dict[str, Any]]:
    """A row's routing trail. A call that one channel answered at its first try stores none (the row says it
    all, and the hot path skips the JSON): its trail is that one attempt."""
    if r["attempts"]:
        return attempts_from_text(r["attempts"])
    if r["channel"] and not r["retry_times"]:
        return [{"channel_id": r["channel"], "code": r["code"], "ms": max(0, r["created_at"] - r["request_at"])}]
    return []


def attempts_from_text(text: str | None) -> list[dict[str, Any]]:
    """A row's routing trail; an older row has none."""
    try:
        trail = orjson.loads(text) if text else []
    except orjson.JSONDecodeError:
        return []
    return trail if isinstance(trail, list) else []


_TIMESTAMP = re.compile(r"[0-9]{1,19}")  # nanoseconds fill int64's 19 digits; a longer number is no time


def parse_timestamp_ms(value: str | int | None) -> int | None:
    """aiproxy's smart unit: ≤10 digits seconds, ≤13 ms, ≤16 µs, else ns. A whole number of at most 19 digits,
    so no result overflows a BIGINT (issue 10: 25 digits, `inf` and `1e400` once answered 500); anything else
    raises ValueError."""
    text = "" if value is None else str(value).strip()
    if not text:
        return None
    if not _TIMESTAMP.fullmatch(text):
        raise ValueError(f"invalid timestamp: {text[:40]!r} (Unix seconds, ms, µs or ns, at most 19 digits)")
    n, digits = int(text), len(text.lstrip("0") or "0")
    if digits <= 10:
        return n * 1000
    if digits <= 13:
        return n
    if digits <= 16:
        return n // 1000
    return n // 1_000_000


@dataclass(frozen=True)
class LogFilter:
    start_ms: int | None = None
    end_ms: int | None = None
    model: str = ""
    channel: int | None = None
    token_name: str = ""
    request_id: str = ""
    code_type: str = "all"
    keyword: str = ""
    is_test: bool | None = None  # None: calls and model tests alike

    def where(self) -> list[Any]:
        w: list[Any] = []
        if self.is_test is not None:
            w.append(LogRow.is_test == (sa.true() if self.is_test else sa.false()))
        if self.start_ms is not None:
            w.append(LogRow.created_at >= self.start_ms)
        if self.end_ms is not None:
            w.append(LogRow.created_at <= self.end_ms)
        if self.model:
            w.append(LogRow.model == self.model)
        if self.channel is not None:
            w.append(LogRow.channel == self.channel)
        if self.token_name:
            w.append(LogRow.token_name == self.token_name)
        if self.request_id:
            w.append(LogRow.request_id == self.request_id)
        if self.code_type == "success":
            w.append(LogRow.code == CODE_OK)
        elif self.code_type == "error":
            w.append(LogRow.code != CODE_OK)
        if self.keyword:  # aiproxy: exact OR-match over the identifying columns, each the head of an index
            kw = self.keyword
            w.append(sa.or_(LogRow.request_id == kw, LogRow.model == kw, LogRow.token_name == kw,
                            LogRow.actual_model == kw))
        return w


def query_logs(engine: sa.Engine, flt: LogFilter, page: int, per_page: int) -> tuple[list[dict[str, Any]], int]:
    where = flt.where()
    newest = (LogRow.created_at.desc(), LogRow.id.desc())  # id breaks ties: pages never overlap within one ms
    with engine.connect() as conn:
        total = count_logs(conn, flt)
        if flt.keyword:  # each column of the OR read in order from its own index, then merged
            found: dict[int, dict[str, Any]] = {}
            for column in (LogRow.request_id, LogRow.model, LogRow.token_name, LogRow.actual_model):
                part = dataclasses.replace(flt, keyword="").where() + [column == flt.keyword]
                found.update((r.id, dict(r._mapping)) for r in conn.execute(
                    sa.select(*LogRow.__table__.columns).where(*part).order_by(*newest).limit(page * per_page)))
            page_rows = sorted(found.values(), key=lambda r: (r["created_at"], r["id"]), reverse=True)
            return [log_to_api(r) for r in page_rows[(page - 1) * per_page:page * per_page]], total
        stmt = sa.select(*LogRow.__table__.columns).where(*where).order_by(*newest).limit(per_page).offset(
            (page - 1) * per_page)
        rows = [log_to_api(dict(r._mapping)) for r in conn.execute(stmt)]
    return rows, total


ROLLUP_COUNT_MIN_S = 6 * 3600  # a range with fewer whole hours is counted in the logs themselves


def count_logs(conn: sa.Connection, flt: LogFilter) -> int:
    """The rows `flt` matches. Over long ranges, the hourly rollup counts the whole hours (it holds every call of
    the logs, written in the same transactions) and the logs only the part hours at either end: a 30-day count of
    millions of rows reads a few thousand."""
    if flt.code_type == "success":  # most rows: all of them minus the failed ones, each read from an index
        return count_logs(conn, dataclasses.replace(flt, code_type="all")) - count_logs(
            conn, dataclasses.replace(flt, code_type="error"))
    rolled = _count_from_rollup(conn, flt)
    if rolled is not None:
        return rolled
    return conn.execute(sa.select(sa.func.count()).select_from(LogRow).where(*flt.where())).scalar_one()


def _count_from_rollup(conn: sa.Connection, flt: LogFilter) -> int | None:
    if flt.token_name or flt.request_id or flt.keyword or flt.is_test:
        return None  # the rollup has no keys or request ids, and no model tests
    start = flt.start_ms or 0
    first_hour = -(-start // 3_600_000) * 3600  # the whole hours of the range, in seconds
    end_hour = ((flt.end_ms + 1) // 3_600_000 if flt.end_ms is not None else now_ms() // 3_600_000 + 1) * 3600
    if end_hour - first_hour < ROLLUP_COUNT_MIN_S:
        return None
    column = SummaryHour.exception_count if flt.code_type == "error" else SummaryHour.request_count
    where = [SummaryHour.hour >= first_hour, SummaryHour.hour < end_hour]
    if flt.channel is not None:
        where.append(SummaryHour.channel_id == flt.channel)
    if flt.model:
        where.append(SummaryHour.model == flt.model)
    total = int(conn.execute(sa.select(sa.func.coalesce(sa.func.sum(column), 0)).where(*where)).scalar_one())
    # each part with one lower and one upper bound: given two, SQLite may range its index on the wrong one
    parts = [dataclasses.replace(flt, end_ms=first_hour * 1000 - 1)] if start < first_hour * 1000 else []
    if flt.end_ms is None or flt.end_ms >= end_hour * 1000:
        parts.append(dataclasses.replace(flt, start_ms=end_hour * 1000))
    count = sa.select(sa.func.count()).select_from(LogRow)
    total += sum(conn.execute(count.where(*part.where())).scalar_one() for part in parts)
    if flt.is_test is None:  # model tests are rows of the logs, not calls of the rollup: read from their own
        # index, the other columns wrapped so that no planner ranges the (far larger) index of one of them
        tests = [LogRow.is_test == sa.true(), LogRow.created_at >= first_hour * 1000,
                 LogRow.created_at < end_hour * 1000]
        if flt.model:
            tests.append(sa.func.coalesce(LogRow.model, "") == flt.model)
        if flt.channel is not None:
            tests.append(LogRow.channel + 0 == flt.channel)
        if flt.code_type == "error":
            tests.append(LogRow.code + 0 != CODE_OK)
        total += conn.execute(count.where(*tests)).scalar_one()
    return total


def query_summaries(engine: sa.Engine, start_s: int, end_s: int, channel: int | None,
                    model: str) -> list[dict[str, Any]]:
    """The per-minute summary rows of a range, as stored."""
    where = [SummaryMinute.minute >= start_s, SummaryMinute.minute <= end_s]
    if channel is not None:
        where.append(SummaryMinute.channel_id == channel)
    if model:
        where.append(SummaryMinute.model == model)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(
            sa.select(*SummaryMinute.__table__.columns).where(*where).order_by(SummaryMinute.minute))]


# ---- summaries: per minute for the recent past, per hour for as long as the logs ----

SUMMARY_MINUTE_DAYS = 3  # per-minute summaries older than this are pruned; the hourly rollup stays
MINUTE_RANGE_MAX_S = 2 * 86400  # minute buckets over a longer range are answered by the hour, and say so
#: a call's counters (on the channel that answered it), then a failed try's (on the channel that failed)
_SUMMED = ("request_count", "exception_count", "input_tokens", "output_tokens", "total_tokens", "cached_tokens",
           "cache_hit_count", "total_time_milliseconds", "total_ttfb_milliseconds", "used_amount")
SUMMARY_COUNTERS = _SUMMED + ("failed_attempts", "failed_attempt_ms")
_K = functools.partial(sa.literal_column, type_=sa.BigInteger)  # a constant that renders the same twice in GROUP BY


def failed_attempts(row: Any) -> list[dict[str, Any]]:
    """The tries of a call that failed before another answered it (or before the last one failed): every tried
    channel in its trail but the row's own, which its last entry is. Only a call with retries has any."""
    if not row["retry_times"] or not row["attempts"]:
        return []
    trail = [a for a in attempts_from_text(row["attempts"]) if isinstance(a, dict)
             and isinstance(a.get("channel_id"), int) and isinstance(a.get("ms"), int)]
    last = trail[-1] if trail else None
    own = last if last is not None and "skipped" not in last and last["channel_id"] == row["channel"] else None
    return [a for a in trail if "skipped" not in a and a is not own and a["channel_id"]]


def add_call(c: collections.Counter, r: dict[str, Any]) -> None:
    c["request_count"] += 1
    c["exception_count"] += r["code"] != 200
    for name in ("input_tokens", "output_tokens", "total_tokens", "cached_tokens", "used_amount"):
        c[name] += r[name]
    c["cache_hit_count"] += r["cached_tokens"] > 0
    c["total_time_milliseconds"] += r["created_at"] - r["request_at"]
    c["total_ttfb_milliseconds"] += r["ttfb_milliseconds"]


def add_summaries(conn: sa.Connection, sums: dict[tuple[int, int, str], collections.Counter]) -> None:
    """Add per-minute counters to the minute table and its hours; an hour keeps its busiest minute, read back
    after the add (the minute's row is locked by then, so two instances never lose each other's calls)."""
    if not sums:
        return
    minutes = [{"minute": m, "channel_id": ch, "model": model, **{n: c[n] for n in SUMMARY_COUNTERS}}
               for (m, ch, model), c in sums.items()]
    upsert(conn, SummaryMinute.__table__, minutes, ("minute", "channel_id", "model"), add=SUMMARY_COUNTERS)
    busiest: dict[tuple[int, int, str], list[int]] = {}
    now = conn.execute(sa.select(SummaryMinute.minute, SummaryMinute.channel_id, SummaryMinute.model,
                                 SummaryMinute.request_count, SummaryMinute.total_tokens)
                       .where(SummaryMinute.minute.in_({m for m, _, _ in sums})))
    for m, ch, model, calls, tokens in now:
        if (m, ch, model) in sums:
            top = busiest.setdefault((m // 3600 * 3600, ch, model), [0, 0])
            top[0], top[1] = max(top[0], calls), max(top[1], tokens)
    hours: dict[tuple[int, int, str], collections.Counter] = collections.defaultdict(collections.Counter)
    for (m, ch, model), c in sums.items():
        hours[(m // 3600 * 3600, ch, model)].update(c)
    rows = [{"hour": h, "channel_id": ch, "model": model, **{n: c[n] for n in SUMMARY_COUNTERS},
             "max_rpm": busiest.get((h, ch, model), (0, 0))[0], "max_tpm": busiest.get((h, ch, model), (0, 0))[1]}
            for (h, ch, model), c in hours.items()]
    upsert(conn, SummaryHour.__table__, rows, ("hour", "channel_id", "model"), add=SUMMARY_COUNTERS,
           greatest=("max_rpm", "max_tpm"))


def minute_cutoff_s() -> int:
    """Per-minute summaries start at this hour; older ones are pruned."""
    return (now_ms() // 1000 - SUMMARY_MINUTE_DAYS * 86400) // 3600 * 3600


def _calls_by_minute(where: list[Any]) -> sa.Select:
    c = LogRow.__table__.c
    minute = (c.created_at // _K("60000")) * _K("60")
    return (sa.select(minute.label("minute"), c.channel.label("channel_id"), c.model.label("model"),
                      sa.func.count().label("request_count"),
                      sa.func.sum(sa.case((c.code != CODE_OK, 1), else_=0)).label("exception_count"),
                      sa.func.sum(c.input_tokens).label("input_tokens"),
                      sa.func.sum(c.output_tokens).label("output_tokens"),
                      sa.func.sum(c.total_tokens).label("total_tokens"),
                      sa.func.sum(c.cached_tokens).label("cached_tokens"),
                      sa.func.sum(sa.case((c.cached_tokens > 0, 1), else_=0)).label("cache_hit_count"),
                      sa.func.sum(c.created_at - c.request_at).label("total_time_milliseconds"),
                      sa.func.sum(c.ttfb_milliseconds).label("total_ttfb_milliseconds"),
                      sa.func.sum(c.used_amount).label("used_amount"))
            .where(c.is_test == sa.false(), *where).group_by(minute, c.channel, c.model))


def summarize_logs(conn: sa.Connection, start_s: int | None = None, end_s: int | None = None) -> None:
    """Recompute the summaries of the hours [start_s, end_s) (None: all) from the logs, in SQL: the minutes of
    the recent past and the hourly rollup, then each failed try of a call with retries, from its trail."""
    in_hours = [t for t in (SummaryHour.hour >= start_s if start_s is not None else None,
                            SummaryHour.hour < end_s if end_s is not None else None) if t is not None]
    in_minutes = [t for t in (SummaryMinute.minute >= start_s if start_s is not None else None,
                              SummaryMinute.minute < end_s if end_s is not None else None) if t is not None]
    conn.execute(sa.delete(SummaryHour).where(*in_hours))
    conn.execute(sa.delete(SummaryMinute).where(*in_minutes))
    cutoff = minute_cutoff_s()
    in_logs = [t for t in (LogRow.created_at >= start_s * 1000 if start_s is not None else None,
                           LogRow.created_at < end_s * 1000 if end_s is not None else None) if t is not None]
    minute_cols = ["minute", "channel_id", "model", *_SUMMED]
    if end_s is None or end_s > cutoff:
        conn.execute(sa.insert(SummaryMinute).from_select(minute_cols, _calls_by_minute(
            [*in_logs, LogRow.created_at >= max(cutoff, start_s or 0) * 1000])))
    per_minute = _calls_by_minute(in_logs).subquery()
    hour = (per_minute.c.minute // _K("3600")) * _K("3600")
    conn.execute(sa.insert(SummaryHour).from_select(
        ["hour", "channel_id", "model", *_SUMMED, "max_rpm", "max_tpm"],
        sa.select(hour, per_minute.c.channel_id, per_minute.c.model,
                  *[sa.func.sum(per_minute.c[n]) for n in _SUMMED],
                  sa.func.max(per_minute.c.request_count), sa.func.max(per_minute.c.total_tokens))
        .group_by(hour, per_minute.c.channel_id, per_minute.c.model)))
    retried = conn.execute(sa.select(LogRow.created_at, LogRow.channel, LogRow.model, LogRow.retry_times,
                                     LogRow.attempts)
                           .where(*in_logs, LogRow.retry_times > 0, LogRow.is_test == sa.false()))
    minutes: dict[tuple[int, int, str], collections.Counter] = collections.defaultdict(collections.Counter)
    hours: dict[tuple[int, int, str], collections.Counter] = collections.defaultdict(collections.Counter)
    for r in retried.mappings():
        for a in failed_attempts(r):
            minute = r["created_at"] // 60000 * 60
            tried = dict(failed_attempts=1, failed_attempt_ms=a["ms"])
            if minute >= cutoff:
                minutes[(minute, a["channel_id"], r["model"])].update(tried)
            hours[(minute // 3600 * 3600, a["channel_id"], r["model"])].update(tried)
    failed = ("failed_attempts", "failed_attempt_ms")  # only these: a new row's other counters start at 0
    upsert(conn, SummaryMinute.__table__, [{"minute": m, "channel_id": ch, "model": model,
                                            **{n: c[n] for n in failed}} for (m, ch, model), c in minutes.items()],
           ("minute", "channel_id", "model"), add=failed)
    upsert(conn, SummaryHour.__table__, [{"hour": h, "channel_id": ch, "model": model,
                                          **{n: c[n] for n in failed}} for (h, ch, model), c in hours.items()],
           ("hour", "channel_id", "model"), add=failed)


def rebuild_summaries(engine: sa.Engine) -> dict[str, int]:
    """Every summary and rollup recomputed from the logs, in one transaction (`aiproxy-local rebuild-summaries`:
    after a crash, after importing logs, after an upgrade that changes the rollups)."""
    with engine.begin() as conn:
        summarize_logs(conn)
        _summaries_built(conn)  # in the same transaction: a rebuild cut short is run again at the next start
        return {"summary_minutes": conn.execute(sa.select(sa.func.count()).select_from(SummaryMinute)).scalar_one(),
                "summary_hours": conn.execute(sa.select(sa.func.count()).select_from(SummaryHour)).scalar_one()}


def prune_summaries(engine: sa.Engine, logs_before_ms: int | None = None) -> None:
    """Minutes older than SUMMARY_MINUTE_DAYS go; with `logs_before_ms` (the logs deleted before it), the hours
    before it go too, and the hour it falls in is recomputed from the logs left in it."""
    with engine.begin() as conn:
        conn.execute(sa.delete(SummaryMinute).where(SummaryMinute.minute < minute_cutoff_s()))
        if logs_before_ms is not None:
            hour = logs_before_ms // 3_600_000 * 3600
            conn.execute(sa.delete(SummaryHour).where(SummaryHour.hour < hour))
            summarize_logs(conn, hour, hour + 3600)


# ---- the dashboard's sums, by local minute, hour or day ----

def _utc_offset(tz: ZoneInfo, ts: int) -> int:
    return int(datetime.fromtimestamp(ts, tz).utcoffset().total_seconds())


def utc_offsets(tz: ZoneInfo, start_s: int, end_s: int) -> list[tuple[int, int]]:
    """(from, UTC offset in seconds) for each stretch of [start_s, end_s] the zone keeps one offset (a DST
    change starts a new one), found day by day, then to the hour."""
    day = start_s - start_s % 3600
    stretches = [(day, _utc_offset(tz, day))]
    while day < end_s:
        following = min(day + 86400, end_s - end_s % 3600 + 3600)
        if _utc_offset(tz, following) != stretches[-1][1]:
            hour = day + 3600
            while _utc_offset(tz, hour) == stretches[-1][1]:
                hour += 3600
            stretches.append((hour, _utc_offset(tz, hour)))
        day = following
    return stretches


def _local_bucket(column: Any, stretches: list[tuple[int, int]], step: int) -> Any:
    """SQL for the local minute/hour/day number holding `column` (UTC seconds): its local time over `step`."""
    local = column + _K(f"({stretches[-1][1]})")
    if len(stretches) > 1:
        local = sa.case(*[(column < _K(str(until)), column + _K(f"({offset})"))
                          for (_, offset), (until, _) in zip(stretches, stretches[1:])], else_=local)
    return local // _K(str(step))


def _local_number_start(number: int, step: int, tz: ZoneInfo) -> int:
    """The UTC start of local minute/hour/day `number`."""
    wall = datetime.fromtimestamp(number * step, timezone.utc).replace(tzinfo=tz)
    return int(wall.timestamp())


def _summary_sums(conn: sa.Connection, hourly: bool, start_s: int, end_s: int, stretches: list[tuple[int, int]],
                  step: int, channel: int | None, model: str) -> list[Any]:
    """The summaries of [start_s, end_s), grouped in SQL by local bucket number, channel and model."""
    table = SummaryHour.__table__ if hourly else SummaryMinute.__table__
    at = table.c.hour if hourly else table.c.minute
    key = at // _K("60") if step == 60 else _local_bucket(at, stretches, step)
    where = [at >= start_s, at < end_s]
    if channel is not None:
        where.append(table.c.channel_id == channel)
    if model:
        where.append(table.c.model == model)
    busiest = (table.c.max_rpm, table.c.max_tpm) if hourly else (table.c.request_count, table.c.total_tokens)
    return conn.execute(sa.select(key.label("k"), table.c.channel_id, table.c.model,
                                  *[sa.func.sum(table.c[n]) for n in SUMMARY_COUNTERS],
                                  sa.func.max(busiest[0]), sa.func.max(busiest[1]))
                        .where(*where).group_by(key, table.c.channel_id, table.c.model)).all()


def _log_sums(conn: sa.Connection, start_s: int, end_s: int, stretches: list[tuple[int, int]], step: int,
              channel: int | None, model: str) -> list[Any]:
    """What _summary_sums() gives, from the logs themselves: for a part hour at the end of a range whose
    per-minute summaries are pruned (a few thousand rows at most)."""
    c = LogRow.__table__.c
    where = [c.created_at >= start_s * 1000, c.created_at < end_s * 1000]
    calls = [*where, *([c.channel == channel] if channel is not None else []), *([c.model == model] if model else [])]
    per_minute = _calls_by_minute(calls).subquery()
    key = per_minute.c.minute // _K("60") if step == 60 else _local_bucket(per_minute.c.minute, stretches, step)
    zero = sa.literal_column("0", sa.BigInteger)
    rows = [list(r) for r in conn.execute(
        sa.select(key, per_minute.c.channel_id, per_minute.c.model, *[sa.func.sum(per_minute.c[n]) for n in _SUMMED],
                  zero, zero, sa.func.max(per_minute.c.request_count), sa.func.max(per_minute.c.total_tokens))
        .group_by(key, per_minute.c.channel_id, per_minute.c.model))]
    retried = conn.execute(sa.select(c.created_at, c.channel, c.model, c.retry_times, c.attempts).where(
        *where, *([c.model == model] if model else []), c.retry_times > 0, c.is_test == sa.false()))
    failed_at = len(_SUMMED)
    for r in retried.mappings():
        minute = r["created_at"] // 60000 * 60
        offset = next(o for since, o in reversed(stretches) if minute >= since or since == stretches[0][0])
        k = minute // 60 if step == 60 else (minute + offset) // step
        for a in failed_attempts(r):
            if channel is None or a["channel_id"] == channel:
                rows.append([k, a["channel_id"], r["model"], *[0] * failed_at, 1, a["ms"], 0, 0])
    return rows


LOG_DELETE_CHUNK = 5000  # one short transaction each: the log writer never waits long for SQLite's write lock


def delete_logs_before(engine: sa.Engine, before_ms: int) -> int:
    """Delete the logs before `before_ms` and their summaries, so that the dashboard and the logs agree."""
    deleted = 0
    while True:
        with engine.begin() as conn:
            rows = conn.execute(sa.select(LogRow.id, LogRow.request_id).where(LogRow.created_at < before_ms)
                                .order_by(LogRow.id).limit(LOG_DELETE_CHUNK)).all()
            if not rows:
                break
            conn.execute(sa.delete(LogDetail).where(LogDetail.request_id.in_([r.request_id for r in rows])))
            deleted += conn.execute(sa.delete(LogRow).where(LogRow.id.in_([r.id for r in rows]))).rowcount or 0
    prune_summaries(engine, before_ms if deleted else None)
    if deleted and engine.dialect.name == "sqlite":
        reclaim_sqlite_space(engine)
    return deleted


SQLITE_VACUUM_FREE_SHARE = 0.25  # a file without auto-vacuum is vacuumed once this share of it is free pages
SQLITE_VACUUM_STEP_PAGES = 2000  # pages one incremental-vacuum transaction gives back (8 MB at 4 KB pages)


def reclaim_sqlite_space(engine: sa.Engine) -> int:
    """Give the pages deleted rows left free back to the file system, so the file shrinks: in small incremental
    steps (the log writer waits only for one step), or, in a file made before auto-vacuum was on, once with
    VACUUM when a quarter of it is free, which also turns incremental auto-vacuum on. Runs in a thread (the
    retention loop's, the admin route's), never on the event loop. Returns the pages given back."""
    with engine.connect() as conn:
        mode = conn.exec_driver_sql("PRAGMA auto_vacuum").scalar_one()
        free = conn.exec_driver_sql("PRAGMA freelist_count").scalar_one()
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar_one()
    if not free:
        return 0
    if mode == 2:  # incremental
        given = 0
        while given < free:
            with engine.begin() as conn:
                conn.exec_driver_sql(f"PRAGMA incremental_vacuum({SQLITE_VACUUM_STEP_PAGES})")
            given += SQLITE_VACUUM_STEP_PAGES
        return free
    if free < pages * SQLITE_VACUUM_FREE_SHARE:
        return 0
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("PRAGMA auto_vacuum=INCREMENTAL")
        conn.exec_driver_sql("VACUUM")
    logger.warning("vacuumed the SQLite file: %d of its %d pages were free; incremental auto-vacuum is on now",
                   free, pages)
    return free


# ---- the CSV export reads in id order, a page at a time ----

EXPORT_PAGE_ROWS = 2000


def iter_log_pages(engine: sa.Engine, flt: LogFilter, columns: Sequence[sa.Column],
                   limit: int | None = None) -> Iterator[list[sa.Row]]:
    """`columns` (the first one `LogRow.id`) of the rows `flt` matches, newest id first, in pages; each page one
    short query that starts below the last id read (keyset pagination: no OFFSET, no COUNT), at most `limit`
    rows. The id range of the time range is found first, so each page reads the rows of that range in id order."""
    where = flt.where()
    with engine.connect() as conn:
        if flt.start_ms is not None or flt.end_ms is not None:
            times = [t for t in (LogRow.created_at >= flt.start_ms if flt.start_ms is not None else None,
                                 LogRow.created_at <= flt.end_ms if flt.end_ms is not None else None)
                     if t is not None]
            low, high = conn.execute(sa.select(sa.func.min(LogRow.id), sa.func.max(LogRow.id)).where(*times)).one()
            if low is None:
                return
            where += [LogRow.id >= low]
            below = high + 1
        else:
            below = (conn.execute(sa.select(sa.func.max(LogRow.id))).scalar_one() or 0) + 1
    left = limit
    while left is None or left > 0:
        size = EXPORT_PAGE_ROWS if left is None else min(EXPORT_PAGE_ROWS, left)
        with engine.connect() as conn:
            page = conn.execute(sa.select(*columns).where(*where, LogRow.id < below)
                                .order_by(LogRow.id.desc()).limit(size)).all()
        if not page:
            return
        yield page
        below = page[-1][0]
        if left is not None:
            left -= len(page)
        if len(page) < size:
            return


RESPONSE_CHAIN_MAX = 1000  # turns `previous_response_id` may reach back; a longer chain is refused as not found


class IdClash(Exception):
    """Two different calls under one id: a bug (ids are unique across instances and restarts), reported, and never
    taken for "already written"."""


def save_stored_response(engine: sa.Engine, row: dict[str, Any]) -> None:
    """Write a stored response. The same answer written again (a replay) is harmless; another call's answer
    under the same id is an IdClash, and the answer stored first stays."""
    table = StoredResponse.__table__
    with engine.begin() as conn:
        found = conn.execute(sa.select(table.c.created_at, table.c.token_id).where(table.c.id == row["id"])).first()
        if found is not None and (found.created_at, found.token_id) != (row["created_at"], row["token_id"]):
            raise IdClash(f"response id {row['id']} is already stored for another call (created at "
                          f"{found.created_at}, this one at {row['created_at']}); the first answer stays")
        upsert(conn, table, [row], ("id",))


def _stored_response(conn: sa.Connection, response_id: str, owner: int | None,
                     pending: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    row = pending.get(response_id)
    if row is None:
        found = conn.execute(sa.select(*StoredResponse.__table__.columns)
                             .where(StoredResponse.id == response_id)).first()
        row = dict(found._mapping) if found is not None else None
    return row if row is not None and (owner is None or row["token_id"] == owner) else None


def load_stored_response(engine: sa.Engine, response_id: str, owner: int | None,
                         pending: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """One stored response; `owner` None (the admin key) may read any key's, `pending` holds those not written
    yet."""
    with engine.connect() as conn:
        return _stored_response(conn, response_id, owner, pending)


def load_response_chain(engine: sa.Engine, response_id: str, owner: int | None,
                        pending: dict[str, dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """The stored responses from `response_id` back along their previous ids, oldest first, and the id of the
    first one missing ("" when the chain is whole)."""
    chain: list[dict[str, Any]] = []
    current = response_id
    with engine.connect() as conn:
        while current and len(chain) < RESPONSE_CHAIN_MAX:
            row = _stored_response(conn, current, owner, pending)
            if row is None:
                return chain[::-1], current
            chain.append(row)
            current = row["previous_response_id"]
    return chain[::-1], current


def delete_stored_response(engine: sa.Engine, response_id: str, owner: int | None) -> bool:
    where = [StoredResponse.id == response_id] + ([StoredResponse.token_id == owner] if owner is not None else [])
    with engine.begin() as conn:
        return bool(conn.execute(sa.delete(StoredResponse).where(*where)).rowcount)


def delete_stored_responses_before(engine: sa.Engine, before_ms: int) -> int:
    deleted = 0
    while True:  # in chunks, as the logs: the log writer never waits long for SQLite's write lock
        with engine.begin() as conn:
            ids = conn.execute(sa.select(StoredResponse.id).where(StoredResponse.created_at < before_ms)
                               .limit(LOG_DELETE_CHUNK)).scalars().all()
            if not ids:
                return deleted
            deleted += conn.execute(sa.delete(StoredResponse).where(StoredResponse.id.in_(ids))).rowcount or 0


# ---- moving to another database ----

COPY_CHUNK_ROWS = 1000  # rows per INSERT while copying a database: memory stays flat for any log table


def copy_database(source_dsn: str, target_dsn: str) -> dict[str, int]:
    """Copy every row of one aiproxy-local database into another, empty one (SQLite to PostgreSQL or MySQL,
    say), ids included; returns the rows copied per table. Run it while no instance writes to the source."""
    source, target = make_engine(source_dsn), make_engine(target_dsn)
    try:
        create_schema(source)  # an older version's tables gain the columns the target has
        create_schema(target)
        tables = [t for t in Base.metadata.sorted_tables if t is not SharedVersion.__table__]
        with source.connect() as src, target.begin() as dst:
            for table in tables:
                if dst.execute(sa.select(sa.func.count()).select_from(table)).scalar_one():
                    raise ValueError(f"the target database is not empty: {table.name} has rows")
            copied = {}
            for table in tables:
                copied[table.name] = 0
                result = src.execution_options(stream_results=True).execute(table.select())
                for part in result.partitions(COPY_CHUNK_ROWS):
                    dst.execute(table.insert(), [dict(r._mapping) for r in part])
                    copied[table.name] += len(part)
                if (dst.dialect.name == "postgresql" and "id" in table.c and isinstance(table.c.id.type, sa.Integer)
                        and table.c.id.autoincrement is not False):  # stored responses' ids are text: no sequence
                    # explicit ids leave the sequence behind: the next channel would reuse id 1
                    dst.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                                        f"COALESCE(MAX(id), 1), MAX(id) IS NOT NULL) FROM {table.name}")
            bump_shared_version(dst)
        return copied
    finally:
        source.dispose()
        target.dispose()


# ---- options: what the admin API may store, within bounds ----

#: What the admin API may change, with bounds (issue 10: `retry_times = 2**64` once stuck and broke GET /api/option/
#: for good, and `log_retention_days = 1e17` silently stopped log retention).
OPTION_BOUNDS: dict[str, tuple[int, int]] = {"retry_times": (0, 10), "log_retention_days": (0, 3650),
                                             "auto_disable_after": (0, 100), "channel_retest_interval": (0, 86400)}


def option_value(key: str, value: Any) -> int:
    """An option's value as its whole number, or ValueError saying why not."""
    if key not in OPTION_BOUNDS:
        raise ValueError(f"unknown option {key[:64]!r}; editable: {', '.join(OPTION_BOUNDS)}")
    low, high = OPTION_BOUNDS[key]
    number = value.strip() if isinstance(value, str) else value
    if isinstance(number, str) and re.fullmatch(r"-?[0-9]{1,19}", number):
        number = int(number)
    if isinstance(number, float) and number.is_integer():
        number = int(number)
    if isinstance(number, bool) or not isinstance(number, int) or not low <= number <= high:
        raise ValueError(f"{key} must be a whole number from {low} to {high}")
    return number


def valid_options(stored: dict[str, Any]) -> dict[str, Any]:
    """The stored options this version can use: a value out of bounds (saved by an older version) is left out, so
    the setting's default applies, and the log says so."""
    out = dict(stored)
    for key in OPTION_BOUNDS.keys() & stored.keys():
        try:
            out[key] = option_value(key, stored[key])
        except ValueError as exc:
            logger.warning("ignoring the stored option %s=%.40r, the default applies: %s", key, stored[key], exc)
            del out[key]
    return out


# ==== 3. Relay contract: the nouns the router, the pipeline and every wire format share =====================
# A provider is a row in assets/providers.json; its "adaptor" names the wire format its upstream speaks. A client's
# path names the format the client speaks: its Dialect. When both are one format the bytes pass through (only the
# model name changes); otherwise the call goes through the pivot, OpenAI chat: client format -> pivot -> upstream
# format, and the answer back the same way. The pipeline never names a format; these are the hooks it calls:
#   find the route         the exact-path table, else Dialect.match (the registry, after the wire formats)
#   parse the call         Dialect.read, then Dialect.prepare (Responses: the turns it continues)
#   plan channels          the router: the model's channels by priority, ChannelHealth.arrange
#   open the upstream      per channel: Adaptor.refusal, convert_request (passthrough_body, or Dialect.to_pivot
#                          then request_from_pivot), build_url, build_headers
#   answer                 a stream: Adaptor.stream (a pass-through filter, or PivotDecoder -> Dialect.stream_encoder)
#                          a whole answer: Adaptor.convert_response (passthrough_response, or response_to_pivot
#                          -> Dialect.response_from_pivot); an error: Adaptor.convert_error -> Dialect.error_body
#   log and charge         log_call -> charge -> LogWriter.submit_call


# ---- the catalog: relay modes, model kinds, providers ----

class Mode(enum.IntEnum):
    """Relay modes in aiproxy's numbering (core/relay/mode/define.go): stored in logs.mode and channel_tests."""

    UNKNOWN = 0
    CHAT_COMPLETIONS = 1
    COMPLETIONS = 2
    EMBEDDINGS = 3
    MODERATIONS = 4
    IMAGES_GENERATIONS = 5
    IMAGES_EDITS = 6
    AUDIO_SPEECH = 7
    AUDIO_TRANSCRIPTION = 8
    AUDIO_TRANSLATION = 9
    RERANK = 10
    ANTHROPIC = 12
    RESPONSES = 16
    RESPONSES_GET = 17
    RESPONSES_DELETE = 18
    GEMINI = 21


@dataclass(frozen=True)
class Kind:
    """A kind of model: the OpenAI path a call of it goes to, its mode (aiproxy's model type number), the smallest
    request that proves a model of it answers (a channel test), and the name fragments that suggest it."""

    name: str
    path: str
    mode: Mode
    test_body: dict[str, Any] | None  # None: a multipart upload, built by model_test_request()
    hints: tuple[str, ...] = ()  # substrings of a lower-cased model name


#: Every kind, in the order guess_model_kind() tries their hints: the first fragment found decides.
KINDS: dict[str, Kind] = {kind.name: kind for kind in (
    Kind("chat", "/v1/chat/completions", Mode.CHAT_COMPLETIONS, {"messages": [{"role": "user", "content": "hi"}]}),
    Kind("rerank", "/v1/rerank", Mode.RERANK, {"query": "hi", "documents": ["hi", "hello"]}, ("rerank",)),
    Kind("embedding", "/v1/embeddings", Mode.EMBEDDINGS, {"input": "hi"}, ("embed", "bge-")),
    Kind("moderation", "/v1/moderations", Mode.MODERATIONS, {"input": "hi"}, ("moderation",)),
    Kind("stt", "/v1/audio/transcriptions", Mode.AUDIO_TRANSCRIPTION, None, ("whisper", "transcribe", "asr")),
    Kind("tts", "/v1/audio/speech", Mode.AUDIO_SPEECH, {"input": "hi", "voice": "alloy"}, ("tts", "speech")),
    Kind("image", "/v1/images/generations", Mode.IMAGES_GENERATIONS,
         {"prompt": "A simple red square icon on a white background.", "n": 1},
         ("dall-e", "image", "flux", "stable-diffusion")),
)}
MODEL_KINDS = tuple(KINDS)


def kind_mode(kind: str) -> int:
    """A kind's model type number in aiproxy's API (0: unknown)."""
    return int(KINDS[kind].mode) if kind in KINDS else 0


def guess_model_kind(model: str) -> str:
    name = model.lower()
    return next((kind.name for kind in KINDS.values() if any(hint in name for hint in kind.hints)), "chat")


@dataclass(frozen=True)
class Provider:
    id: int
    name: str
    adaptor: str
    default_base_url: str
    key_help: str
    readme: str
    models: tuple[tuple[str, str], ...]  # (model, kind): the built-ins, current ones first (assets/models.json)
    key_format: tuple[str, ...] = ()  # the forms a composite key takes ("key|api_version?"); () for a plain key
    display: dict[str, str] = field(default_factory=dict, compare=False)  # the UI's name per language (en, zh)
    help: dict[str, dict[str, str]] = field(default_factory=dict, compare=False)  # per language: key, base_url, models
    kinds: tuple[str, ...] = ()  # the kinds its API serves ("kinds" in providers.json); () for every kind
    unsupported: str = ""  # why the gateway cannot serve this type yet ("" when it can): the picker says so


# ---- built-in model data: kind, limits, prices and retirement per (type, model), from assets/models.json ----
# assets/refresh_models.py writes the snapshot from models.dev plus hand-written rows (assets/models_hand.json);
# the app only reads it, so it never needs the internet to start.

@dataclass(frozen=True)
class ModelInfo:
    """One model as the snapshot knows it; prices in USD per 1K tokens, aiproxy's unit (None: unknown)."""

    model: str
    kind: str
    context: int | None = None
    max_output: int | None = None
    input_price: float | None = None
    output_price: float | None = None
    cached_price: float | None = None  # cache reads
    cache_creation_price: float | None = None  # cache writes
    retired: str = ""  # "YYYY-MM-DD" when the provider shuts it down, "unknown" when retired on an unknown day
    deprecated: bool = False  # the dataset says deprecated (no date)
    hand: bool = False  # a hand-written row, not from the dataset

    def is_retired(self, today: str | None = None) -> bool:
        """Shut down already (a date past or today, or retired on an unknown day)."""
        if not self.retired:
            return False
        return self.retired == "unknown" or self.retired <= (today or time.strftime("%Y-%m-%d", time.gmtime()))

    def status(self, today: str | None = None) -> str:
        """"retired", "retiring" (a shutdown date ahead), "deprecated" or "current"."""
        if self.is_retired(today):
            return "retired"
        return "retiring" if self.retired else "deprecated" if self.deprecated else "current"

    def to_api(self) -> dict[str, Any]:
        return {"model": self.model, "kind": self.kind, "context": self.context, "max_output": self.max_output,
                "price": {"input_price": self.input_price, "output_price": self.output_price,
                          "cached_price": self.cached_price, "cache_creation_price": self.cache_creation_price},
                "retired": self.retired or None, "status": self.status(), "hand_written": self.hand}


@dataclass(frozen=True)
class ModelData:
    """The snapshot: each type's models in order (current first), and every model by name across types."""

    by_type: dict[int, tuple[ModelInfo, ...]] = field(default_factory=dict)
    by_name: dict[str, ModelInfo] = field(default_factory=dict)  # the first type's row wins on a shared name
    source: dict[str, Any] = field(default_factory=dict)
    typed: dict[int, dict[str, ModelInfo]] = field(default_factory=dict)  # by type, then by name

    def __post_init__(self) -> None:
        self.typed.update({t: {row.model: row for row in rows} for t, rows in self.by_type.items()})

    def info(self, model: str, type_id: int | None = None) -> ModelInfo | None:
        """hot path: a model's row on that type, else on any type."""
        typed = self.typed.get(type_id)
        return typed.get(model) or self.by_name.get(model) if typed else self.by_name.get(model)

    @classmethod
    def load(cls, path: Path | None = None) -> ModelData:
        source = path or ASSETS_DIR / "models.json"
        try:
            raw = json.loads(source.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls()
        by_type: dict[int, tuple[ModelInfo, ...]] = {}
        by_name: dict[str, ModelInfo] = {}
        for type_id, rows in raw.get("types", {}).items():
            infos = tuple(ModelInfo(
                model=r["model"], kind=r.get("kind", "chat"), context=r.get("context"), max_output=r.get("max_output"),
                input_price=r.get("input_price"), output_price=r.get("output_price"),
                cached_price=r.get("cached_price"), cache_creation_price=r.get("cache_creation_price"),
                retired="unknown" if r.get("retired") is True else str(r.get("retired") or ""),
                deprecated=bool(r.get("deprecated")), hand=bool(r.get("hand"))) for r in rows)
            by_type[int(type_id)] = infos
            for info in infos:
                by_name.setdefault(info.model, info)
        return cls(by_type, by_name, raw.get("_source", {}))


@functools.cache
def model_data() -> ModelData:
    """The snapshot in assets/models.json, read once."""
    return ModelData.load()


def model_output_limit(model: str, type_id: int | None = None) -> int | None:
    """The most output tokens the model can produce (its provider's documented limit, from the snapshot), or None
    when unknown: a request's max_tokens above it is clamped (ChannelRoute.output_limit, fit_upstream_body)."""
    info = model_data().info(model, type_id)
    return info.max_output if info is not None else None


#: parts of a composite key that say where or which, never who: shown and logged as they are
PUBLIC_KEY_PARTS = frozenset({"api_version", "region", "project_id", "group_id", "user_id", "app_id"})
_REGION = re.compile(r"[a-z]+(-[a-z0-9]+)*")  # us-east-1, us-central1, global; never an access key


def split_key(key: str, key_format: Iterable[str]) -> dict[str, str]:
    """A channel key's named parts by its provider's "keyFormat" (assets/providers.json), the one place a composite
    key is read: by the adaptors, the key scrubbing and the importer alike. Each form names its parts
    ("region|ak|sk|session_token?", `?` marking an optional one); the first form the key fits is used. A `region`
    reads as one (lower case), and only a part named `adc` (a service account's JSON key) is a JSON object and may
    hold a `|`. A key that fits no form is one part, `key`."""
    return _fit_key(key.strip(), key_format) or {"key": key.strip()}


def _fit_key(key: str, key_format: Iterable[str]) -> dict[str, str] | None:
    for form in key_format:
        names = [name.rstrip("?") for name in form.split("|")]
        parts = [part.strip() for part in key.split("|", len(names) - 1)]
        required = sum(not name.endswith("?") for name in form.split("|"))
        named = dict(zip(names, parts))
        if (required <= len(parts) <= len(names) and ("|" not in parts[-1] or names[len(parts) - 1] == "adc")
                and all(value.startswith("{") == (name == "adc") for name, value in named.items())
                and all(_REGION.fullmatch(value) for name, value in named.items() if name == "region")):
            return named
    return None


def missing_key_parts(key: str, key_format: Iterable[str]) -> list[str]:
    """What a key that fits no form of its keyFormat lacks ([] when it fits): the where-and-which parts of the
    shortest form (a key given alone is its secret), else every part that form needs."""
    forms = list(key_format)
    if not forms or _fit_key(key.strip(), forms) is not None:
        return []
    required = [name for name in min((form.split("|") for form in forms), key=len) if not name.endswith("?")]
    return [name for name in required if name in PUBLIC_KEY_PARTS] or required


def catalog_model_kinds(catalog: dict[int, Provider]) -> dict[str, str]:
    kinds: dict[str, str] = {}
    for provider in catalog.values():
        for model, kind in provider.models:
            kinds.setdefault(model, kind)
    return kinds


# ---- a call's values: its error, its usage, its events ----

class RelayError(Exception):
    """A refusal or failure as one value; the client's Dialect renders it in its own error shape."""

    def __init__(self, status: int, message: str, code: str | int | None,
                 type_: str = "invalid_request_error", retry_after: str = "") -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.type = status, message, code, type_
        self.retry_after = retry_after  # a Retry-After header for the client (a 429 of ours)


@dataclass
class Usage:
    input_tokens: int = 0  # every prompt token, cached or not (OpenAI's prompt_tokens)
    output_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0  # of input_tokens, read from the provider's cache
    estimated: bool = False
    cache_write_tokens: int = 0  # of input_tokens, written to the provider's cache (Anthropic's cache creation)


def usage_from(obj: Any) -> Usage | None:
    """OpenAI (prompt/completion) and newer (input/output) usage names both map to one Usage."""
    if not isinstance(obj, dict) or not isinstance(obj.get("usage"), dict):
        return None
    u = obj["usage"]
    inp = int(u.get("prompt_tokens") or u.get("input_tokens") or 0)
    out = int(u.get("completion_tokens") or u.get("output_tokens") or 0)
    details = u.get("prompt_tokens_details") or u.get("input_tokens_details") or {}
    cached = int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
    return Usage(inp, out, int(u.get("total_tokens") or inp + out), cached)


def usage_to_openai(usage: Usage) -> dict[str, Any]:
    return {"prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens,
            "total_tokens": usage.total_tokens, "prompt_tokens_details": {"cached_tokens": usage.cached_tokens}}


def estimate_tokens(text_length: int) -> int:
    """About four characters a token: good enough for a log when the upstream reports no usage."""
    return max(1, text_length // 4) if text_length else 0


def json_object(body: bytes, what: str) -> dict[str, Any]:
    """Parse a body that must be a JSON object; anything else is the upstream's fault (502)."""
    obj = loads_object(body)
    if obj is None:
        raise RelayError(502, f"{what} is not a JSON object: {body[:200].decode('utf-8', 'replace')}",
                         "bad_upstream_answer", "upstream_error")
    return obj


def sse_events(batch: bytes) -> list[bytes]:
    """The whole events of a batch (each ends with a blank line, "\\n\\n" or "\\r\\n\\r\\n")."""
    return [e for e in batch.replace(b"\r\n", b"\n").split(b"\n\n") if e.strip()]


def sse(obj: Any, event: str = "") -> bytes:
    return (f"event: {event}\n".encode() if event else b"") + b"data: " + orjson.dumps(obj) + b"\n\n"


def sse_fields(event: bytes) -> tuple[str, bytes]:
    """(event name, data) of one event; several data lines join with newlines, as the SSE spec says."""
    name, data = "", []
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            data.append(line[6:] if line[5:6] == b" " else line[5:])
        elif line.startswith(b"event:"):
            name = line[6:].strip().decode("latin-1")
    return name, b"\n".join(data)


def _text_of(content: Any) -> str:
    """The text of an OpenAI content (a string or a list of parts) or of Anthropic blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _reasoning_of(message: dict[str, Any]) -> str:
    """The reasoning text of a pivot message or delta: `reasoning_content` (DeepSeek's) or `reasoning` (as some
    upstreams name it); "" when there is none."""
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    return reasoning if isinstance(reasoning, str) else ""


def _arguments(raw: Any) -> dict[str, Any]:
    """A tool call's JSON-string arguments as the object Anthropic's `input` must be."""
    if isinstance(raw, dict):
        return raw
    return (loads_object(raw) if isinstance(raw, str) and raw.strip() else None) or {}


# ---- a client's body: how deep it nests, and the types of the fields a dialect reads (issue 18) ----
# Each dialect states the shape of what it reads (Dialect.shape) in its own section, with the few words below;
# check_shape() walks a body against it before anything converts the body, so a field of the wrong type is a 400
# that names it, in the client's own error shape, instead of a crash inside a converter. A shape is
#   a type or a tuple of types   the value is one of them (int covers bool, as isinstance does)
#   {field: shape, ...}          an object; each field present and not null has its shape; others are not read
#   [shape]                      an array whose every item has the shape (null items included)
#   Either(shape, shape, ...)    any one of them
# A body nests at most JSON_DEPTH_MAX levels: deeper ones are refused before any upstream call, since orjson
# writes no more than 254 levels and a converted or stored answer would fail after the upstream was paid.

JSON_DEPTH_MAX = 64
NUMBER = (int, float)
_JSON_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "a boolean", dict: "an object",
                    list: "an array", type(None): "null"}


@dataclass(frozen=True)
class Either:
    shapes: tuple[Any, ...]

    def __init__(self, *shapes: Any) -> None:
        object.__setattr__(self, "shapes", shapes)


def _shape_name(shape: Any) -> str:
    if isinstance(shape, dict):
        return "an object"
    if isinstance(shape, list):
        return "an array"
    if isinstance(shape, Either):
        return " or ".join(_shape_name(s) for s in shape.shapes)
    if isinstance(shape, tuple):
        return "a number" if shape == NUMBER else " or ".join(_JSON_TYPE_NAMES.get(t, t.__name__) for t in shape)
    return _JSON_TYPE_NAMES.get(shape, getattr(shape, "__name__", str(shape)))


def _shape_error(value: Any, shape: Any, where: str) -> str | None:
    """Why `value` does not have `shape` ("" path: the body itself), or None when it has."""
    if isinstance(shape, Either):
        errors = [_shape_error(value, s, where) for s in shape.shapes]
        if None in errors:
            return None
        # the alternative of the value's own kind says more ("messages[0].content[1].text: ..."), else all of them
        kind = dict if isinstance(value, dict) else list if isinstance(value, list) else None
        for s, error in zip(shape.shapes, errors):
            if kind is not None and isinstance(s, (dict if kind is dict else list)):
                return error
        return f"'{where}' must be {_shape_name(shape)}, not {_JSON_TYPE_NAMES.get(type(value), 'that')}"
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return f"'{where}' must be an object, not {_JSON_TYPE_NAMES.get(type(value), 'that')}"
        for name, inner in shape.items():
            item = value.get(name)
            if item is not None:
                error = _shape_error(item, inner, f"{where}.{name}" if where else name)
                if error:
                    return error
        return None
    if isinstance(shape, list):
        if not isinstance(value, list):
            return f"'{where}' must be an array, not {_JSON_TYPE_NAMES.get(type(value), 'that')}"
        for index, item in enumerate(value):
            error = _shape_error(item, shape[0], f"{where}[{index}]")
            if error:
                return error
        return None
    if not isinstance(value, shape):
        return f"'{where}' must be {_shape_name(shape)}, not {_JSON_TYPE_NAMES.get(type(value), 'that')}"
    return None


def check_shape(value: Any, shape: Any) -> None:
    """Refuse a body one of whose fields has the wrong type (400, naming the field)."""
    error = _shape_error(value, shape, "")
    if error:
        raise RelayError(400, f"Invalid request: {error}.", "invalid_type")


def _orjson_depth_limit() -> int:
    """The deepest nesting orjson writes (254 in orjson 3.x), found once."""
    value: Any = 0
    for depth in range(1, 2000):
        value = [value]
        try:
            orjson.dumps(value)
        except orjson.JSONEncodeError:
            return depth - 1
    return 2000


class _DepthProbe:
    """orjson refuses to write a value nested deeper than its limit, in C, far faster than a walk in Python: a
    body wrapped in (limit - JSON_DEPTH_MAX) lists is refused exactly when the body nests deeper than
    JSON_DEPTH_MAX. The wrapping lists are made once; the body goes in the innermost for one dumps()."""

    def __init__(self) -> None:
        self.inner: list[Any] = []
        self.outer: Any = self.inner
        for _ in range(max(0, _orjson_depth_limit() - JSON_DEPTH_MAX - 1)):
            self.outer = [self.outer]

    def too_deep(self, obj: Any) -> bool:
        self.inner.append(obj)
        try:
            orjson.dumps(self.outer)
            return False
        except orjson.JSONEncodeError as exc:
            return "ecursion" in str(exc)  # "Recursion limit reached"; nothing else can fail on a parsed body
        finally:
            self.inner.clear()


_DEPTH_PROBE = _DepthProbe()


def check_depth(body: bytes, obj: Any) -> None:
    """hot path: refuse a body nested deeper than JSON_DEPTH_MAX. A body with fewer brackets than that cannot
    nest deeper, which two byte counts show without looking further (most calls); others take one orjson write
    (_DepthProbe)."""
    if body.count(b"{") + body.count(b"[") > JSON_DEPTH_MAX and _DEPTH_PROBE.too_deep(obj):
        raise RelayError(400, f"The request body nests deeper than {JSON_DEPTH_MAX} levels.", "too_deep")


# ---- a call on its way: who asks, by which route, to which channel, and how each try went ----

@dataclass(frozen=True)
class Caller:
    token_id: int
    token_name: str
    models: frozenset[str]
    is_admin: bool


ADMIN_CALLER = Caller(0, "admin", frozenset(), True)
TEST_CALLER = Caller(0, "channel-test", frozenset(), True)


@dataclass(frozen=True)
class ChannelRoute:
    """The routing view of one channel, rebuilt whenever channels change."""

    id: int
    name: str
    type: int
    key: str
    base_url: str  # resolved: the channel's own, else the provider default
    models: frozenset[str]
    mapping: dict[str, str]
    priority: int
    weight: int
    enabled: bool
    adaptor: Adaptor
    proxy: str | None = None  # its own proxy_url, else HTTP(S)_PROXY/NO_PROXY's, resolved once here
    skip_tls_verify: bool = False
    status: int = STATUS_ENABLED
    status_reason: str = ""
    test_model: str = ""  # what a retest asks for: the channel's first model, as one-api picks it
    secrets: tuple[tuple[bytes, bytes], ...] = ()  # (each part of the key, its mask), see scrub()
    key_parts: dict[str, str] = field(default_factory=dict)  # a composite key's named parts (split_key)
    scrubber: KeyScrubber | None = None  # every other form of the secrets, see scrub_all()
    config: dict[str, Any] = field(default_factory=dict)  # the channel's own settings (aiproxy's `config`)
    #: the mapping's wildcard rows (`claude-*` → deepseek-chat), longest pattern first; `mapping` keeps the exact
    patterns: tuple[tuple[str, str], ...] = ()
    max_output_tokens: dict[str, int] = field(default_factory=dict)  # the channel's own limits: model (or "*") → n
    param_override: dict[str, Any] = field(default_factory=dict)  # merged into every upstream body, null deletes

    def serves(self, model: str) -> bool:
        return model in self.models or model in self.mapping or self.pattern_target(model) is not None

    def pattern_target(self, model: str) -> str | None:
        """What the longest wildcard row matching `model` maps it to; None when none matches."""
        return next((target for pattern, target in self.patterns if wildcard_match(pattern, model)), None)

    def scrub(self, data: bytes) -> bytes:
        """hot path: `data` with every part of this channel's key masked as it is: upstreams quote keys back in
        their errors (`Incorrect API key provided: sk-…`), and nothing an upstream says may carry one further
        (issue 10). Enough for the bytes of an answer that pass through; scrub_all() for those the gateway
        reads, keeps or answers with itself."""
        for secret, mask in self.secrets:
            if secret in data:
                data = data.replace(secret, mask)
        return data

    def scrub_all(self, data: bytes) -> bytes:
        """`data` with the key masked in every form an upstream may quote it in: as it is, URL-encoded, base64,
        JSON-escaped, in any case, or any run of KEY_RUN_MIN characters of it (issue 18)."""
        data = self.scrub(data)
        return self.scrubber.scrub(data) if self.scrubber is not None else data

    def scrub_text(self, text: str) -> str:
        return self.scrub_all(text.encode("utf-8", "replace")).decode("utf-8", "replace") if self.secrets else text

    def upstream_model(self, model: str) -> str:
        """An exact mapping row beats a wildcard row, and the longest wildcard row beats a shorter one."""
        return self.mapping.get(model) or (None if model in self.models else self.pattern_target(model)) or model

    def output_limit(self, model: str) -> int | None:
        """The most output tokens the upstream `model` takes: the channel's own setting, else the model
        snapshot's limit for it on this channel's type (model_output_limit); None when nothing is known."""
        own = self.max_output_tokens
        return own.get(model) or own.get("*") or model_output_limit(model, self.type)

    @property
    def offered(self) -> list[str]:
        """Every exact name a client may ask this channel for: its models and its mapping's exact keys (a
        wildcard row serves names it cannot list)."""
        return sorted(self.models | self.mapping.keys())


def is_wildcard(name: str) -> bool:
    return "*" in name


@functools.lru_cache(maxsize=4096)
def _wildcard_regex(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(map(re.escape, pattern.split("*"))) + r"\Z")


def wildcard_match(pattern: str, model: str) -> bool:
    """`*` stands for any run of characters (none too); nothing else is special."""
    return _wildcard_regex(pattern).match(model) is not None


@dataclass(frozen=True)
class RelayRoute:
    """One client path: the dialect that reads it, how it is logged, and what the upstream must do."""

    dialect: Dialect
    mode: Mode  # what the log row says (aiproxy's numbering)
    op: Mode | None  # the operation in pivot (OpenAI) terms; None: no pivot form, only a native channel serves it
    upstream_path: str  # the path below a same-format upstream's base URL
    native_only: bool = False  # with no channel speaking the dialect's format, the dialect answers by itself
    model: str = ""  # a model named in the path (Gemini's /models/{model}:...)
    #: which handler of the pipeline answers: "call" (an upstream call), "models" (the format's model list) or
    #: "stored" (a stored response, never upstream)
    serve: Literal["call", "models", "stored"] = "call"


def new_request_id() -> str:
    """Start time in µs (as aiproxy's 16 digits, so ids sort by time) and 64 random bits: unique across the
    instances on one database and across restarts, where a sequence number was not (issue 18)."""
    return f"{time.time_ns() // 1000}{_ID_BITS(64):016x}"


# Seeded from os.urandom, and again in a forked child: every process draws its own bits, without a getrandom()
# system call per request (bench/ S3: each call into the kernel costs µs under load).
_ID_RANDOM = random.Random()
_ID_BITS = _ID_RANDOM.getrandbits
os.register_at_fork(after_in_child=_ID_RANDOM.seed)


@dataclass(slots=True)
class Incoming:
    """A request at the relay's door, read once from the ASGI scope: what routing, the key check and the log
    need of it."""

    path: str  # without a trailing slash
    method: str = "POST"
    headers: dict[bytes, bytes] = field(default_factory=dict)
    query: bytes = b""
    ip: str = ""
    request_id: str = ""
    started: float = 0.0  # time.time() when the request arrived

    @classmethod
    def of(cls, scope: Scope) -> Incoming:
        started = time.time()
        client = scope.get("client")
        return cls(scope["path"].rstrip("/"), scope["method"], dict(scope["headers"]), scope.get("query_string", b""),
                   client[0] if client else "", new_request_id(), started)

    @property
    def content_type(self) -> str:
        return self.headers.get(b"content-type", b"application/json").decode("latin-1")


@dataclass
class RelayCall:
    """One client request on its way through the pipeline."""

    request_id: str
    started: float  # time.time() when the request arrived
    endpoint: str  # the client's path, e.g. /v1/chat/completions
    route: RelayRoute
    model: str
    body: bytes
    obj: dict[str, Any] | None  # parsed JSON body; None for multipart
    content_type: str
    caller: Caller
    headers: dict[bytes, bytes] = field(default_factory=dict)  # the client's, for adaptors that forward some
    query: str = ""
    ip: str = ""
    stream: bool = False
    client_wants_usage: bool = False
    dialect_state: Any = None  # what a dialect carries from the request to its answer (Responses: the turn)
    waited: float = 0.0  # seconds spent waiting on upstreams (every attempt): the rest is the gateway's overhead
    pinned: int | None = None
    max_retries: int = 0
    attempts: list[dict[str, Any]] = field(default_factory=list)  # the routing trail, in order, for the log row
    final: dict[str, Any] | None = None  # the trail entry of the channel tried last
    trying: Attempt | None = None  # the try under way, or the one answering
    progress: StreamFilter | None = None  # the answer's stream so far, for the tokens of a call cut short
    checked: bool = False  # its body has the shape its dialect reads (RelayCall.check)
    logged: bool = False  # its log row is queued (log_call)
    _pivot: dict[str, Any] | None = None

    @property
    def dialect(self) -> Dialect:
        return self.route.dialect

    @property
    def mode(self) -> Mode:
        return self.route.mode

    @property
    def op(self) -> Mode | None:
        return self.route.op

    @property
    def upstream_path(self) -> str:
        return self.route.upstream_path

    def check(self) -> None:
        """Refuse a body with a field of the wrong type (400) before anything converts it; once per call."""
        if not self.checked:
            self.checked = True
            if self.obj is not None:
                shape = self.dialect.shape(self)
                if shape is not None:
                    check_shape(self.obj, shape)

    def pivot(self) -> dict[str, Any]:
        """The request in pivot form, converted once however many channels it fails over to."""
        if self._pivot is None:
            self.check()
            self._pivot = self.dialect.to_pivot(self)
        return self._pivot


@dataclass
class Attempt:
    """One channel's try; in the end, the try that answers the call for good."""

    channel: ChannelRoute | None
    response: aiohttp.ClientResponse | None  # an open stream, to be piped to the client
    status: int
    error: RelayError | None = None  # ours: the channel refused the call, was unreachable, or broke its promise
    body: bytes = b""  # the upstream's own error answer, keys scrubbed
    retries: int = 0
    ttfb_ms: int = 0
    answer: bytes | None = None  # a whole 2xx answer, made the client's
    content_type: str = "application/json"
    usage: Usage | None = None
    first: bytes = b""  # a stream's first bytes, read before the client's answer starts: a dead stream fails over
    retry_after: str = ""  # the upstream's Retry-After, passed on to a client that gets its 429
    started: float = 0.0  # time.time() when this try began


class LocalResponse:
    """An answer made in the gateway (Adaptor.local_answer), read by the pipeline as it reads an upstream's:
    status, headers, read() or content.readany(), release()."""

    def __init__(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.status, self.headers, self._body = status, {"Content-Type": content_type}, body
        self.content = self

    async def readany(self) -> bytes:
        body, self._body = self._body, b""
        return body

    async def read(self) -> bytes:
        return await self.readany()

    def release(self) -> None:
        self._body = b""


@dataclass
class Outcome:
    """What the client got, for the log."""

    code: int
    usage: Usage | None = None
    error: bytes = b""
    response_body: bytes = b""
    ttfb_ms: int = 0
    used_amount: float | None = 0.0  # set by charge(); None: a price it needs is unknown
    failure: RelayError | None = None  # how an answer that had started ended badly, for the trail


# ---- streams: a filter between upstream and client, and the pivot's decoder and encoder ----

class StreamFilter:
    """Between an upstream's stream and the client: fed whole SSE events, it returns the bytes the client gets."""

    usage: Usage | None = None  # the upstream's own count, when it sent one
    error: RelayError | None = None  # an error the upstream sent inside the stream
    events = 0  # data events seen, for an estimate when no usage came
    raw = False  # fed bytes as they arrive (a binary framing it splits itself), not whole SSE events

    def feed(self, events: bytes) -> bytes:
        raise NotImplementedError

    def close(self) -> bytes:
        """What the client still needs once the upstream has ended: the client format's closing event."""
        return b""


class PivotDecoder:
    """Reads one upstream format's stream into pivot chunks (OpenAI `chat.completion.chunk` objects)."""

    usage: Usage | None = None
    error: RelayError | None = None
    done = False  # the upstream said its stream is complete

    def decode(self, name: str, data: bytes) -> list[dict[str, Any]]:
        raise NotImplementedError


class PivotEncoder:
    """Writes pivot chunks as one client format's events."""

    def encode(self, chunk: dict[str, Any]) -> bytes:
        raise NotImplementedError

    def close(self, usage: Usage | None) -> bytes:
        raise NotImplementedError


class ConvertedStream(StreamFilter):
    """An upstream stream in one format for a client in another, event by event: what one upstream event becomes
    leaves in the same write as that event, so nothing is held back or merged."""

    def __init__(self, call: RelayCall, decoder: PivotDecoder, encoder: PivotEncoder) -> None:
        self.call, self.dialect, self.decoder, self.encoder = call, call.dialect, decoder, encoder
        self.closed = False

    @property
    def usage(self) -> Usage | None:
        return self.decoder.usage

    @property
    def error(self) -> RelayError | None:
        return self.decoder.error

    def feed(self, events: bytes) -> bytes:
        out: list[bytes] = []
        for event in sse_events(events):
            self.take(*sse_fields(event), out)
        return b"".join(out)

    def take(self, name: str, data: bytes, out: list[bytes]) -> None:
        """One upstream event, named or not, through the decoder and the encoder."""
        if not data or self.closed:
            return
        self.events += 1
        out.extend(self.encoder.encode(chunk) for chunk in self.decoder.decode(name, data))
        if self.decoder.error is not None:
            out.append(self.dialect.stream_error(self.decoder.error, self.call))
            self.closed = True
        elif self.decoder.done:
            out.append(self.encoder.close(self.decoder.usage))
            self.closed = True

    def close(self) -> bytes:
        if self.closed:
            return b""
        self.closed = True
        return self.encoder.close(self.decoder.usage)


class DecodedPassthrough(StreamFilter):
    """A stream in the client's own format: bytes pass, and the events that carry usage or an error also go
    through the format's decoder, for the log."""

    def __init__(self, decoder: PivotDecoder, rename: tuple[bytes, bytes] | None) -> None:
        self.decoder, self.rename = decoder, rename  # rename: (upstream's model, client's model) when mapped

    @property
    def usage(self) -> Usage | None:
        return self.decoder.usage

    @property
    def error(self) -> RelayError | None:
        return self.decoder.error


# ---- the pivot, OpenAI chat: its operations and paths, its errors, its stream ----

#: pivot operation → its path below an OpenAI-style base URL
OPENAI_PATHS: dict[Mode, str] = {
    Mode.CHAT_COMPLETIONS: "/chat/completions", Mode.COMPLETIONS: "/completions", Mode.EMBEDDINGS: "/embeddings",
    Mode.MODERATIONS: "/moderations", Mode.IMAGES_GENERATIONS: "/images/generations",
    Mode.AUDIO_SPEECH: "/audio/speech", Mode.AUDIO_TRANSCRIPTION: "/audio/transcriptions",
    Mode.AUDIO_TRANSLATION: "/audio/translations", Mode.RERANK: "/rerank",
}

#: client path → mode; the mode is also the pivot operation
OPENAI_ROUTES: dict[str, Mode] = {
    "/v1/chat/completions": Mode.CHAT_COMPLETIONS, "/v1/completions": Mode.COMPLETIONS,
    "/v1/embeddings": Mode.EMBEDDINGS, "/v1/moderations": Mode.MODERATIONS,
    "/v1/images/generations": Mode.IMAGES_GENERATIONS, "/v1/audio/speech": Mode.AUDIO_SPEECH,
    "/v1/audio/transcriptions": Mode.AUDIO_TRANSCRIPTION, "/v1/audio/translations": Mode.AUDIO_TRANSLATION,
    "/v1/rerank": Mode.RERANK,
}
_STREAMED_MODES = frozenset({Mode.CHAT_COMPLETIONS, Mode.COMPLETIONS})

_MULTIPART_MODEL = re.compile(rb'(name="model"\r\n\r\n)([^\r\n]*)(\r\n)')


def openai_error(status: int, message: str, code: str | int | None, type_: str) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type_, "code": code, "param": None}})


def read_openai_error(status: int, body: bytes) -> RelayError:
    """An OpenAI-style error answer (or any other text) as one error value."""
    obj = loads_object(body)
    error = obj.get("error") if obj else None
    if isinstance(error, dict) and error.get("message"):
        return RelayError(status, str(error["message"]), error.get("code") or "upstream_error",
                          str(error.get("type") or "upstream_error"))
    text = body[:300].decode("utf-8", "replace").strip()
    return RelayError(status, f"The upstream answered HTTP {status}{': ' + text if text else ''}",
                      "upstream_error", "upstream_error")


class OpenAIDecoder(PivotDecoder):
    """An OpenAI-style upstream stream is already pivot chunks: parse them, keep the usage, stop at [DONE]."""

    def decode(self, name: str, data: bytes) -> list[dict[str, Any]]:
        if data.strip() == b"[DONE]":
            self.done = True
            return []
        chunk = loads_object(data)
        if chunk is None:
            return []
        if isinstance(chunk.get("error"), dict):
            self.error = read_openai_error(502, data)
            return []
        self.usage = usage_from(chunk) or self.usage
        return [chunk] if chunk.get("choices") else []


class OpenAIEncoder(PivotEncoder):
    """Pivot chunks for an OpenAI client, with the usage chunk when it asked for one, then [DONE]."""

    def __init__(self, call: RelayCall) -> None:
        self.model, self.wants_usage = call.model, call.client_wants_usage
        self.head: dict[str, Any] = {"id": f"chatcmpl-{call.request_id}", "created": int(call.started)}

    def encode(self, chunk: dict[str, Any]) -> bytes:
        self.head = {"id": chunk.get("id", self.head["id"]), "created": chunk.get("created", self.head["created"])}
        return b"data: " + orjson.dumps({**chunk, "object": "chat.completion.chunk", "model": self.model}) + b"\n\n"

    def close(self, usage: Usage | None) -> bytes:
        tail = b""
        if self.wants_usage and usage is not None:
            tail = self.encode({**self.head, "choices": [], "usage": usage_to_openai(usage)})
        return tail + b"data: [DONE]\n\n"


# ---- the two interfaces: Adaptor (a channel's upstream) and Dialect (a client); their defaults are OpenAI's ----
# A new format subclasses one or both (its own section), and is one row of FORMATS (the registry): the Adaptor builds
# the upstream's URL and headers, turns the pivot into its requests and its answers, streams and errors into the
# pivot; the Dialect owns client paths (`routes` for exact POST paths, `match` for patterns), reads their requests,
# turns them into the pivot and the pivot's answers, streams and errors back into its own shape. `format` names the
# wire format on both sides; an Adaptor whose `formats` holds the Dialect's passes bytes through.

class Adaptor:
    """A channel's upstream wire format. This base speaks OpenAI's, which every OpenAI-style provider shares (each
    is only a row in assets/providers.json); a native format subclasses it and overrides what differs."""

    title = "OpenAI-compatible"
    formats = frozenset({"openai"})  # client formats whose requests pass through unconverted
    modes = frozenset(OPENAI_PATHS)  # the pivot operations it serves
    stream_type = "text/event-stream"  # the content type of its streamed answers
    openai_models = False  # OpenAI's own models behind it: their reasoning parameters are fitted (section 7)

    def speaks(self, call: RelayCall) -> bool:
        return call.dialect.format in self.formats

    def refusal(self, call: RelayCall) -> RelayError | None:
        """Why this channel cannot serve the call at all; the relay then tries the next channel."""
        if call.op is None or call.op in self.modes:
            return None
        return RelayError(501, f"{self.title} channels cannot serve {call.endpoint}.", "unsupported_endpoint",
                          "aiproxy_error")

    def build_url(self, channel: ChannelRoute, call: RelayCall) -> str:
        return channel.base_url.rstrip("/") + (call.upstream_path if self.speaks(call) else OPENAI_PATHS[call.op])

    def build_headers(self, channel: ChannelRoute, call: RelayCall | None = None) -> dict[str, str]:
        """`call` shows the client's headers (call.headers), e.g. to forward a beta flag; None for a model list."""
        return {"Authorization": f"Bearer {channel.key}"}

    async def authorize(self, state: AppState, channel: ChannelRoute) -> None:
        """What must be in hand before build_headers (a token the key is exchanged for, fetched once and cached);
        a RelayError is the channel's failure."""

    async def sign(self, state: AppState, channel: ChannelRoute, method: str, url: str, headers: dict[str, str],
                   body: bytes) -> str | yarl.URL:
        """The last step before a request leaves (a call, a test, a model list), after build_headers: add to
        `headers` what needs the whole request (a signature, or an access token); returns the URL to send,
        exactly as signed. A key that cannot be used raises RelayError (e.g. which extra to install)."""
        return url

    def local_answer(self, call: RelayCall, channel: ChannelRoute) -> LocalResponse | None:
        """An answer the gateway makes itself, in the upstream's wire format, without calling out (the fake
        types); None: call the upstream."""
        return None

    def models_request(self, channel: ChannelRoute) -> tuple[str, dict[str, str]]:
        """(URL, headers) of a GET that lists the upstream's models (read by `models_from`); RelayError when the
        provider has no such list."""
        return channel.base_url.rstrip("/") + "/models", self.build_headers(channel)

    def models_from(self, answer: Any) -> list[str]:
        """The model ids in the upstream's model list: `{"data": [{"id": ...}]}` (OpenAI's, Anthropic's)."""
        return [str(m["id"]) for m in answer["data"]]

    def convert_request(self, call: RelayCall, channel: ChannelRoute) -> bytes:
        if self.speaks(call):
            return self.passthrough_body(call, channel)
        return self.request_from_pivot(call.pivot(), call, channel)

    def passthrough_body(self, call: RelayCall, channel: ChannelRoute) -> bytes:
        """hot path: re-encode only when something must change (mapped model, forced usage chunk)."""
        target = channel.upstream_model(call.model)
        if call.obj is None:  # multipart: swap the model field in place
            if target == call.model:
                return call.body
            return _MULTIPART_MODEL.sub(lambda m: m.group(1) + target.encode() + m.group(3), call.body, count=1)
        needs_usage = call.stream and not call.client_wants_usage
        if target == call.model and not needs_usage:
            return call.body
        obj = dict(call.obj, model=target)
        if needs_usage:  # ask for usage so that the log has real token counts
            obj["stream_options"] = dict(obj.get("stream_options") or {}, include_usage=True)
        return orjson.dumps(obj)

    def request_from_pivot(self, pivot: dict[str, Any], call: RelayCall, channel: ChannelRoute) -> bytes:
        body = dict(pivot, model=channel.upstream_model(call.model))
        roles = [m.get("role") for m in body.get("messages") or () if isinstance(m, dict)]
        if "developer" in roles or "system" in roles[1:]:
            body["messages"] = leading_system_message(body["messages"])
        if call.stream:
            body.update(stream=True, stream_options={"include_usage": True})
        return orjson.dumps(body)

    def convert_response(self, call: RelayCall, body: bytes) -> tuple[bytes, Usage | None]:
        """A whole 200 JSON answer, made ready for the client, and the usage it reports."""
        if self.speaks(call):
            return self.passthrough_response(call, body)
        pivot, usage = self.response_to_pivot(call, body)
        return call.dialect.response_from_pivot(call, pivot), usage

    def passthrough_response(self, call: RelayCall, body: bytes) -> tuple[bytes, Usage | None]:
        obj = loads_object(body)
        if obj is None:
            return body, None
        usage = self.usage_of(obj)
        if obj.get("model") not in (None, call.model):
            obj["model"] = call.model
            body = orjson.dumps(obj)
        return body, usage

    def usage_of(self, answer: Any) -> Usage | None:
        return usage_from(answer)

    def response_to_pivot(self, call: RelayCall, body: bytes) -> tuple[dict[str, Any], Usage | None]:
        answer = json_object(body, "The upstream's answer")
        return answer, usage_from(answer)

    def stream(self, call: RelayCall, channel: ChannelRoute) -> StreamFilter:
        if self.speaks(call):
            return self.passthrough_stream(call, channel)
        return ConvertedStream(call, self.pivot_decoder(call), call.dialect.stream_encoder(call))

    def passthrough_stream(self, call: RelayCall, channel: ChannelRoute) -> StreamFilter:
        return OpenAIPassthrough(call, channel)

    def pivot_decoder(self, call: RelayCall) -> PivotDecoder:
        return OpenAIDecoder()

    def convert_error(self, status: int, body: bytes) -> RelayError:
        """An upstream's error answer as one error value, which the client's dialect renders in its own shape."""
        return read_openai_error(status, body)


def leading_system_message(messages: list[Any]) -> list[Any]:
    """Every system and developer message of a converted request joined into one system message, first: the
    chat templates of many OpenAI-compatible servers (vLLM, Ollama with Qwen- or Mistral-style templates) refuse a
    system message after a turn, and not all know the developer role."""
    system = [m for m in messages if isinstance(m, dict) and m.get("role") in ("system", "developer")]
    text = "\n\n".join(t for t in (_text_of(m.get("content")) for m in system) if t)
    rest = [m for m in messages if not (isinstance(m, dict) and m.get("role") in ("system", "developer"))]
    return ([{"role": "system", "content": text}] if text else []) + rest


def is_models_path(path: str, root: str) -> bool:
    """`{root}/models` or `{root}/models/{model}`."""
    return path == root + "/models" or path.startswith(root + "/models/")


class Dialect:
    """A client's wire format. This base is OpenAI's /v1 (chat, completions, embeddings, audio, images, ...), whose
    chat is also the pivot; another format subclasses it and overrides what differs."""

    format = "openai"
    prefixes: tuple[str, ...] = ("/v1",)  # unknown paths under these get this dialect's error shape

    def routes(self) -> Iterable[tuple[str, RelayRoute]]:
        """The exact POST paths this dialect serves."""
        for path, mode in OPENAI_ROUTES.items():
            yield path, RelayRoute(self, mode, mode, OPENAI_PATHS[mode])

    def match(self, incoming: Incoming) -> RelayRoute | None:
        """A route for a request `routes` cannot list: a model inside the path, a GET or a DELETE, the model list."""
        if incoming.method == "GET" and self.lists_models(incoming):
            return RelayRoute(self, Mode.UNKNOWN, None, "", serve="models")
        return None

    def owns(self, path: str, method: str) -> bool:
        """Whether a request no route serves is this dialect's all the same (its error shape answers it), beyond
        the paths under its prefixes."""
        return False

    def lists_models(self, incoming: Incoming) -> bool:
        """Whether a GET is this format's model list (`GET /v1/models[/{model}]` for OpenAI's)."""
        return is_models_path(incoming.path, "/v1")

    def api_key(self, incoming: Incoming) -> str:
        headers = incoming.headers
        return (strip_bearer(headers.get(b"authorization", b"").decode("latin-1"))
                or headers.get(b"x-api-key", b"").decode("latin-1").strip())

    def read(self, call: RelayCall) -> None:
        """Set what the relay routes on from the parsed body: whether to stream, whether usage was asked for."""
        obj = call.obj
        call.stream = bool(obj and obj.get("stream")) and call.op in _STREAMED_MODES
        options = obj.get("stream_options") if obj else None
        if options is not None and not isinstance(options, dict):  # a pass-through stream adds include_usage
            raise RelayError(400, "Invalid request: 'stream_options' must be an object.", "invalid_type")
        call.client_wants_usage = bool(options and options.get("include_usage"))

    def shape(self, call: RelayCall) -> Any:
        """The shape (check_shape) of the fields this dialect's converters read in a body of `call`'s route;
        None: nothing to check. Checked before any conversion, never on a call that passes through."""
        return OPENAI_SHAPES.get(call.op)

    async def prepare(self, state: AppState, call: RelayCall) -> None:
        """What the dialect must look up before the call goes out (Responses: the turns it continues)."""

    def to_pivot(self, call: RelayCall) -> dict[str, Any]:
        if call.obj is None:
            raise RelayError(400, f"A multipart request to {call.endpoint} cannot be converted for this channel.",
                             "unsupported_endpoint")
        return call.obj

    def response_from_pivot(self, call: RelayCall, pivot: dict[str, Any]) -> bytes:
        return orjson.dumps({**pivot, "model": call.model})

    def stream_encoder(self, call: RelayCall) -> PivotEncoder:
        return OpenAIEncoder(call)

    def error_body(self, error: RelayError) -> bytes:
        return openai_error(error.status, error.message, error.code, error.type)

    def stream_error(self, error: RelayError, call: RelayCall | None = None) -> bytes:
        """An error inside a stream that has started (its HTTP status is already 200); `call` shows the state of
        a stream whose events are numbered (Responses)."""
        return b"data: " + self.error_body(error) + b"\n\n"

    def answer_locally(self, call: RelayCall) -> bytes:
        """The answer of a `native_only` route when no channel speaks this format (e.g. a token count estimate)."""
        raise NotImplementedError

    def model_entry(self, model: str, owner: str, kind: str) -> dict[str, Any]:
        """One model as this format's `GET .../models` lists it; `owner` is its first channel's provider."""
        return {"id": model, "object": "model", "created": 0, "owned_by": owner, "root": model, "parent": None,
                "permission": []}

    def model_list(self, entries: list[dict[str, Any]]) -> dict[str, Any]:
        return {"object": "list", "data": entries}


# ==== 4. Router: choose channels, decide retries ============================================================


@dataclass
class TokenInfo:
    id: int
    name: str
    status: int
    models: frozenset[str]
    quota: float
    used_amount: float  # updated in memory on every call, so a quota holds before the log writer flushes
    expired_at: int


WILDCARD_CACHE_MAX = 10_000  # model names a routing table remembers the wildcard channels of


@dataclass
class RoutingTable:
    channels: dict[int, ChannelRoute]
    by_model: dict[str, list[ChannelRoute]]  # enabled channels only
    known_models: set[str]  # on any channel, enabled or not
    tokens: dict[str, TokenInfo]  # by key without "sk-"
    model_configs: dict[str, dict[str, Any]]
    kinds: dict[str, str]
    token_ids: dict[int, TokenInfo] = field(default_factory=dict)
    auto_disabled: dict[str, list[ChannelRoute]] = field(default_factory=dict)  # status 3, for the routing trail
    wildcard: list[ChannelRoute] = field(default_factory=list)  # channels with wildcard mapping rows, any status
    #: model → (enabled, auto-disabled, any) channels whose wildcard rows serve it, for names no channel lists
    _matched: dict[str, tuple[list[ChannelRoute], list[ChannelRoute], bool]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.token_ids = {t.id: t for t in self.tokens.values()}

    def matched(self, model: str) -> tuple[list[ChannelRoute], list[ChannelRoute], bool]:
        """The channels a wildcard row sends `model` to: (enabled, auto-disabled, whether any channel at all).
        Only asked for names no channel lists exactly: an exact name beats a pattern across channels too."""
        found = self._matched.get(model)
        if found is None:
            hits = [r for r in self.wildcard if r.pattern_target(model) is not None]
            found = ([r for r in hits if r.enabled], [r for r in hits if r.status == STATUS_AUTO_DISABLED],
                     bool(hits))
            if len(self._matched) < WILDCARD_CACHE_MAX:
                self._matched[model] = found
        return found

    def model_enabled(self, model: str) -> bool:
        cfg = self.model_configs.get(model)
        return cfg is None or bool(cfg["enabled"])

    def kind_of(self, model: str) -> str:
        cfg = self.model_configs.get(model)
        return (cfg and cfg["kind"]) or self.kinds.get(model) or guess_model_kind(model)


def upstream_proxy(url: str) -> str | None:
    """The proxy the environment asks for, if any. aiohttp's own `trust_env` looks this (and ~/.netrc) up in a
    thread pool on every call, which cost half the relay's throughput (bench/)."""
    proxies = urllib.request.getproxies_environment()
    parts = urllib.parse.urlsplit(url)
    if not proxies or urllib.request.proxy_bypass_environment(parts.hostname or "", proxies):
        return None
    return proxies.get(parts.scheme) or proxies.get("all")


def channel_route(ch: dict[str, Any], catalog: dict[int, Provider]) -> ChannelRoute:
    provider = catalog.get(ch["type"])
    base_url = (ch.get("base_url") or (provider.default_base_url if provider else "")).strip()
    status = ch.get("status", STATUS_ENABLED)
    models, mapping = list(ch.get("models") or ()), dict(ch.get("model_mapping") or {})
    patterns = sorted(((k, v) for k, v in mapping.items() if is_wildcard(k)), key=lambda row: -len(row[0]))
    mapping = {k: v for k, v in mapping.items() if not is_wildcard(k)}
    config = ch.get("config") if isinstance(ch.get("config"), dict) else {}
    key = ch["key"].strip()
    key_format = provider.key_format if provider else ()
    own_proxy = (ch.get("proxy_url") or "").strip()
    secrets_ = key_secrets(key, key_format)
    password = urllib.parse.urlsplit(own_proxy).password if own_proxy else None
    if password and len(password) >= SECRET_MIN:  # like a key's parts: a shorter one would garble text
        secrets_ = sorted({*secrets_, password}, key=len, reverse=True)
    return ChannelRoute(
        id=ch["id"] or 0, name=ch["name"], type=ch["type"], key=key, base_url=base_url,
        proxy=own_proxy or upstream_proxy(base_url or "https://"), skip_tls_verify=bool(ch.get("skip_tls_verify")),
        config=dict(ch.get("config") or {}), models=frozenset(models), mapping=mapping,
        priority=int(ch.get("priority") or 0), weight=max(1, int(ch.get("weight") or 1)),
        enabled=status == STATUS_ENABLED, adaptor=adaptor_for(provider), status=status,
        status_reason=ch.get("status_reason") or "",
        test_model=(models or sorted(mapping) or [""])[0],
        key_parts=split_key(key, key_format),
        secrets=tuple((part.encode(), mask_key(part).encode()) for part in secrets_),
        scrubber=key_scrubber(secrets_),
        patterns=tuple(patterns), max_output_tokens=output_limits_setting(config.get(CONFIG_MAX_OUTPUT_TOKENS)),
        param_override=dict(config.get(CONFIG_PARAM_OVERRIDE) or {}) if isinstance(
            config.get(CONFIG_PARAM_OVERRIDE), dict) else {},
    )


#: the channel config's keys for the two request settings (new-api names the override param_override too)
CONFIG_PARAM_OVERRIDE, CONFIG_MAX_OUTPUT_TOKENS = "param_override", "max_output_tokens"


def output_limits_setting(value: Any) -> dict[str, int]:
    """A channel's max_output_tokens: a number for all its models, or {model: number}."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return {"*": value}
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items() if isinstance(v, int) and not isinstance(v, bool) and v > 0}
    return {}


def load_routing_table(engine: sa.Engine, catalog: dict[int, Provider]) -> RoutingTable:
    with engine.connect() as conn:
        channels = [dict(r._mapping) for r in conn.execute(sa.select(*Channel.__table__.columns))]
        tokens = [dict(r._mapping) for r in conn.execute(sa.select(*Token.__table__.columns))]
        configs = {r.model: dict(r._mapping) for r in conn.execute(sa.select(*ModelConfig.__table__.columns))}
    routes = {c["id"]: channel_route(c, catalog) for c in channels}
    by_model: dict[str, list[ChannelRoute]] = collections.defaultdict(list)
    auto_disabled: dict[str, list[ChannelRoute]] = collections.defaultdict(list)
    known: set[str] = set()
    for route in routes.values():
        names = route.offered
        known.update(names)
        if route.enabled or route.status == STATUS_AUTO_DISABLED:
            for name in names:
                (by_model if route.enabled else auto_disabled)[name].append(route)
    return RoutingTable(
        channels=routes, by_model=dict(by_model), known_models=known, model_configs=configs,
        auto_disabled=dict(auto_disabled), wildcard=[r for r in routes.values() if r.patterns],
        kinds=catalog_model_kinds(catalog),
        tokens={t["key"]: TokenInfo(t["id"], t["name"], t["status"], frozenset(t["models"] or ()), t["quota"] or 0.0,
                                    t["used_amount"] or 0.0, t["expired_at"] or 0) for t in tokens},
    )


def reload_routes(state: AppState) -> None:
    """After any write to channels, tokens or model configs: tell the other instances on this database (they
    poll the shared version), and rebuild this one's routing table."""
    with state.engine.begin() as conn:
        bump_shared_version(conn)
    refresh_routes(state)


def refresh_routes(state: AppState) -> None:
    """Load the routing table and the options as the database has them now."""
    version = read_shared_version(state.engine)
    options, routes = valid_options(load_options(state.engine)), load_routing_table(state.engine, state.catalog)
    if version >= state.version:  # else a load that started later has already finished
        state.version, state.options, state.routes = version, options, routes
        state.health.forget_missing(routes.channels)


def candidates(routes: list[ChannelRoute], rng: random.Random | None = None) -> list[ChannelRoute]:
    """Highest priority level first; inside a level a weighted random order, so load spreads."""
    if len(routes) == 1:
        return routes
    rng = rng or random
    # Efraimidis–Spirakis: sorting by u^(1/w) draws a weighted order without replacement
    return sorted(routes, key=lambda r: (-r.priority, -(rng.random() ** (1.0 / r.weight))))


FATAL, TRANSIENT = "fatal", "transient"  # what a failed attempt says about its channel; "" is the client's fault
FATAL_STATUSES = frozenset({401, 402, 403})  # a bad key, an unpaid bill, a refusal: the same on every retry
TRANSIENT_STATUSES = frozenset({408, 409, 425, 429})  # and every 5xx: overloaded or down, for now
#: error codes and types of a bad key or an empty balance, as the common providers send them (lower case)
FATAL_CODES = frozenset({
    "invalid_api_key", "incorrect_api_key", "invalid_authentication", "authentication_error", "permission_error",
    "permission_denied", "unauthenticated", "api_key_invalid", "invalidapikey", "insufficient_quota",
    "insufficient_balance", "exceeded_current_quota_error", "billing_not_active", "billing_hard_limit_reached",
    "account_deactivated", "access_terminated", "arrearage", "accountoverdueerror",
})
#: the same in the words of a message: OpenAI, Anthropic, Gemini, Azure, DeepSeek, OpenRouter, Moonshot, Zhipu, ...
FATAL_MESSAGES = re.compile(
    r"invalid[ _-]?(api[ _-]?key|subscription key|authentication)|incorrect api key|api key (not valid|expired)"
    r"|insufficient[ _](balance|quota|credits?|funds)|balance is (too low|insufficient)|credit balance is too low"
    r"|exceeded your current quota|requires more credits|account .{0,40}(deactivated|suspended|overdue|arrears)"
    r"|余额不足|欠费|额度不足", re.IGNORECASE)


def failure_kind(status: int, error: RelayError | None = None) -> str:
    """FATAL: this channel will fail every call until a person acts (bad key, no quota or balance), found in the
    status or in the error's code, type or message; TRANSIENT: overloaded or unreachable for now (5xx, 429,
    timeouts, connect errors); "": the request itself is wrong (400, 404, 413, 422) and would fail anywhere."""
    if status in FATAL_STATUSES or (error is not None and _is_fatal_error(error)):
        return FATAL
    if status in TRANSIENT_STATUSES or status >= 500:
        return TRANSIENT
    return ""


def _is_fatal_error(error: RelayError) -> bool:
    return (str(error.code).lower() in FATAL_CODES or str(error.type).lower() in FATAL_CODES
            or FATAL_MESSAGES.search(error.message) is not None)


def should_retry(status: int, error: RelayError | None = None) -> bool:
    """Another channel may succeed where this one was overloaded, down or had a bad key; a bad request
    (400/413/422) would fail the same everywhere, so it goes back to the client as it is."""
    return failure_kind(status, error) != ""


# ---- channel health: cool-downs per (channel, model), auto-disable after fatal errors in a row ----
# Decisions only, in memory, with the time passed in: the relay reports each attempt, and writes to the database
# what these decide (a channel to disable). Cool-downs and counts are per instance; an auto-disable is a channel
# status, which every instance on the database sees (issue 9).

SECRET_MIN = 8  # a shorter part of a composite key (a flag) is no secret, and masking it garbles text


def key_secrets(key: str, key_format: Iterable[str] = ()) -> list[str]:
    """The parts of a channel key that must never leave the gateway: the whole key, each part of a composite one
    but those its keyFormat names public (an api_version, a region), and a JSON part's secret fields (Vertex AI's
    private key); longest first, so that a part inside another is masked after it."""
    public = {v for name, v in split_key(key, key_format).items() if name in PUBLIC_KEY_PARTS}
    parts = {key, *key.split("|")}
    for part in list(parts):
        if part.strip().startswith("{"):
            try:
                fields = json.loads(part)
            except ValueError:
                fields = None
            if isinstance(fields, dict):
                parts |= {v for k, v in fields.items() if isinstance(v, str)
                          and any(word in k.lower() for word in ("key", "secret", "token"))}
    kept = {p.strip() for p in parts} - {""} - public
    return sorted((p for p in kept if len(p) >= SECRET_MIN), key=len, reverse=True)


_RETRY_AFTER_SECONDS = re.compile(r"\d{1,9}(\.\d{1,6})?")  # RFC 9110 delay-seconds, a fraction tolerated


KEY_RUN_MIN = 12  # a run of this many characters of a secret, in any form, is masked wherever it appears
_SEED = KEY_RUN_MIN // 2  # every run of KEY_RUN_MIN holds a window of this size that starts at a multiple of it
_URLSAFE_B64 = bytes.maketrans(b"+/", b"-_")


def secret_forms(secret: str) -> set[bytes]:
    """The forms an upstream may quote a secret in, lower-cased (data is compared lower-cased, so any case
    matches): as it is, URL-encoded, JSON-escaped (`\\/`), and base64, standard and URL-safe, at each of the
    three alignments a secret may have inside a longer encoded text (only the characters that depend on the
    secret alone)."""
    raw = secret.encode("utf-8", "replace")
    forms = {raw, urllib.parse.quote(secret, safe="").encode(), raw.replace(b"/", b"\\/")}
    for pad in range(3):
        encoded = base64.b64encode(b"\0" * pad + raw)
        start, end = -(-8 * pad // 6), 8 * (pad + len(raw)) // 6
        forms |= {encoded[start:end], encoded[start:end].translate(_URLSAFE_B64)}
    return {form.lower() for form in forms if len(form) >= KEY_RUN_MIN}


class KeyScrubber:
    """Finds every run of KEY_RUN_MIN or more characters of a channel's secrets, in any of their forms
    (secret_forms), in a body, and masks it. It looks up one window of _SEED bytes in every _SEED of the body,
    and only a window that is part of some form is followed, so a body costs about len/_SEED set lookups."""

    def __init__(self, secrets: Iterable[tuple[str, str]]) -> None:
        self.windows: dict[bytes, list[tuple[bytes, int, bytes]]] = collections.defaultdict(list)
        for secret, mask in secrets:
            for form in secret_forms(secret):
                for offset in range(len(form) - _SEED + 1):
                    self.windows[form[offset:offset + _SEED]].append((form, offset, mask.encode()))

    def runs(self, data: bytes) -> list[tuple[int, int, bytes]]:
        """(start, end, mask) of each run found, in order, overlaps merged."""
        low, windows, found = data.lower(), self.windows, []
        for at in range(0, len(low) - _SEED + 1, _SEED):
            for form, offset, mask in windows.get(low[at:at + _SEED], ()):
                start, end = at, at + _SEED  # grow the match both ways as far as the form goes along
                while start > 0 and start - at + offset > 0 and low[start - 1] == form[start - at + offset - 1]:
                    start -= 1
                while end < len(low) and end - at + offset < len(form) and low[end] == form[end - at + offset]:
                    end += 1
                if end - start >= KEY_RUN_MIN:
                    found.append((start, end, mask))
        found.sort()
        merged: list[tuple[int, int, bytes]] = []
        for start, end, mask in found:
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(end, merged[-1][1]), merged[-1][2])
            else:
                merged.append((start, end, mask))
        return merged

    def scrub(self, data: bytes) -> bytes:
        runs = self.runs(data) if len(data) >= KEY_RUN_MIN else []
        if not runs:
            return data
        out, last = [], 0
        for start, end, mask in runs:
            out += [data[last:start], mask]
            last = end
        return b"".join(out + [data[last:]])


def key_scrubber(secrets: list[str]) -> KeyScrubber | None:
    """The scrubber of a channel's secrets (key_secrets); None when none is long enough to have runs."""
    long = [secret for secret in secrets if len(secret) >= KEY_RUN_MIN]
    return KeyScrubber((secret, mask_key(secret)) for secret in long) if long else None


def retry_after_seconds(value: str, now: float) -> float | None:
    """A Retry-After header (a non-negative number of seconds, or an HTTP date) as seconds from `now`; None when
    absent or anything else (nan, -inf, -5, 1e400, garbage), which then gets the default cool-down (issue 18)."""
    value = value.strip()
    if not value:
        return None
    if _RETRY_AFTER_SECONDS.fullmatch(value):
        return float(value)
    if not any(c.isalpha() for c in value):  # a date names its month; "-5" or "1,5" is no date
        return None
    try:
        moment = email.utils.parsedate_to_datetime(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)  # "-0000": UTC, of unknown origin (RFC 5322)
        seconds = moment.timestamp() - now
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


def valid_retry_after(value: str) -> str:
    """The Retry-After value to pass on to a client: the upstream's, when it is one; "" for anything else."""
    value = value.strip()
    return value if retry_after_seconds(value, time.time()) is not None else ""


@dataclass
class Cooldown:
    until: float  # time.time() when the pair is tried again first
    failures: int  # transient failures in a row: each one doubles the next cool-down
    code: int
    reason: str


class ChannelHealth:
    """What this instance has seen of each channel: fatal errors in a row per channel, cool-downs per (channel,
    model), and the channels being auto-disabled right now (their status 3 is on its way to the database)."""

    def __init__(self, cooldown_base: float = 5.0, cooldown_max: float = 300.0) -> None:
        self.cooldown_base, self.cooldown_max = cooldown_base, cooldown_max
        self.fatal_in_a_row: dict[int, int] = {}
        self.cooling: dict[tuple[int, str], Cooldown] = {}
        self.disabling: dict[int, str] = {}  # channel id → the reason

    def arrange(self, routes: list[ChannelRoute], model: str,
                now: float) -> tuple[list[ChannelRoute], list[tuple[ChannelRoute, str, str]]]:
        """hot path: (the channels to try, in order; those skipped, each with why and a reason). A pair cooling
        down is skipped while another candidate is ready; when all are cooling, the soonest ready goes first,
        rather than refusing the call."""
        if not self.cooling and not self.disabling:
            return routes, []
        ready: list[ChannelRoute] = []
        cooling: list[tuple[Cooldown, ChannelRoute]] = []
        skipped: list[tuple[ChannelRoute, str, str]] = []
        for route in routes:
            cooldown = self.cooling.get((route.id, model))
            if route.id in self.disabling:
                skipped.append((route, "auto_disabled", self.disabling[route.id]))
            elif cooldown is not None and cooldown.until > now:
                cooling.append((cooldown, route))
            else:
                ready.append(route)
        if not ready:
            return [route for _, route in sorted(cooling, key=lambda c: c[0].until)], skipped
        skipped += [(route, "cooling_down", f"cooling down {c.until - now:.1f} s more after {c.reason}")
                    for c, route in cooling]
        return ready, skipped

    def succeeded(self, channel_id: int, model: str) -> None:
        """hot path: two lookups in dicts that are empty while all is well."""
        if self.fatal_in_a_row:
            self.fatal_in_a_row.pop(channel_id, None)
        if self.cooling:
            self.cooling.pop((channel_id, model), None)

    def failed(self, channel_id: int, model: str, kind: str, status: int, reason: str, now: float,
               disable_after: int, retry_after: float | None = None) -> bool:
        """Count one failure; True when the channel has now had `disable_after` fatal errors in a row and is to
        be auto-disabled (once: it is marked as being disabled until the caller calls disabled())."""
        if kind == FATAL and channel_id not in self.disabling:
            count = self.fatal_in_a_row.get(channel_id, 0) + 1
            if disable_after > 0 and count >= disable_after:
                self.fatal_in_a_row.pop(channel_id, None)  # a channel enabled again starts from zero
                self.disabling[channel_id] = reason
                return True
            self.fatal_in_a_row[channel_id] = count
        elif kind == TRANSIENT:
            key = (channel_id, model)
            last = self.cooling.get(key)
            # failures in a row grow the cool-down; one long after the last cool-down ended starts afresh
            failures = 1 if last is None or now > last.until + self.cooldown_max else last.failures + 1
            length = (min(retry_after, self.cooldown_max) if retry_after is not None
                      else min(self.cooldown_base * 2 ** min(failures - 1, 32), self.cooldown_max))
            self.cooling[key] = Cooldown(now + length, failures, status, reason)
        return False

    def disabled(self, channel_id: int) -> None:
        """The auto-disable is written (or failed): the routing table says the rest."""
        self.disabling.pop(channel_id, None)

    def forget(self, channel_ids: Iterable[int]) -> None:
        """A channel a user enabled, disabled or edited starts afresh (as aiproxy clears its monitor then). Safe
        from an admin route's worker thread: single dict operations, over copies."""
        gone = set(channel_ids)
        for channel_id in gone:
            self.fatal_in_a_row.pop(channel_id, None)
        for key in [k for k in list(self.cooling) if k[0] in gone]:
            self.cooling.pop(key, None)

    def forget_missing(self, channel_ids: Iterable[int]) -> None:
        """Drop what is known of deleted channels."""
        keep = set(channel_ids)
        self.forget((set(list(self.fatal_in_a_row)) | {k[0] for k in list(self.cooling)}) - keep)

    def view(self, now: float) -> dict[int, dict[str, Any]]:
        """Per channel with something to show: its fatal errors in a row and its cool-downs under way, for the
        channel list (times in Unix ms)."""
        out: dict[int, dict[str, Any]] = {}
        for channel_id, count in list(self.fatal_in_a_row.items()):  # copies: the relay changes them meanwhile
            out.setdefault(channel_id, {"fatal_errors": 0, "cooldowns": []})["fatal_errors"] = count
        for (channel_id, model), c in sorted(list(self.cooling.items()), key=lambda kv: kv[1].until):
            if c.until > now:
                out.setdefault(channel_id, {"fatal_errors": 0, "cooldowns": []})["cooldowns"].append({
                    "model": model, "until": int(c.until * 1000), "seconds_left": round(c.until - now, 1),
                    "failures": c.failures, "code": c.code, "reason": c.reason})
        return out


# ==== 5. Relay pipeline: one path for every client format and every channel =================================
# The relay is a raw ASGI app, not FastAPI routes: it reads only what it routes on (`model`, `stream`) and passes
# bytes through, which keeps the added latency near that of a bare relay (see bench/). Everything that depends on a
# wire format is the client's Dialect's or the channel's Adaptor's (the relay contract, section 3). In request
# order: relay() finds the route and checks the key; serve_call() parses the call and plans its channels;
# answer_call() opens an upstream (failing over), then answers buffered or streamed; log_call() prices and logs.

TRAIL_ERROR_MAX = 300  # characters of an error kept in a log row's routing trail
REASON_MAX = 255  # Channel.status_reason
HANGUP_WATCH_AFTER_S = 0.25  # a call this old starts watching for its client to hang up (see HangupWatch)
#: answers that may be audio or plain text (speech, srt/vtt transcripts); every other 200 must be JSON
_FREE_FORM_MODES = frozenset({Mode.AUDIO_SPEECH, Mode.AUDIO_TRANSCRIPTION, Mode.AUDIO_TRANSLATION})


def _socks_errors() -> tuple[type[BaseException], ...]:
    """aiohttp-socks' own errors (a SOCKS proxy that refuses), which are no OSError."""
    try:
        import aiohttp_socks
    except ImportError:
        return ()
    return aiohttp_socks.ProxyError, aiohttp_socks.ProxyConnectionError, aiohttp_socks.ProxyTimeoutError


_UPSTREAM_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError, *_socks_errors())
_ESTIMATED_OPS = frozenset({Mode.CHAT_COMPLETIONS, Mode.COMPLETIONS, Mode.EMBEDDINGS})  # usage matters for these
_TOO_LARGE = frozenset({"upstream_answer_too_large", "upstream_event_too_large"})  # the call's size, not a sick channel


async def relay(state: AppState, scope: Scope, receive: Receive, send: Send) -> None:
    """hot path: the ASGI entry of every relay request. The route its path and method find answers it, once the
    key is good; a refusal gets the route's own error shape (else that of the dialect owning the path)."""
    incoming = Incoming.of(scope)
    route = find_route(incoming)
    dialect = route.dialect if route is not None else dialect_for_path(incoming.path, incoming.method)
    caller = None
    try:
        if route is None:
            raise RelayError(404, f"Unknown API route: {incoming.method} {scope['path']}", "not_found")
        caller = authenticate(state, dialect.api_key(incoming), incoming.ip)
        await ROUTE_HANDLERS[route.serve](state, incoming, route, caller, receive, send)
    except RelayError as exc:
        if caller is None:  # refused at the door: no call, no log row, but counted
            state.metrics.refused[exc.status] += 1
        await _send_error(send, dialect, exc, incoming.request_id)
    except Exception:  # a bug: the client gets the request id to quote, the server log the traceback
        logger.exception("request %s (%s %s) failed", incoming.request_id, incoming.method, incoming.path)
        await _send_error(send, dialect, internal_error(incoming.request_id), incoming.request_id)


def internal_error(request_id: str) -> RelayError:
    return RelayError(500, f"Internal error in aiproxy-local (request id {request_id}); its server log says more.",
                      "internal_error", "aiproxy_error")


async def _send_error(send: Send, dialect: Dialect, error: RelayError, request_id: str) -> None:
    extra = [(b"retry-after", error.retry_after.encode())] if error.retry_after else []
    try:
        await send_bytes(send, error.status, dialect.error_body(error), "application/json", request_id, extra)
    except (RuntimeError, OSError):  # the answer had started (a stream), or the client is gone: nothing to add
        pass


_BODY_MODEL = re.compile(rb'"model"\s*:\s*"([^"\\]{1,191})"')


def refused_call(state: AppState, incoming: Incoming, route: RelayRoute, body: bytes, caller: Caller) -> RelayCall:
    """A call refused before it could be parsed (too large, not JSON, the wrong shape), for its log row: the
    model as far as it can be seen, and the body's start for the admin."""
    found = None if route.model else _BODY_MODEL.search(body[:4096])
    model = route.model or (found.group(1).decode("utf-8", "replace") if found else "")
    return RelayCall(request_id=incoming.request_id, started=incoming.started, endpoint=incoming.path, route=route,
                     model=model, body=body, obj=None, content_type=incoming.content_type, caller=caller,
                     headers=incoming.headers, ip=incoming.ip)


async def serve_call(state: AppState, incoming: Incoming, route: RelayRoute, caller: Caller, receive: Receive,
                     send: Send) -> None:
    """hot path: a call for an upstream. Read and parse it, plan its channels, answer from the first that serves
    it; a call refused on the way, malformed ones included, is logged like any other, and so is one that meets a
    bug (500, with its request id)."""
    call: RelayCall | None = None
    body = b""
    try:
        body = await read_body(receive, state.settings.relay_max_body_mib, incoming.headers.get(b"content-length"))
        call = parse_relay_call(state, incoming, route, body, caller)
        call.pinned = pinned_channel(incoming.headers, caller)
        await route.dialect.prepare(state, call)
        order = plan_channels(state, call)
        if route.native_only:
            order = [channel for channel in order if channel.adaptor.speaks(call)]
            if not order:
                call.check()
                answer = route.dialect.answer_locally(call)
                log_call(state, call, Attempt(None, None, 200), Outcome(200))
                return await send_bytes(send, 200, answer, "application/json", call.request_id)
        if not call.checked and any(not channel.adaptor.speaks(call) for channel in order):
            call.check()  # a body that some channel would convert: its shape is checked before any upstream call
        await answer_call(state, call, order, receive, send)
    except RelayError as exc:
        if call is None or not call.logged:
            call = call or refused_call(state, incoming, route, body, caller)
            log_call(state, call, Attempt(None, None, exc.status), Outcome(exc.status, None, exc.message.encode()))
        raise
    except Exception:
        if call is None or not call.logged:
            error = internal_error(incoming.request_id)
            call = call or refused_call(state, incoming, route, body, caller)
            log_call(state, call, call.trying or Attempt(None, None, 500),
                     Outcome(500, None, error.message.encode(), failure=error))
        raise


def pinned_channel(headers: dict[bytes, bytes], caller: Caller) -> int | None:
    """The channel an `Aiproxy-Channel: <id>` header pins the call to (the admin key only), as aiproxy's tests do."""
    pin = headers.get(b"aiproxy-channel")
    if not pin:
        return None
    if not caller.is_admin:
        raise RelayError(403, "Only the admin key may pin a channel.", "pin_forbidden")
    try:
        return int(pin)
    except ValueError:
        raise RelayError(400, "Aiproxy-Channel must be a channel id.", "invalid_channel") from None


async def read_body(receive: Receive, limit_mib: int, declared: bytes | None = None,
                    setting: str = "RELAY_MAX_BODY_MIB") -> bytes:
    """The request body, refused once it passes the limit: never held whole, whatever a client sends."""
    limit, chunks, size = limit_mib * MIB, [], 0
    if declared is not None and declared.isdigit() and int(declared) > limit:
        size = int(declared)
    while size <= limit:
        message = await receive()
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if not message.get("more_body"):
            break
    if size > limit:
        raise RelayError(413, f"The request body is larger than {limit_mib} MiB ({setting}).", "request_too_large")
    return b"".join(chunks)


def authenticate(state: AppState, raw_key: str, address: str = "") -> Caller:
    """hot path: the admin key, or a token from the in-memory table; an address that sent too many wrong keys
    waits (AuthThrottle), whatever key it sends now."""
    throttle = state.throttle
    if throttle.addresses:
        waiting = throttle.refusal(address, time.time())
        if waiting:
            raise RelayError(429, waiting, "too_many_wrong_keys", "rate_limit_error",
                             str(math.ceil(throttle.wait(address, time.time()))))
    if not raw_key:
        raise RelayError(401, "Missing API key: send it as 'Authorization: Bearer <key>'.", "missing_api_key")
    if is_admin_key(state, raw_key):
        throttle.succeeded(address)
        return ADMIN_CALLER
    key = raw_key.removeprefix("sk-")
    token = state.routes.tokens.get(key)  # the usual caller, one dict lookup; the admin key's compare after
    if token is None and is_admin_key(state, raw_key):
        return ADMIN_CALLER
    if token is None:
        throttle.failed(address, time.time(), raw_key)
        raise RelayError(401, "Invalid API key.", "invalid_api_key")
    throttle.succeeded(address)
    if token.status != STATUS_ENABLED:
        raise RelayError(401, f"API key '{token.name}' is disabled.", "token_disabled")
    if token.expired_at and token.expired_at < now_ms():
        raise RelayError(401, f"API key '{token.name}' has expired.", "token_expired")
    if token.quota > 0 and token.used_amount >= token.quota:
        raise RelayError(401, f"API key '{token.name}' has used its quota.", "insufficient_quota")
    return Caller(token.id, token.name, token.models, False)


def parse_relay_call(state: AppState, incoming: Incoming, route: RelayRoute, body: bytes, caller: Caller) -> RelayCall:
    """The call a request makes: its model (from the body, or the path), the parsed body, what its dialect reads."""
    obj: dict[str, Any] | None = None
    content_type = incoming.content_type
    if content_type.startswith("multipart/form-data"):
        match = _MULTIPART_MODEL.search(body)
        model = match.group(2).decode("utf-8", "replace").strip() if match else ""
    else:
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise RelayError(400, "The request body is not valid JSON.", "invalid_json") from None
        if not isinstance(obj, dict):
            raise RelayError(400, "The request body must be a JSON object.", "invalid_json")
        check_depth(body, obj)
        model = route.model or (obj.get("model") if isinstance(obj.get("model"), str) else "")
    if not model:
        raise RelayError(400, "The request has no 'model'.", "missing_model")
    call = RelayCall(request_id=incoming.request_id, started=incoming.started, endpoint=incoming.path, route=route,
                     model=model, body=body, obj=obj, content_type=content_type or "application/json", caller=caller,
                     headers=incoming.headers, query=incoming.query.decode("latin-1"), ip=incoming.ip,
                     max_retries=state.retry_times)
    route.dialect.read(call)
    return call


def plan_channels(state: AppState, call: RelayCall) -> list[ChannelRoute]:
    """The channels to try, in order, or a RelayError that says why there are none."""
    routes = state.routes
    model = call.model
    if call.caller.models and model not in call.caller.models:
        raise RelayError(403, f"This API key may not use the model '{model}'.", "model_not_allowed")
    if not routes.model_enabled(model) and call.caller is not TEST_CALLER:
        raise RelayError(404, f"The model '{model}' is disabled.", "model_not_found")
    if call.pinned is not None:
        pinned = routes.channels.get(call.pinned)
        if pinned is None:
            raise RelayError(404, f"Channel {call.pinned} does not exist.", "channel_not_found")
        if not pinned.serves(model):
            raise RelayError(400, f"Channel {call.pinned} does not offer the model '{model}'.", "model_not_on_channel")
        return [pinned]
    enabled, auto_disabled = routes.by_model.get(model), routes.auto_disabled.get(model)
    known = model in routes.known_models
    if not enabled and routes.wildcard:  # an exact name beats a pattern; a pattern serves what none lists enabled
        matched, matched_off, matched_any = routes.matched(model)
        enabled, auto_disabled, known = matched or None, auto_disabled or matched_off or None, known or matched_any
    for route in auto_disabled or ():  # in the trail: the log row says why a channel was not tried
        _skip(call, route, "auto_disabled", route.status_reason)
    if enabled:
        ready, skipped = state.health.arrange(candidates(enabled), model, call.started)
        for route, why, reason in skipped:
            _skip(call, route, why, reason)
        return ready[: call.max_retries + 1]
    if auto_disabled:
        raise RelayError(404, f"No available channel for the model '{model}': every channel of it is auto-disabled; "
                              "see the channel list for why.", "no_available_channel", "aiproxy_error")
    if known:
        raise RelayError(404, f"No available channel for the model '{model}': no enabled channel offers it.",
                         "no_available_channel", "aiproxy_error")
    # FastGPT shows "no channel for this model" only for a 404 whose text says "no available channel" (D13)
    raise RelayError(404, f"No available channel for the model '{model}': it does not exist or no channel offers "
                          "it.", "model_not_found")


def _skip(call: RelayCall, route: ChannelRoute, why: str, reason: str) -> None:
    call.attempts.append({"channel_id": route.id, "code": 0, "ms": 0, "skipped": why,
                          "error": reason[:TRAIL_ERROR_MAX]})


async def answer_call(state: AppState, call: RelayCall, order: list[ChannelRoute], receive: Receive,
                      send: Send) -> None:
    """hot path: open an upstream and answer from it. Each answer is logged before its last byte leaves, so a
    shutdown right after an answer still writes its row. A client that hangs up cancels the upstream at once
    (nothing more is read, the connection is closed), and the call is logged as 499 with the tokens so far."""
    watch = HangupWatch(receive, current_task(state), call.started)
    state.calls.add(watch)
    try:
        attempt = await open_upstream(state, call, order)
        if attempt.response is not None:
            await send({"type": "http.response.start", "status": 200, "headers": _headers(
                "text/event-stream; charset=utf-8", call.request_id, [(b"cache-control", b"no-cache"),
                                                                       (b"x-accel-buffering", b"no")])})
            outcome = await pipe_stream(call, attempt, send, state.settings.upstream_max_body_mib)
            if outcome.failure is not None and outcome.failure.code not in _TOO_LARGE:
                failure = outcome.failure
                note_failure(state, call, attempt.channel, failure_kind(failure.status, failure), failure.status,
                             failure.message)
            log_call(state, call, attempt, outcome)
            watch.done = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        elif attempt.answer is not None:
            log_call(state, call, attempt, Outcome(attempt.status, attempt.usage, ttfb_ms=attempt.ttfb_ms))
            watch.done = True
            await send_bytes(send, attempt.status, attempt.answer, attempt.content_type, call.request_id)
        else:
            error = failure_body(call, attempt)
            log_call(state, call, attempt, Outcome(attempt.status, None, error, attempt.body or error,
                                                   attempt.ttfb_ms))
            watch.done = True
            retry_after = [(b"retry-after", attempt.retry_after.encode("latin-1", "replace"))] if (
                attempt.status == 429 and attempt.retry_after) else []
            await send_bytes(send, attempt.status, error, "application/json", call.request_id, retry_after)
    except asyncio.CancelledError:
        if watch.hung_up and not asyncio.current_task().uncancel():
            log_cut_short(state, call, RelayError(499, "The client closed the request before the answer ended.",
                                                  "client_closed_request"))
            return
        if not watch.done:  # the shutdown's grace is over: the row says so, then the cancel goes on
            log_cut_short(state, call, RelayError(503, "The gateway shut down before the answer ended "
                                                       "(SHUTDOWN_GRACE_SECONDS).", "shutdown", "aiproxy_error"))
        raise
    finally:
        watch.close()
        state.calls.discard(watch)


async def open_upstream(state: AppState, call: RelayCall, order: list[ChannelRoute]) -> Attempt:
    """Try channels in order until one answers for good. Fail over on refusals, on fatal and transient failures
    (failure_kind) and on answers that break their promise (a 200 that is not JSON, a stream that ends before its
    first byte), always before any byte reaches the client. Each try goes into the call's trail and its channel's
    health."""
    assert state.http is not None, "the HTTP client starts with the app"
    last = None
    for index, channel in enumerate(order):
        refusal = channel.adaptor.refusal(call)
        if refusal is not None:
            last = Attempt(channel, None, refusal.status, refusal, retries=index)
            _skip(call, channel, "unsupported", refusal.message)
            continue
        attempt = call.trying = Attempt(channel, None, 0, retries=index, started=time.time())
        entry = call.final = {"channel_id": channel.id, "code": 0, "ms": 0}
        call.attempts.append(entry)
        try:
            failure = await _try_channel(state, call, attempt)
        except RelayError as exc:  # the gateway refused the request before calling the channel: no try to log
            entry.update(code=exc.status, skipped="refused", error=exc.message[:TRAIL_ERROR_MAX])
            call.final = None
            raise
        entry["code"] = attempt.status
        if failure is None:
            if call.caller is not TEST_CALLER:
                state.health.succeeded(channel.id, call.model)
            return attempt
        entry["ms"], entry["error"] = int((time.time() - attempt.started) * 1000), failure.message[:TRAIL_ERROR_MAX]
        kind = failure_kind(attempt.status, failure)
        reason = failure.message if attempt.error is not None else f"{attempt.status} from upstream: {failure.message}"
        if failure.code not in _TOO_LARGE:  # this call's answer, not the channel's health
            note_failure(state, call, channel, kind, attempt.status, reason, attempt.retry_after)
        if not kind:
            return attempt
        last = attempt
    return last or Attempt(None, None, 503, RelayError(503, "No channel answered.", "no_available_channel",
                                                       "aiproxy_error"))


def channel_http(state: AppState, channel: ChannelRoute) -> tuple[aiohttp.ClientSession, dict[str, Any]]:
    """The session and request options of a channel's upstream calls (calls, channel tests, model lists): an
    http(s) proxy goes in aiohttp's `proxy=`, a SOCKS one needs a connector, so a session of its own (aiohttp-socks,
    made on first use, closed with the app); `skip_tls_verify` turns certificate checks off for this channel."""
    options: dict[str, Any] = {"ssl": False} if channel.skip_tls_verify else {}
    proxy = channel.proxy
    if not proxy:
        return state.http, options
    if not proxy.startswith("socks"):
        return state.http, dict(options, proxy=proxy)
    session = state.socks.get(proxy)
    if session is None or session.closed:
        from aiohttp_socks import ProxyConnector

        session = state.socks[proxy] = aiohttp.ClientSession(
            connector=ProxyConnector.from_url(proxy.replace("socks5h://", "socks5://", 1),
                                              rdns=proxy.startswith("socks5h://"), limit=100),
            timeout=state.http.timeout, auto_decompress=True, trust_env=False)
    return session, options


async def _try_channel(state: AppState, call: RelayCall, attempt: Attempt) -> RelayError | None:
    """Call one channel. On success `attempt` holds an open stream (its first bytes read) or a whole answer made
    the client's; otherwise the error says what failed, with the channel's key scrubbed."""
    channel = attempt.channel
    adaptor = channel.adaptor
    payload = fit_upstream_body(call, channel, adaptor.convert_request(call, channel))
    url = adaptor.build_url(channel, call)
    session, options = channel_http(state, channel)
    waiting = time.perf_counter()
    try:
        await adaptor.authorize(state, channel)
        headers = adaptor.build_headers(channel, call)
        headers["Content-Type"] = call.content_type if adaptor.speaks(call) else "application/json"
        response = adaptor.local_answer(call, channel)
        if response is None:
            target = await adaptor.sign(state, channel, "POST", url, headers, payload)
            response = await (state.upstream.post(target, payload, headers, options, session)
                              if session is state.http else session.post(target, data=payload, headers=headers,
                                                                          **options))
    except RelayError as exc:  # a key that cannot be used as it is (a missing extra, a refused token exchange)
        attempt.error = RelayError(exc.status, channel.scrub_text(exc.message), exc.code, exc.type)
        attempt.status = exc.status
        return attempt.error
    except _UPSTREAM_ERRORS as exc:
        call.waited += time.perf_counter() - waiting
        attempt.error = upstream_failure(exc, url, state.settings)
        attempt.status = attempt.error.status
        return attempt.error
    status = attempt.status = response.status
    # a 407 comes from the channel's proxy, not the provider (an http:// target through an http proxy)
    if status == 407 and channel.proxy and not isinstance(response, LocalResponse):
        response.release()
        attempt.error = upstream_failure(aiohttp.ClientHttpProxyError(response.request_info, (), status=407), url,
                                         state.settings)
        attempt.status = attempt.error.status
        return attempt.error
    content_type = response.headers.get("Content-Type", "application/json")
    try:
        if status == 200 and call.stream and content_type.startswith(adaptor.stream_type):
            attempt.first = await response.content.readany()
            attempt.ttfb_ms = int((time.time() - call.started) * 1000)
            if attempt.first:
                attempt.response = response
                return None
            return _broken_promise(attempt, "The upstream ended its stream before sending anything.")
        data = await read_answer(response, state.settings.upstream_max_body_mib)
        attempt.ttfb_ms = int((time.time() - call.started) * 1000)
    except _UPSTREAM_ERRORS as exc:
        return _broken_promise(attempt, f"Upstream answer broke off: {type(exc).__name__}")
    except AnswerTooLarge as exc:
        return _broken_promise(attempt, str(exc), "upstream_answer_too_large")
    finally:
        call.waited += time.perf_counter() - waiting
        if attempt.response is None:
            response.release()  # a response not read to its end closes its connection: the upstream stops at once
    if not 200 <= status < 300:
        attempt.body = channel.scrub_all(data)  # read, logged and answered with: every form of the key masked
        attempt.retry_after = valid_retry_after(response.headers.get("Retry-After", ""))
        error = adaptor.convert_error(status, attempt.body)
        return RelayError(error.status, channel.scrub_text(error.message), error.code, error.type)
    try:
        attempt.answer, attempt.usage = buffered_answer(call, channel, content_type, data) if status == 200 else (
            data, None)
    except RelayError as exc:
        return _broken_promise(attempt, channel.scrub_text(exc.message))
    attempt.content_type = content_type
    return None


def fit_upstream_body(call: RelayCall, channel: ChannelRoute, payload: bytes) -> bytes:
    """hot path: the upstream body, made to fit the channel after conversion: output tokens clamped to the
    model's known limit, an OpenAI model's reasoning parameters as it takes them, then the channel's
    param_override. What changed goes into the call's routing trail. A body none of this touches is not parsed."""
    target = channel.upstream_model(call.model)
    limit = channel.output_limit(target)
    reasoning = channel.adaptor.openai_models and (openai_reasoning_model(target) or b'"reasoning_effort"' in payload)
    if (limit is None and not reasoning and not channel.param_override) or payload.lstrip()[:1] != b"{":
        return payload
    body = orjson.loads(payload)
    notes: list[str] = []
    if reasoning and "messages" in body:
        fit_openai_reasoning(body, target, notes)
    if limit is not None:
        clamp_output_tokens(body, limit, notes)
    if channel.param_override:
        body = apply_param_override(body, channel.param_override)
        notes.append("param_override applied")
    if notes and call.final is not None:
        call.final["adjusted"] = "; ".join(notes)
    return orjson.dumps(body)


def clamp_output_tokens(body: dict[str, Any], limit: int, notes: list[str]) -> None:
    """Every format's output-token field, at most `limit` (and an Anthropic thinking budget below it)."""
    config = body.get("generationConfig")
    fields = [(body, name) for name in ("max_tokens", "max_completion_tokens", "max_output_tokens")]
    fields += [(config, "maxOutputTokens")] if isinstance(config, dict) else []
    for where, name in fields:
        value = where.get(name)
        if isinstance(value, int) and value > limit:
            where[name] = limit
            notes.append(f"{name} {value} → {limit} (the model's output limit)")
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and isinstance(thinking.get("budget_tokens"), int) and isinstance(
            body.get("max_tokens"), int) and thinking["budget_tokens"] >= body["max_tokens"]:
        budget = body["max_tokens"] - 1
        if budget >= ANTHROPIC_MIN_THINKING_BUDGET:
            thinking["budget_tokens"] = budget
        else:
            body.pop("thinking")


def apply_param_override(body: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` merged into `body`: objects merge key by key, `null` deletes, anything else replaces."""
    for key, value in override.items():
        if value is None:
            body.pop(key, None)
        elif isinstance(value, dict) and isinstance(body.get(key), dict):
            body[key] = apply_param_override(dict(body[key]), value)
        else:
            body[key] = value
    return body


_OS_REASONS = {errno.ECONNREFUSED: "connection refused", errno.ECONNRESET: "connection reset",
               errno.EHOSTUNREACH: "host unreachable", errno.ENETUNREACH: "network unreachable",
               errno.ETIMEDOUT: "timed out", errno.ECONNABORTED: "connection aborted"}


def upstream_failure(exc: BaseException, url: str, settings: Settings) -> RelayError:
    """Why an upstream could not be reached, naming its host:port and the OS's reason; never the URL's path or
    query, which may carry a key."""
    parts = urllib.parse.urlsplit(url)
    host = getattr(exc, "host", None) or parts.hostname or "?"
    port = getattr(exc, "port", None) or parts.port or (443 if parts.scheme == "https" else 80)
    where = f"{host}:{port}"
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return RelayError(504, f"{where} sent no answer within {settings.ttfb_timeout:g} s", "upstream_timeout",
                          "upstream_error")
    if isinstance(exc, asyncio.TimeoutError):
        return RelayError(504, f"Timed out connecting to {where} after {settings.connect_timeout:g} s",
                          "upstream_timeout", "upstream_error")
    if type(exc).__module__.startswith("aiohttp_socks"):  # its words name the proxy's host, never its password
        return RelayError(502, f"Could not reach {where} through the channel's SOCKS proxy ({exc})",
                          "upstream_connect_error", "upstream_error")
    if isinstance(exc, (aiohttp.ClientConnectorDNSError, socket.gaierror)):
        reason = "host name not found"
    elif isinstance(exc, (aiohttp.ClientConnectorCertificateError, ssl.SSLCertVerificationError)):
        reason = "TLS certificate not trusted"
    elif isinstance(exc, (aiohttp.ClientSSLError, ssl.SSLError)):
        reason = "TLS handshake failed"
    elif isinstance(exc, aiohttp.ClientHttpProxyError):
        reason = f"the proxy answered HTTP {exc.status}"
    elif isinstance(exc, aiohttp.ClientProxyConnectionError):
        reason = "the proxy refused"
    elif isinstance(exc, aiohttp.ClientPayloadError):  # before the answer's head: bytes that are not HTTP
        return RelayError(502, f"{where} answered with something that is not HTTP", "bad_upstream_answer",
                          "upstream_error")
    elif isinstance(exc, aiohttp.ServerDisconnectedError):
        return RelayError(502, f"{where} closed the connection before answering", "upstream_connect_error",
                          "upstream_error")
    else:
        os_error = getattr(exc, "os_error", exc)
        code = getattr(os_error, "errno", None)
        reason = _OS_REASONS.get(code) or (os.strerror(code).lower() if code else type(exc).__name__)
    return RelayError(502, f"Could not connect to {where} ({reason})", "upstream_connect_error", "upstream_error")


class AnswerTooLarge(Exception):
    """An upstream answer, or one event of its stream, beyond UPSTREAM_MAX_BODY_MIB."""


async def read_answer(response: aiohttp.ClientResponse, limit_mib: int) -> bytes:
    """A whole upstream answer, refused (AnswerTooLarge) once it passes the limit: never held whole beyond it,
    whatever an upstream sends, and read as it arrives, so the event loop serves other calls meanwhile."""
    limit = limit_mib * MIB
    what = f"The upstream's answer is larger than {limit_mib} MiB (UPSTREAM_MAX_BODY_MIB)."
    declared = getattr(response, "content_length", None)  # a LocalResponse (made in the gateway) has none
    if declared is not None and declared > limit:
        raise AnswerTooLarge(what)
    chunks, size = [], 0
    while chunk := await response.content.readany():
        size += len(chunk)
        if size > limit:
            raise AnswerTooLarge(what)
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _broken_promise(attempt: Attempt, message: str, code: str = "bad_upstream_answer") -> RelayError:
    """An upstream answer that is not what it promised: the channel's failure (502), so the call fails over."""
    attempt.error = RelayError(502, message, code, "upstream_error")
    attempt.status = 502
    return attempt.error


def buffered_answer(call: RelayCall, channel: ChannelRoute, content_type: str,
                    data: bytes) -> tuple[bytes, Usage | None]:
    """hot path: a whole 200 answer made the client's (its format, its model name) and the usage it reports. One
    that is not the JSON it promises (garbage, or cut short) raises RelayError, a failure of the channel (issue
    10)."""
    if call.mode in _FREE_FORM_MODES and "json" not in content_type:
        return data, None
    answer, usage = channel.adaptor.convert_response(call, data)
    if usage is None:
        json_object(data, "The upstream's 200 answer")
        if call.op in _ESTIMATED_OPS:
            usage = estimate_usage(call, len(answer))
    return answer, usage


async def pipe_stream(call: RelayCall, attempt: Attempt, send: Send, limit_mib: int) -> Outcome:
    """hot path: forward SSE events as they arrive, through the adaptor's stream filter. Bytes are only split at
    event borders, so an event is never cut in two and events are never held back to be merged. A stream that
    breaks off, or sends one event larger than UPSTREAM_MAX_BODY_MIB, ends with one error event in the client's
    own format. Each byte is searched for a border once: a huge event costs linear time, never quadratic."""
    response, channel = attempt.response, attempt.channel
    stream = call.progress = channel.adaptor.stream(call, channel)
    pending = attempt.first
    sep = b"\r\n\r\n" if b"\r\n\r\n" in pending else b"\n\n"
    failure: RelayError | None = None
    limit, searched = limit_mib * MIB, 0  # pending[:searched] holds no border
    try:
        while True:
            # up to the last event border; a raw filter (binary frames) gets every byte and splits them itself
            if stream.raw:
                cut = len(pending)
            else:
                cut = pending.rfind(sep, searched)
                cut = cut + len(sep) if cut >= 0 else 0
            if cut:
                events, pending = (pending, b"") if cut == len(pending) else (pending[:cut], pending[cut:])
                out = stream.feed(events if type(events) is bytes else bytes(events))
                if out:
                    await send({"type": "http.response.body", "body": _scrub_events(channel, out),
                                "more_body": True})
            if len(pending) > limit:
                failure = RelayError(502, f"An event of the upstream's stream is larger than {limit_mib} MiB "
                                          "(UPSTREAM_MAX_BODY_MIB).", "upstream_event_too_large", "upstream_error")
                await send({"type": "http.response.body", "body": call.dialect.stream_error(failure, call),
                            "more_body": True})
                break
            searched = max(0, len(pending) - len(sep) + 1)
            waiting = time.perf_counter()
            data = await response.content.readany()
            call.waited += time.perf_counter() - waiting
            if not data:
                break
            if not pending:
                pending = data  # the usual case: reads end at an event's border
            else:  # an event spans reads: grow it in place
                if type(pending) is bytes:
                    pending = bytearray(pending)
                pending += data
        out = (stream.feed(bytes(pending)) if pending and failure is None else b"") + (
            stream.close() if failure is None else b"")
        if out:
            await send({"type": "http.response.body", "body": _scrub_events(channel, out), "more_body": True})
    except _UPSTREAM_ERRORS as exc:
        # Retry is impossible now: the client already holds part of the answer. Tell it in-band.
        failure = RelayError(502, f"Upstream stream broke off: {type(exc).__name__}", "upstream_stream_error",
                             "upstream_error")
        await send({"type": "http.response.body", "body": call.dialect.stream_error(failure, call),
                    "more_body": True})
    finally:
        response.release()  # cut short (a hang-up, a cancel), this closes the connection
    if stream.error is not None:
        e = stream.error
        failure = RelayError(e.status, channel.scrub_text(e.message), e.code, e.type)
    usage = stream.usage or estimate_usage(call, 4 * max(0, stream.events - 1))  # about one token an event
    if failure is None:
        return Outcome(200, usage, ttfb_ms=attempt.ttfb_ms)
    return Outcome(failure.status, usage, call.dialect.error_body(failure), ttfb_ms=attempt.ttfb_ms, failure=failure)


def _scrub_events(channel: ChannelRoute, out: bytes) -> bytes:
    """hot path: stream events pass with the key masked as it is; an error event, which is where upstreams quote
    keys, in every form (scrub_all)."""
    return channel.scrub_all(out) if b"error" in out else channel.scrub(out)


def failure_body(call: RelayCall, attempt: Attempt) -> bytes:
    """What the client gets when no channel answered for good, in the client's own shape."""
    adaptor = attempt.channel.adaptor if attempt.channel else None
    if attempt.error is not None or adaptor is None:
        return call.dialect.error_body(attempt.error or RelayError(attempt.status, "No channel answered.",
                                                                   "no_available_channel", "aiproxy_error"))
    if adaptor.speaks(call) and attempt.body:
        return attempt.body
    return call.dialect.error_body(adaptor.convert_error(attempt.status, attempt.body))


def estimate_usage(call: RelayCall, output_chars: int) -> Usage:
    prompt = 0
    if call.obj is not None:
        source = (call.obj.get("messages") or call.obj.get("prompt") or call.obj.get("input")
                  or call.obj.get("contents") or "")
        prompt = estimate_tokens(len(source if isinstance(source, str) else orjson.dumps(source)))
    out = estimate_tokens(output_chars)
    return Usage(prompt, out, prompt + out, 0, True)


def note_failure(state: AppState, call: RelayCall, channel: ChannelRoute, kind: str, status: int, reason: str,
                 retry_after: str = "") -> None:
    """Feed a failed try to its channel's health. The fatal error that tips a channel over auto-disables it, in
    the background; a model test counts for nothing (the retest decides by itself)."""
    if not kind or call.caller is TEST_CALLER or not channel.id:
        return
    now = time.time()
    if kind == TRANSIENT:
        state.metrics.cooldowns[channel.id] += 1  # each transient failure starts or lengthens a cool-down
    wait = retry_after_seconds(retry_after, now) if status in (429, 503) else None
    if state.health.failed(channel.id, call.model, kind, status, reason[:REASON_MAX], now, state.auto_disable_after,
                           wait):
        in_background(state, _auto_disable(state, channel, reason[:REASON_MAX]))


def in_background(state: AppState, work: Any) -> None:
    task = asyncio.get_running_loop().create_task(work)
    state.background.add(task)  # the loop keeps only a weak reference
    task.add_done_callback(state.background.discard)


async def _auto_disable(state: AppState, channel: ChannelRoute, reason: str) -> None:
    try:
        await asyncio.to_thread(auto_disable_channel, state, channel, reason)
    finally:
        state.health.disabled(channel.id)


def auto_disable_channel(state: AppState, channel: ChannelRoute, reason: str) -> bool:
    """Status 3 with the upstream's words and the time, in the database, so every instance stops using it. Only
    an enabled channel changes: a user's own disable stands."""
    try:
        with state.engine.begin() as conn:
            changed = conn.execute(sa.update(Channel).where(
                Channel.id == channel.id, Channel.status == STATUS_ENABLED).values(
                status=STATUS_AUTO_DISABLED, status_reason=reason, status_time=now_ms())).rowcount
        if changed:
            state.metrics.auto_disables[channel.id] += 1
            logger.warning("channel %d (%s) auto-disabled after %d fatal errors in a row: %s", channel.id,
                           channel.name, state.auto_disable_after, reason)
            reload_routes(state)
        return bool(changed)
    except sa.exc.SQLAlchemyError as exc:
        logger.error("channel %d could not be auto-disabled (%s); the next fatal error tries again", channel.id,
                     _first_line(exc))
        return False


def log_cut_short(state: AppState, call: RelayCall, failure: RelayError) -> None:
    """A call that ended before its answer did (a client's hang-up is 499, nginx's number; a shutdown 503), with
    the tokens so far."""
    progress = call.progress
    usage = (progress.usage or estimate_usage(call, 4 * max(0, progress.events - 1)) if progress is not None
             else estimate_usage(call, 0))
    attempt = call.trying or Attempt(None, None, failure.status)
    attempt.status = failure.status
    log_call(state, call, attempt, Outcome(failure.status, usage, failure.message.encode(),
                                           ttfb_ms=attempt.ttfb_ms, failure=failure))


def log_call(state: AppState, call: RelayCall, attempt: Attempt, outcome: Outcome) -> None:
    """hot path: price the call, close its trail with how it ended, and queue its log row."""
    outcome.used_amount = charge(state, call, outcome.usage, attempt.channel)
    if call.caller is not TEST_CALLER:
        state.metrics.observe(state, call, attempt.channel.id if attempt.channel else 0, outcome.code, outcome.usage)
    call.logged = True
    final = call.final
    if final is not None and attempt.channel is not None and final["channel_id"] == attempt.channel.id:
        final["code"], final["ms"] = outcome.code, int((time.time() - attempt.started) * 1000)
        if outcome.failure is not None:
            final["error"] = outcome.failure.message[:TRAIL_ERROR_MAX]
    state.writer.submit_call(call, attempt, outcome)


#: aiproxy's price fields (USD per 1K tokens) that the gateway charges by
PRICE_FIELDS = ("input_price", "output_price", "cached_price", "cache_creation_price")


def price_for(state: AppState, model: str, channel: ChannelRoute | None) -> dict[str, float | None]:
    """hot path: a call's prices, field by field: the model config's (a price of 0 is unset, as in aiproxy), else
    the model snapshot's for the model the channel calls upstream on its type, else for the name asked for; None
    where nobody knows."""
    data = model_data()
    info = None
    if channel is not None:
        info = data.info(channel.upstream_model(model), channel.type) or data.info(model, channel.type)
    info = info or data.info(model)
    config = state.routes.model_configs.get(model)
    if config is None:
        if info is None:
            return _NO_PRICE
        return {"input_price": info.input_price, "output_price": info.output_price,
                "cached_price": info.cached_price, "cache_creation_price": info.cache_creation_price}
    return {name: config.get(name) or (getattr(info, name) if info is not None else None) for name in PRICE_FIELDS}


_NO_PRICE: dict[str, float | None] = dict.fromkeys(PRICE_FIELDS)


def cost_of(usage: Usage, price: dict[str, float | None]) -> float | None:
    """hot path: what a usage costs at these prices, as aiproxy computes it: cache reads at `cached_price` and
    cache writes at `cache_creation_price` (the input price when those are unset), the rest of the prompt at
    `input_price`. None when a price the usage needs is unknown: an empty cost, never a made-up 0."""
    base, cached, written = price["input_price"], usage.cached_tokens, usage.cache_write_tokens
    total = 0.0
    for tokens, unit in ((usage.input_tokens - cached - written, base), (usage.output_tokens, price["output_price"]),
                         (cached, base if price["cached_price"] is None else price["cached_price"]),
                         (written, base if price["cache_creation_price"] is None else price["cache_creation_price"])):
        if tokens > 0:
            if unit is None:
                return None
            total += tokens * unit
    total /= 1000
    return total if math.isfinite(total) else None  # a price saved as 1e400 must not poison every later sum


def charge(state: AppState, call: RelayCall, usage: Usage | None, channel: ChannelRoute | None = None) -> float | None:
    """hot path: the call's cost from its model's prices (price_for), added at once to its API key's spend, so a
    quota holds before the log writer has flushed. The one place a call is priced (issue 11). None: unknown."""
    if usage is None:
        return 0.0
    amount = cost_of(usage, price_for(state, call.model, channel))
    token = state.routes.token_ids.get(call.caller.token_id)
    if token is not None and amount:
        token.used_amount += amount
    return amount


def _headers(content_type: str, request_id: str, extra: Iterable[tuple[bytes, bytes]] = ()) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", content_type.encode()), (b"x-request-id", request_id.encode()), *extra]


async def send_bytes(send: Send, status: int, body: bytes, content_type: str, request_id: str,
                     extra: Iterable[tuple[bytes, bytes]] = ()) -> None:
    await send({"type": "http.response.start", "status": status, "headers": _headers(
        content_type, request_id, [(b"content-length", str(len(body)).encode()), *extra])})
    await send({"type": "http.response.body", "body": body})


def current_task(state: AppState) -> asyncio.Task | None:
    """hot path: asyncio.current_task() asks the kernel for the process id on every call (CPython 3.11); given
    the app's loop it does not."""
    task = asyncio.current_task(state.loop) if state.loop is not None else None
    return task or asyncio.current_task()


class HangupWatch:
    """One call's client connection. watch_hangups() gives it a task that waits for the client to go only once
    the call has run HANGUP_WATCH_AFTER_S: a call done sooner never pays for a task (bench/ S3)."""

    __slots__ = ("receive", "task", "since", "watcher", "hung_up", "done")

    def __init__(self, receive: Receive, task: asyncio.Task | None, since: float) -> None:
        self.receive, self.task, self.since = receive, task, since
        self.watcher: asyncio.Task | None = None
        self.hung_up = self.done = False  # done: the answer's last byte is on its way, a hang-up changes nothing

    async def wait(self) -> None:
        while (await self.receive())["type"] != "http.disconnect":
            pass
        if not self.done and self.task is not None:
            self.hung_up = True
            self.task.cancel()

    def close(self) -> None:
        self.done = True
        if self.watcher is not None:
            self.watcher.cancel()


async def watch_hangups(state: AppState) -> None:
    """One task for all calls: every HANGUP_WATCH_AFTER_S, calls running longer than that start waiting for a
    hang-up, so one is noticed within twice that time, and at once for calls already watched."""
    while True:
        await asyncio.sleep(HANGUP_WATCH_AFTER_S)
        due = time.time() - HANGUP_WATCH_AFTER_S
        for watch in list(state.calls):
            if watch.watcher is None and not watch.done and watch.since <= due:
                watch.watcher = asyncio.get_running_loop().create_task(watch.wait())


# ---- model lists: GET .../models[/{model}] in the shape of the dialect that asks ----

def models_for(state: AppState, caller: Caller) -> list[str]:
    routes = state.routes
    names = (m for m in routes.by_model if routes.model_enabled(m))
    return sorted(m for m in names if not caller.models or m in caller.models)


def model_entry(state: AppState, dialect: Dialect, model: str) -> dict[str, Any]:
    provider = state.catalog.get(state.routes.by_model[model][0].type)
    return dialect.model_entry(model, provider.name if provider else "aiproxy", state.routes.kind_of(model))


async def serve_model_list(state: AppState, incoming: Incoming, route: RelayRoute, caller: Caller, receive: Receive,
                           send: Send) -> None:
    """The models a caller may use, or one of them, in its dialect's shape."""
    dialect, names = route.dialect, models_for(state, caller)
    _, _, model = incoming.path.partition("/models/")
    if not model:
        body = dialect.model_list([model_entry(state, dialect, m) for m in names])
        return await send_bytes(send, 200, orjson.dumps(body), "application/json", incoming.request_id)
    model = urllib.parse.unquote(model).removeprefix("models/")
    if model not in names:
        raise RelayError(404, f"The model '{model}' does not exist or no channel offers it.", "model_not_found")
    await send_bytes(send, 200, orjson.dumps(model_entry(state, dialect, model)), "application/json",
                     incoming.request_id)


# ---- channel tests: a minimal real request of the model's kind, through the same pipeline ----
# The request is OpenAI's; a channel of another format gets it converted, i.e. a request in its own format.

CHANNEL_TEST_CONCURRENCY = 5


def _silent_wav() -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000), w.writeframes(b"\0\0" * 800)
    return buf.getvalue()


def model_test_request(kind: Kind, model: str) -> tuple[bytes, str]:
    """(body, content type) of the smallest request that proves a model answers."""
    if kind.test_body is None:
        boundary = "aiproxytest"
        parts = (f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\n{model}\r\n'
                 f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="hi.wav"\r\n'
                 f"Content-Type: audio/wav\r\n\r\n").encode() + _silent_wav() + f"\r\n--{boundary}--\r\n".encode()
        return parts, f"multipart/form-data; boundary={boundary}"
    return orjson.dumps({"model": model, **kind.test_body}), "application/json"


async def run_model_test(state: AppState, channel: ChannelRoute, model: str, save: bool = True) -> dict[str, Any]:
    """Test one model of one channel (saved or not). The result has aiproxy's ChannelTest fields."""
    kind = KINDS.get(state.routes.kind_of(model), KINDS["chat"])
    body, content_type = model_test_request(kind, model)
    path = kind.path
    started = time.time()
    incoming = Incoming(path, headers={b"content-type": content_type.encode()}, request_id=new_request_id(),
                        started=started)
    call = parse_relay_call(state, incoming, RELAY_ROUTES[path], body, TEST_CALLER)
    limit = state.settings.model_test_timeout
    try:
        async with asyncio.timeout(limit):
            attempt = await open_upstream(state, call, [channel])
    except TimeoutError:
        attempt = call.trying or Attempt(channel, None, 504, started=started)
        attempt.status, attempt.error = 504, RelayError(
            504, f"No answer within {limit:g} s, the model test's limit (MODEL_TEST_TIMEOUT).", "test_timeout",
            "upstream_error")
    if attempt.answer is None:
        response_text = failure_body(call, attempt)
        outcome = Outcome(attempt.status, None, response_text, attempt.body or response_text, failure=attempt.error)
    else:
        response_text = attempt.answer[:512]
        outcome = Outcome(attempt.status, attempt.usage, ttfb_ms=attempt.ttfb_ms)
    result = {
        "test_at": int(started * 1000), "model": model, "actual_model": channel.upstream_model(model),
        "took": round(time.time() - started, 3), "timeout": limit, "success": outcome.code == 200,
        "code": outcome.code,
        "response": response_text.decode("utf-8", "replace") if kind.name != "tts" or outcome.code != 200 else "",
        "channel_id": channel.id, "channel_name": channel.name, "channel_type": channel.type, "mode": call.mode,
    }
    if save and channel.id:
        log_call(state, call, attempt, outcome)
        await asyncio.to_thread(save_channel_test, state.engine, result)
    return result


def save_channel_test(engine: sa.Engine, result: dict[str, Any]) -> None:
    row = {k: result[k] for k in ("channel_id", "model", "actual_model", "test_at", "took", "success", "code")}
    row["response"] = result["response"][:BODY_DETAIL_MAX]
    with engine.begin() as conn:
        upsert(conn, ChannelTest.__table__, [row], ("channel_id", "model"))
        conn.execute(sa.update(Channel).where(Channel.id == row["channel_id"]).values(
            last_test_error_at=0 if row["success"] else row["test_at"]))


async def retest_auto_disabled(state: AppState, channel_ids: Iterable[int] | None = None) -> list[dict[str, Any]]:
    """Test each auto-disabled channel (or those of `channel_ids` that are) with its first model; one that passes
    is enabled again and its reason cleared. A channel the user disabled (status 2) is never touched. Returns
    `{channel_id, enabled, test}` per channel tested."""
    wanted = None if channel_ids is None else set(channel_ids)
    due = [r for r in state.routes.channels.values()
           if r.status == STATUS_AUTO_DISABLED and (wanted is None or r.id in wanted) and r.test_model]
    gate = asyncio.Semaphore(CHANNEL_TEST_CONCURRENCY)

    async def one(route: ChannelRoute) -> dict[str, Any]:
        async with gate:
            test = await run_model_test(state, route, route.test_model)
        enabled = test["success"] and await asyncio.to_thread(auto_enable_channel, state, route, test)
        return {"channel_id": route.id, "enabled": enabled, "test": test}

    return list(await asyncio.gather(*(one(r) for r in due)))


def auto_enable_channel(state: AppState, channel: ChannelRoute, test: dict[str, Any]) -> bool:
    """Status 1 again for a channel that is still auto-disabled (a user may have changed it meanwhile)."""
    with state.engine.begin() as conn:
        changed = conn.execute(sa.update(Channel).where(
            Channel.id == channel.id, Channel.status == STATUS_AUTO_DISABLED).values(
            status=STATUS_ENABLED, status_reason="", status_time=now_ms())).rowcount
    if changed:
        logger.warning("channel %d (%s) auto-enabled: its retest of %s passed in %.2f s", channel.id, channel.name,
                       test["model"], test["took"])
        reload_routes(state)
    return bool(changed)


async def run_model_tests(state: AppState, channel: ChannelRoute, models: Iterable[str],
                          save: bool = True) -> AsyncIterator[dict[str, Any]]:
    """Test many models, 5 at a time; yield each result as soon as it is ready."""
    gate = asyncio.Semaphore(CHANNEL_TEST_CONCURRENCY)

    async def one(model: str) -> dict[str, Any]:
        async with gate:
            return await run_model_test(state, channel, model, save)

    for task in asyncio.as_completed([one(m) for m in models]):
        yield await task


# ---- stored responses: what `previous_response_id` replays, and GET / DELETE /v1/responses/{id} ----

class ResponseStore:
    """Responses answers go through the log writer (section 14): each is journaled with one write() before its
    answer's last byte leaves, so it survives what a log row survives (a kill -9), and is written to the database
    in the writer's next batch. Until then it is read from memory: a client's next turn may continue the answer
    it has just got, at once (read your own writes)."""

    def __init__(self) -> None:
        self.pending: dict[str, dict[str, Any]] = {}  # response id -> row, until its batch is committed
        self.writer: LogWriter | None = None  # set by the LogWriter that writes them

    def remember(self, row: dict[str, Any]) -> None:
        """hot path (Responses only): no database, one journal line."""
        earlier = self.pending.get(row["id"])
        if earlier is not None and earlier["created_at"] != row["created_at"]:
            logger.error("response id clash, a bug: %s is kept for another call already; this answer is not "
                         "stored", row["id"])
            return
        self.pending[row["id"]] = row
        if self.writer is not None:
            self.writer.submit_response(row)

    def written(self, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            if self.pending.get(row["id"]) is row:  # a later answer with the same id stays
                del self.pending[row["id"]]

    @staticmethod
    def owner(caller: Caller) -> int | None:
        """Whose stored responses a caller may see: its own key's; None (any) for the admin key."""
        return None if caller.is_admin else caller.token_id

    async def chain(self, engine: sa.Engine, response_id: str,
                    caller: Caller) -> tuple[list[dict[str, Any]], str]:
        return await asyncio.to_thread(load_response_chain, engine, response_id, self.owner(caller),
                                       dict(self.pending))

    async def recall(self, engine: sa.Engine, response_id: str, caller: Caller) -> dict[str, Any] | None:
        return await asyncio.to_thread(load_stored_response, engine, response_id, self.owner(caller),
                                       dict(self.pending))

    async def forget(self, engine: sa.Engine, response_id: str, caller: Caller) -> bool:
        if response_id in self.pending and self.writer is not None:  # else its write, landing later, brings it back
            await asyncio.shield(self.writer.flush())
            self.writer.drop_response(response_id)  # still unwritten (the database is away): it never will be
        found = self.pending.pop(response_id, None) is not None
        return await asyncio.to_thread(delete_stored_response, engine, response_id, self.owner(caller)) or found


async def answer_stored_response(state: AppState, incoming: Incoming, route: RelayRoute, caller: Caller,
                                 receive: Receive, send: Send) -> None:
    """GET or DELETE /v1/responses/{id}: answered from the store, never upstream, and logged as any call."""
    response_id = incoming.path.removeprefix("/v1/responses/")
    stored = await state.responses.recall(state.engine, response_id, caller)
    call = RelayCall(request_id=incoming.request_id, started=incoming.started, endpoint=incoming.path, route=route,
                     model=stored["model"] if stored else "", body=b"", obj=None, content_type="", caller=caller,
                     ip=incoming.ip)
    if stored is None or (route.mode == Mode.RESPONSES_DELETE
                          and not await state.responses.forget(state.engine, response_id, caller)):
        error = RelayError(404, f"No response found with id '{response_id}'.", "not_found")
        body, status = route.dialect.error_body(error), 404
    elif route.mode == Mode.RESPONSES_DELETE:
        body, status = orjson.dumps({"id": response_id, "object": "response.deleted", "deleted": True}), 200
    else:
        body, status = orjson.dumps(stored["answer"]), 200
    log_call(state, call, Attempt(None, None, status), Outcome(status, None, body if status != 200 else b""))
    await send_bytes(send, status, body, "application/json", incoming.request_id)


#: RelayRoute.serve → the handler that answers it
ROUTE_HANDLERS = {"call": serve_call, "models": serve_model_list, "stored": answer_stored_response}


# ==== 6. Upstream client: the relay's HTTP/1.1 connections to upstreams, one answer at a time each ==========
# _try_channel (section 5) sends every upstream call through UpstreamPool.post. aiohttp's client spends about
# 120 µs of CPU on a request on this machine kind (c=1, in process), which was most of the gap between the gateway
# and a bare relay (bench/); this protocol over httptools (uvicorn's own parser) spends about 40. What it does not
# send itself goes through aiohttp: a channel with a proxy, a URL that needs quoting, a header with a line break.
# So do the calls off the hot path: token exchanges (Baidu, Vertex AI) and the admin's model lists. Channel tests
# are relay calls, and use this client.

UPSTREAM_IDLE_S = 15.0  # how long an idle connection is kept for the next call (aiohttp's keepalive_timeout)
UPSTREAM_HIGH_WATER = 256 * 1024  # bytes of an answer held unread before reading from the upstream pauses
#: a path and query sent as they are; anything else (a space, non-ASCII) goes through aiohttp, which quotes it
_PLAIN_TARGET = re.compile(r"[A-Za-z0-9\-._~:/?\[\]@!$&'()*+,;=%]*")


class UpstreamHeaders(dict):
    """An answer's headers by lower-case name (the first of repeated ones); get() takes any case, as aiohttp's."""

    def get(self, name: str, default: Any = None) -> Any:
        return dict.get(self, name.lower(), default)


class UpstreamAnswer:
    """An upstream's answer as the pipeline reads it, the parts of aiohttp's ClientResponse it uses: `status`,
    `headers`, `content_length`, `content.readany()` and `release()` (back to the pool when read to its end, else
    the connection closes, which stops the upstream at once)."""

    def __init__(self, connection: UpstreamConnection, read_timeout: float | None) -> None:
        self.connection = connection
        self.read_timeout = read_timeout
        self.status = 0
        self.headers = UpstreamHeaders()
        self.content_length: int | None = None
        self.content = self
        self.chunks: list[bytes] = []
        self.held = 0  # bytes in `chunks`
        self.head_done = self.complete = self.paused = self.released = False
        self.until_close = False  # neither a length nor chunks: the answer ends when the upstream closes
        self.error: BaseException | None = None
        self.waiter: asyncio.Future | None = None
        self.inflate: Any = None  # a gzip or deflate answer: the encoding until its first byte, then a decompressor

    async def wait(self) -> None:
        """Until the parser has more: sock_read's timeout of aiohttp, from the last byte that came."""
        loop = self.connection.loop
        self.waiter = waiter = loop.create_future()
        timer = loop.call_later(self.read_timeout, self.timed_out) if self.read_timeout else None
        try:
            await waiter
        finally:
            self.waiter = None
            if timer is not None:
                timer.cancel()

    def wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def timed_out(self) -> None:
        self.fail(aiohttp.SocketTimeoutError(f"Timeout on reading data from socket ({self.read_timeout:g} s)"))
        self.connection.close()

    def fail(self, error: BaseException) -> None:
        if self.error is None and not self.complete:
            self.error = error
        self.wake()

    def feed(self, data: bytes) -> None:
        if self.inflate is not None:
            if isinstance(self.inflate, str):  # "deflate" is zlib-wrapped by the RFC, raw from some servers:
                # a zlib header's low nibble is 8 (its method), which a raw deflate block's first byte is not
                raw = self.inflate == "deflate" and data[0] & 0x0F != 8
                self.inflate = zlib.decompressobj(-zlib.MAX_WBITS if raw else zlib.MAX_WBITS | 32)
            try:
                data = self.inflate.decompress(data)
            except zlib.error as exc:
                self.fail(aiohttp.ClientPayloadError(f"Can not decode content-encoding: {exc}"))
                self.connection.close()
                return
        if data:
            self.chunks.append(data)
            self.held += len(data)
            if self.held > UPSTREAM_HIGH_WATER and not self.paused:
                self.paused = True
                self.connection.transport.pause_reading()
            self.wake()

    def finish(self) -> None:
        if self.inflate is not None:
            inflate, self.inflate = self.inflate, None
            if not isinstance(inflate, str):  # a str: no byte came, nothing to inflate
                self.feed(inflate.flush())
        self.complete = True
        self.wake()

    async def readany(self) -> bytes:
        """The bytes that came since the last read (waiting for some); b"" at the answer's end."""
        while not self.chunks:
            if self.error is not None:
                raise self.error
            if self.complete:
                return b""
            await self.wait()
        data = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        self.chunks.clear()
        self.held = 0
        if self.paused:
            self.paused = False
            self.connection.transport.resume_reading()
        return data

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.connection.done(self)


class UpstreamConnection(asyncio.Protocol):
    """One connection to an upstream; httptools parses its answers, one at a time."""

    def __init__(self, pool: UpstreamPool, key: tuple[str, str, int, Any]) -> None:
        self.pool, self.key = pool, key
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.answer: UpstreamAnswer | None = None
        self.keep_alive = True
        self.closed = False
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.answer is None:  # bytes nobody asked for: the connection cannot be trusted for another call
            return self.close()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.answer.fail(aiohttp.ClientPayloadError(f"The upstream's answer is not valid HTTP: {exc}"))
            self.close()

    def eof_received(self) -> bool:
        return False  # the transport closes; connection_lost says how the answer ended

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        answer = self.answer
        if answer is None or answer.complete:
            return
        if answer.until_close and exc is None:
            answer.finish()
        elif not answer.head_done:
            answer.fail(aiohttp.ServerDisconnectedError())
        else:
            answer.fail(aiohttp.ClientPayloadError("Response payload is not completed"))

    # httptools' callbacks, in the order of an answer
    def on_header(self, name: bytes, value: bytes) -> None:
        self.answer.headers.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))

    def on_headers_complete(self) -> None:
        answer, status = self.answer, self.parser.get_status_code()
        if status < 200:  # 100 Continue, 103 Early Hints: the real answer follows
            answer.headers.clear()
            return
        answer.status, answer.head_done = status, True
        self.keep_alive = self.parser.should_keep_alive()
        headers = answer.headers
        length = headers.get("content-length")
        if length is not None and length.isdigit():
            answer.content_length = int(length)
        elif "chunked" not in headers.get("transfer-encoding", "").lower():
            answer.until_close = True
        encoding = headers.get("content-encoding", "").strip().lower()
        if encoding in ("gzip", "x-gzip", "deflate"):  # what this client asks for, as aiohttp does
            answer.inflate = encoding  # its decompressor is made when the first byte shows the wrapping
        answer.wake()

    def on_body(self, body: bytes) -> None:
        self.answer.feed(body)

    def on_message_complete(self) -> None:
        if self.answer.head_done:
            self.answer.finish()

    def done(self, answer: UpstreamAnswer) -> None:
        """The pipeline is done with `answer`: the connection serves the next call if the answer was read whole."""
        if self.answer is answer:
            self.answer = None
            if answer.complete and answer.error is None and self.keep_alive and not self.closed:
                self.pool.keep(self)
            else:
                self.close()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()
        self.pool.forget(self)


class UpstreamPool:
    """The relay's connections to upstreams, kept alive per (scheme, host, port, TLS setting)."""

    def __init__(self, connect_timeout: float, read_timeout: float) -> None:
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self.idle: dict[tuple[str, str, int, Any], list[UpstreamConnection]] = {}
        self.open: set[UpstreamConnection] = set()
        self._tls: dict[bool, Any] = {}

    async def post(self, url: str | yarl.URL, data: bytes, headers: dict[str, str], options: dict[str, Any],
                   fallback: aiohttp.ClientSession) -> UpstreamAnswer | aiohttp.ClientResponse:
        """POST `data` to `url`; what this client cannot send as it is (a proxy, credentials in the URL, a target
        or a header that needs quoting) goes through `fallback`, aiohttp's session. A yarl.URL (a signed one) is
        sent as its encoded text."""
        target = None if "proxy" in options or httptools is None else _upstream_target(str(url))
        request = _request_head(target, headers, len(data)) if target is not None else None
        if request is None:
            return await fallback.post(url, data=data, headers=headers, **options)
        connection = await self.connection((*target[:3], options.get("ssl", True)))
        answer = connection.answer = UpstreamAnswer(connection, self.read_timeout)
        try:
            connection.transport.writelines((request, data))  # one writev() where the loop has it (uvloop)
            while not answer.head_done:
                if answer.error is not None:
                    raise answer.error
                await answer.wait()
        except BaseException:
            answer.release()
            raise
        return answer

    async def connection(self, key: tuple[str, str, int, Any]) -> UpstreamConnection:
        idle = self.idle.get(key)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if not connection.closed and now - connection.idle_since < UPSTREAM_IDLE_S:
                return connection
            connection.close()
        scheme, host, port, verify = key
        tls = self.tls(verify) if scheme == "https" else None
        loop = asyncio.get_running_loop()
        _, connection = await asyncio.wait_for(
            loop.create_connection(lambda: UpstreamConnection(self, key), host, port, ssl=tls,
                                   server_hostname=host if tls else None),
            self.connect_timeout or None)
        self.open.add(connection)
        return connection

    def tls(self, verify: Any) -> Any:
        """aiohttp's `ssl=` values: the default checks certificates, False does not."""
        context = self._tls.get(verify is not False)
        if context is None:
            context = self._tls[verify is not False] = ssl.create_default_context()
            if verify is False:
                context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        return context

    def keep(self, connection: UpstreamConnection) -> None:
        now = connection.idle_since = time.monotonic()
        idle = self.idle.setdefault(connection.key, [])
        while idle and now - idle[0].idle_since >= UPSTREAM_IDLE_S:  # the oldest first: no call took them
            idle[0].close()
        idle.append(connection)

    def forget(self, connection: UpstreamConnection) -> None:
        self.open.discard(connection)
        idle = self.idle.get(connection.key)
        if idle and connection in idle:
            idle.remove(connection)

    def close(self) -> None:
        for connection in list(self.open):
            connection.close()
        self.idle.clear()


@functools.lru_cache(maxsize=1024)
def _upstream_target(url: str) -> tuple[str, str, int, bytes] | None:
    """(scheme, host, port, the request line and Host header) of a URL this client sends as it is, else None."""
    parts = urllib.parse.urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc \
            or not _PLAIN_TARGET.fullmatch(path):
        return None
    default_port = 443 if parts.scheme == "https" else 80
    try:
        port = parts.port or default_port
    except ValueError:  # not a number, or out of range
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    start = f"POST {path} HTTP/1.1\r\nHost: {host if port == default_port else f'{host}:{port}'}\r\n".encode()
    return parts.scheme, parts.hostname, port, start


def _request_head(target: tuple[str, str, int, bytes], headers: dict[str, str], length: int) -> bytes | None:
    """The request's head: its line, the channel's headers, and what aiohttp adds (none that the channel set);
    None for a header that would need escaping (a line break in a key pasted with it)."""
    given = {name.lower() for name in headers}
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    if lines.count("\n") != len(headers) or lines.count("\r") != len(headers):
        return None
    start = target[3]
    if "host" in given:
        start = start.split(b"\r\n", 1)[0] + b"\r\n"
    extra = "".join(f"{name}: {value}\r\n" for name, value in (
        ("Accept", "*/*"), ("Accept-Encoding", "gzip, deflate"), ("User-Agent", f"aiproxy-local/{__version__}"),
        ("Content-Length", str(length))) if name.lower() not in given)
    return start + (lines + extra).encode("utf-8", "surrogateescape") + b"\r\n"


# ==== 7. OpenAI & Azure: the wire format of the pivot itself ================================================
# OpenAI's chat is the pivot, so the Adaptor and Dialect of the relay contract are OpenAI's already; what remains
# is the hot path's pass-through stream (usage read only from the events that carry it) and Azure's deployment
# URLs, which take OpenAI's bodies as they are.

_USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')

# -- the fields of an OpenAI request that the converters to other formats read (Dialect.shape, check_shape) --
_OPENAI_PART = {"type": str, "text": str, "image_url": Either(str, {"url": str, "detail": str}),
                "input_audio": {"format": str, "data": str}, "file": {"file_data": str, "filename": str}}
_OPENAI_CONTENT = Either(str, [_OPENAI_PART])
_OPENAI_MESSAGE = {
    "role": str, "content": _OPENAI_CONTENT, "name": str, "tool_call_id": str, "reasoning_content": str,
    "tool_calls": [{"id": str, "type": str, "function": {"name": str, "arguments": Either(str, dict)}}],
}
_OPENAI_OPTIONS = {"model": str, "stream": bool, "stream_options": dict, "temperature": NUMBER, "top_p": NUMBER,
                   "max_tokens": NUMBER, "max_completion_tokens": NUMBER, "n": NUMBER, "seed": NUMBER,
                   "presence_penalty": NUMBER, "frequency_penalty": NUMBER, "stop": Either(str, [str]),
                   "user": str}
OPENAI_SHAPES: dict[Mode, Any] = {
    Mode.CHAT_COMPLETIONS: {
        **_OPENAI_OPTIONS, "messages": [_OPENAI_MESSAGE],
        "tools": [{"type": str, "function": {"name": str, "description": str, "parameters": dict, "strict": bool}}],
        "tool_choice": Either(str, {"type": str, "function": {"name": str}}), "parallel_tool_calls": bool,
        "response_format": {"type": str, "json_schema": {"name": str, "schema": dict, "strict": bool}},
        "reasoning_effort": str,
    },
    Mode.COMPLETIONS: {**_OPENAI_OPTIONS, "prompt": Either(str, list)},
    Mode.EMBEDDINGS: {"model": str, "input": Either(str, list), "dimensions": NUMBER, "encoding_format": str},
}


def model_rename(call: RelayCall, channel: ChannelRoute, json_field: str = "") -> tuple[bytes, bytes] | None:
    """(the upstream's model, the client's) for a pass-through stream to rename back, None when not mapped;
    with `json_field`, each as that JSON field (`"modelVersion":"…"`)."""
    upstream = channel.upstream_model(call.model)
    if upstream == call.model:
        return None
    if json_field:
        return f'"{json_field}":"{upstream}"'.encode(), f'"{json_field}":"{call.model}"'.encode()
    return upstream.encode(), call.model.encode()


def _rewrite_model(chunk: bytes, upstream: bytes, requested: bytes) -> bytes:
    return chunk.replace(b'"model":"' + upstream + b'"', b'"model":"' + requested + b'"').replace(
        b'"model": "' + upstream + b'"', b'"model": "' + requested + b'"')


class OpenAIPassthrough(StreamFilter):
    """hot path: an OpenAI stream for an OpenAI client. Only events that carry usage are parsed; the usage-only
    chunk the gateway asked for is dropped when the client did not ask for it; a mapped model is renamed back."""

    def __init__(self, call: RelayCall, channel: ChannelRoute) -> None:
        self.keep_usage_only = call.client_wants_usage
        self.rename = model_rename(call, channel)

    def feed(self, events: bytes) -> bytes:
        self.events += events.count(b"data:")
        if _USAGE_OBJECT.search(events):
            events = self._take_usage(events)
        if self.rename:
            events = _rewrite_model(events, *self.rename)
        return events

    def _take_usage(self, events: bytes) -> bytes:
        sep = b"\r\n\r\n" if b"\r\n\r\n" in events else b"\n\n"
        kept = []
        for event in events.split(sep):
            if _USAGE_OBJECT.search(event):
                payload = event.strip()
                payload = payload[5:] if payload.startswith(b"data:") else payload
                obj = loads_object(payload)
                self.usage = usage_from(obj) or self.usage
                if not self.keep_usage_only and obj is not None and not obj.get("choices"):
                    continue
            kept.append(event)
        return sep.join(kept)




# ---- OpenAI's reasoning models (o-series, gpt-5 family) ----
# They refuse `max_tokens` (they want `max_completion_tokens`) and a temperature or top_p other than 1; the other
# models refuse `reasoning_effort`. A body converted from another format carries whichever it had: fitted here on
# OpenAI and Azure channels (fit_upstream_body, section 5).

_OPENAI_REASONING_MODEL = re.compile(r"(o\d|gpt-5(?!-chat))")


def openai_reasoning_model(model: str) -> bool:
    return _OPENAI_REASONING_MODEL.match(model.rpartition("/")[2]) is not None


def fit_openai_reasoning(body: dict[str, Any], model: str, notes: list[str]) -> None:
    if not openai_reasoning_model(model):
        if body.pop("reasoning_effort", None) is not None:
            notes.append("reasoning_effort dropped (not a reasoning model)")
        return
    if "max_tokens" in body:
        value = body.pop("max_tokens")
        body.setdefault("max_completion_tokens", value)
        notes.append("max_tokens → max_completion_tokens")
    for name in ("temperature", "top_p"):
        if body.get(name) not in (None, 1):
            notes.append(f"{name} {body.pop(name)} dropped (a reasoning model takes only 1)")


# ---- Azure OpenAI: OpenAI's bodies at deployment URLs ----

AZURE_API_VERSION = "2025-04-01-preview"  # aiproxy's default when the key names none (keyFormat key|api_version?)


def azure_api_version(channel: ChannelRoute) -> str:
    return urllib.parse.quote(channel.key_parts.get("api_version") or AZURE_API_VERSION)


class AzureAdaptor(Adaptor):
    """`{base}/openai/deployments/{deployment}/{op}?api-version=…` with an `api-key` header. The deployment is
    the model's mapped name when the channel maps it, else the model name, without its dots for type 3
    (aiproxy's convention: gpt-4.1 → gpt-41) and as it is for type 4."""

    title = "Azure OpenAI"
    openai_models = True
    modes = frozenset({Mode.CHAT_COMPLETIONS, Mode.COMPLETIONS, Mode.EMBEDDINGS, Mode.IMAGES_GENERATIONS,
                       Mode.AUDIO_SPEECH, Mode.AUDIO_TRANSCRIPTION, Mode.AUDIO_TRANSLATION})

    def __init__(self, keep_dots: bool) -> None:
        self.keep_dots = keep_dots

    def deployment(self, channel: ChannelRoute, model: str) -> str:
        mapped = channel.mapping.get(model) or (None if model in channel.models else channel.pattern_target(model))
        return mapped or (model if self.keep_dots else model.replace(".", ""))

    def build_url(self, channel: ChannelRoute, call: RelayCall) -> str:
        path = call.upstream_path if self.speaks(call) else OPENAI_PATHS[call.op]
        deployment = urllib.parse.quote(self.deployment(channel, call.model), safe="")
        return (f"{channel.base_url.rstrip('/')}/openai/deployments/{deployment}{path}"
                f"?api-version={azure_api_version(channel)}")

    def build_headers(self, channel: ChannelRoute, call: RelayCall | None = None) -> dict[str, str]:
        return {"api-key": channel.key_parts.get("key", channel.key)}

    def models_request(self, channel: ChannelRoute) -> tuple[str, dict[str, str]]:
        return (f"{channel.base_url.rstrip('/')}/openai/models?api-version={azure_api_version(channel)}",
                self.build_headers(channel))


# ---- OpenAI-style providers that differ: a key to split or exchange, a kind at a path or in a body of its own ----
# Each is checked against its provider's documented endpoints by tests/test_catalog.py (tests/provider_docs.py).

def api_root(base_url: str, suffix: str) -> str:
    """A base URL without its OpenAI-compatibility suffix: the API's own root, where a provider serves a kind
    natively beside its compatibility path (a proxy's own prefix before it is kept)."""
    base = base_url.rstrip("/")
    return base[: -len(suffix)] if suffix and base.endswith(suffix) else base


def _documents(value: Any) -> list[str]:
    """A rerank request's documents as texts (strings, or Jina's `{"text": ...}` objects)."""
    if not isinstance(value, list):
        raise RelayError(400, "'documents' must be a list.", "invalid_request")
    return [d if isinstance(d, str) else str(d.get("text", "")) if isinstance(d, dict) else str(d) for d in value]


def rerank_answer(call: RelayCall, scored: list[tuple[int, float]], total_tokens: int = 0,
                  answer_id: str = "") -> dict[str, Any]:
    """Cohere's (and Jina's) rerank answer from (index, score) pairs: best first, `top_n` kept, documents
    returned when asked."""
    body = call.obj or {}
    docs = body.get("documents") if isinstance(body.get("documents"), list) else []
    top_n = body.get("top_n") if type(body.get("top_n")) is int and body["top_n"] > 0 else None
    ranked = sorted(scored, key=lambda pair: -pair[1])[:top_n]
    results = []
    for index, score in ranked:
        item: dict[str, Any] = {"index": index, "relevance_score": float(score)}
        if body.get("return_documents") and 0 <= index < len(docs):
            item["document"] = docs[index] if isinstance(docs[index], dict) else {"text": docs[index]}
        results.append(item)
    usage = {"prompt_tokens": total_tokens, "total_tokens": total_tokens}
    return {"id": answer_id or f"rerank-{call.request_id}", "model": call.model, "results": results, "usage": usage}


class NativeOpsAdaptor(Adaptor):
    """An OpenAI-style provider that serves some operations (`native`) with bodies of its own: for those the
    OpenAI body (the client's, or the pivot) goes through to_native and the answer back through from_native."""

    native: frozenset[Mode] = frozenset()

    def convert_request(self, call: RelayCall, channel: ChannelRoute) -> bytes:
        if call.op not in self.native:
            return super().convert_request(call, channel)
        body = call.obj if self.speaks(call) else call.pivot()
        if body is None:
            raise RelayError(400, f"{call.endpoint} needs a JSON body.", "invalid_request")
        return orjson.dumps(self.to_native(call.op, dict(body, model=channel.upstream_model(call.model)), channel))

    def convert_response(self, call: RelayCall, body: bytes) -> tuple[bytes, Usage | None]:
        if call.op not in self.native:
            return super().convert_response(call, body)
        answer, usage = self.from_native(call, body)
        return (orjson.dumps(answer) if self.speaks(call) else call.dialect.response_from_pivot(call, answer)), usage

    def to_native(self, op: Mode, body: dict[str, Any], channel: ChannelRoute) -> dict[str, Any]:
        raise NotImplementedError

    def from_native(self, call: RelayCall, body: bytes) -> tuple[dict[str, Any], Usage | None]:
        raise NotImplementedError


BAIDU_IAM_URL = "https://iam.bj.baidubce.com"
BAIDU_TOKEN_SECONDS = 86400  # a day, as aiproxy asks for; used until TOKEN_REFRESH_MARGIN_S before it expires
TOKEN_REFRESH_MARGIN_S = 600


def bce_auth_v1(ak: str, sk: str, method: str, url: str, headers: dict[str, str], when: float,
                expires_s: int = 1800) -> str:
    """Baidu Cloud's `bce-auth-v1` authorization of a request (cloud.baidu.com/doc/Reference/s/njwvz1yfu):
    HMAC-SHA256 of the canonical request (method, path, sorted query, signed headers) with a key derived from
    the SK and the prefix `bce-auth-v1/{ak}/{timestamp}/{expires}`."""
    parts = urllib.parse.urlsplit(url)

    def enc(text: str, keep_slash: bool = False) -> str:
        return urllib.parse.quote(text, safe="-_.~" + ("/" if keep_slash else ""))

    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    canonical_query = "&".join(sorted(f"{enc(k)}={enc(v)}" for k, v in query))
    signed = sorted(h.lower() for h in headers)
    canonical_headers = "\n".join(sorted(f"{enc(h.lower())}:{enc(v.strip())}" for h, v in headers.items()))
    canonical = "\n".join([method.upper(), enc(parts.path or "/", keep_slash=True), canonical_query,
                           canonical_headers])
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
    prefix = f"bce-auth-v1/{ak}/{stamp}/{expires_s}"
    signing_key = hmac.new(sk.encode(), prefix.encode(), hashlib.sha256).hexdigest()
    signature = hmac.new(signing_key.encode(), canonical.encode(), hashlib.sha256).hexdigest()
    return f"{prefix}/{';'.join(signed)}/{signature}"


class BaiduV2Adaptor(Adaptor):
    """Qianfan v2 (types 13 and 49): OpenAI's bodies; rerank at `/rerankers`. A `bce-v3/…` API key is sent as
    it is; an `ak|sk` key (type 13) is exchanged for an IAM BearerToken (GET /v1/BCE-BEARER/token, signed
    bce-auth-v1), cached until shortly before it expires. The IAM host is Baidu's, or a private base URL's own."""

    title = "Baidu Qianfan"

    def __init__(self) -> None:
        self.tokens: dict[str, tuple[str, float]] = {}  # "ak|sk" -> (token, expires at)
        self.locks: dict[str, asyncio.Lock] = {}

    def build_url(self, channel: ChannelRoute, call: RelayCall) -> str:
        if call.op == Mode.RERANK:
            return channel.base_url.rstrip("/") + "/rerankers"
        return super().build_url(channel, call)

    @staticmethod
    def _ak_sk(channel: ChannelRoute) -> tuple[str, str] | None:
        parts = channel.key_parts
        return (parts["ak"], parts["sk"]) if parts.get("ak") and parts.get("sk") else None

    def build_headers(self, channel: ChannelRoute, call: RelayCall | None = None) -> dict[str, str]:
        if self._ak_sk(channel) is None:
            return {"Authorization": f"Bearer {channel.key_parts.get('api_key') or channel.key}"}
        token, _ = self.tokens.get(channel.key, ("", 0.0))
        return {"Authorization": f"Bearer {token}"}

    async def authorize(self, state: AppState, channel: ChannelRoute) -> None:
        pair = self._ak_sk(channel)
        if pair is None or self.tokens.get(channel.key, ("", 0.0))[1] - TOKEN_REFRESH_MARGIN_S > time.time():
            return
        async with self.locks.setdefault(channel.key, asyncio.Lock()):
            if self.tokens.get(channel.key, ("", 0.0))[1] - TOKEN_REFRESH_MARGIN_S > time.time():
                return  # another call fetched it meanwhile
            self.tokens[channel.key] = await self.fetch_token(state, channel, *pair)

    async def fetch_token(self, state: AppState, channel: ChannelRoute, ak: str, sk: str) -> tuple[str, float]:
        base = urllib.parse.urlsplit(channel.base_url)
        iam = BAIDU_IAM_URL if (base.hostname or "").endswith("baidubce.com") else f"{base.scheme}://{base.netloc}"
        url = f"{iam}/v1/BCE-BEARER/token?expireInSeconds={BAIDU_TOKEN_SECONDS}"
        now = time.time()
        host = urllib.parse.urlsplit(url).netloc
        signed = {"Host": host, "x-bce-date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))}
        headers = {**signed, "Authorization": bce_auth_v1(ak, sk, "GET", url, signed, now)}
        try:
            session, options = channel_http(state, channel)
            async with session.get(url, headers=headers, **options) as resp:
                status, body = resp.status, await resp.read()
        except _UPSTREAM_ERRORS as exc:
            raise upstream_failure(exc, url, state.settings) from None
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            answer = None
        if status != 200 or not isinstance(answer, dict) or not answer.get("token"):
            why = answer.get("message") if isinstance(answer, dict) else body[:200].decode("utf-8", "replace")
            raise RelayError(401 if status in (401, 403) else 502,
                             f"Baidu IAM refused to exchange the channel's AK/SK for a token (HTTP {status}: {why})",
                             "baidu_token_failed", "upstream_error")
        try:
            expires = datetime.strptime(answer["expireTime"][:19], "%Y-%m-%dT%H:%M:%S").replace(
                tzinfo=timezone.utc).timestamp()
        except (KeyError, TypeError, ValueError):
            expires = now + BAIDU_TOKEN_SECONDS
        return str(answer["token"]), expires


class MiniMaxAdaptor(NativeOpsAdaptor):
    """MiniMax (type 27): chat is OpenAI's; an `api_key|group_id` key sends only the API key, and the group id
    as `GroupId` where MiniMax wants it; embeddings are `{model, texts, type}` -> `{vectors, total_tokens}`."""

    title = "MiniMax"
    native = frozenset({Mode.EMBEDDINGS})
    modes = frozenset({Mode.CHAT_COMPLETIONS, Mode.EMBEDDINGS})

    def build_headers(self, channel: ChannelRoute, call: RelayCall | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {channel.key_parts.get('api_key') or channel.key}"}

    def build_url(self, channel: ChannelRoute, call: RelayCall) -> str:
        url = super().build_url(channel, call)
        group = channel.key_parts.get("group_id")
        if call.op == Mode.EMBEDDINGS and group:
            url += "?GroupId=" + urllib.parse.quote(group)
        return url

    def to_native(self, op: Mode, body: dict[str, Any], channel: ChannelRoute) -> dict[str, Any]:
        texts = body.get("input")
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise RelayError(400, "MiniMax embeds text only: 'input' must be a string or a list of strings.",
                             "invalid_request")
        kind = body.get("type") if body.get("type") in ("db", "query") else "db"
        return {"model": body["model"], "texts": texts, "type": kind}

    def from_native(self, call: RelayCall, body: bytes) -> tuple[dict[str, Any], Usage | None]:
        answer = json_object(body, "MiniMax's answer")
        status = answer.get("base_resp") or {}
        if status.get("status_code") not in (None, 0):
            raise RelayError(502, f"MiniMax: {status.get('status_msg') or status}", "upstream_error",
                             "upstream_error")
        vectors = answer.get("vectors") or []
        tokens = int(answer.get("total_tokens") or 0)
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
        return ({"object": "list", "model": call.model, "data": data,
                 "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}, Usage(tokens, 0, tokens))


class AliAdaptor(NativeOpsAdaptor):
    """Alibaba Model Studio (type 17): chat and embeddings at `/compatible-mode/v1`; rerank at DashScope's own
    `/api/v1/services/rerank/text-rerank/text-rerank` with `{model, input: {query, documents}, parameters}`."""

    title = "Alibaba DashScope"
    native = frozenset({Mode.RERANK})
    modes = frozenset({Mode.CHAT_COMPLETIONS, Mode.COMPLETIONS, Mode.EMBEDDINGS, Mode.RERANK})

    def build_url(self, channel: ChannelRoute, call: RelayCall) -> str:
        if call.op == Mode.RERANK:
            return api_root(channel.base_url, "/compatible-mode/v1") + "/api/v1/services/rerank/text-rerank/text-rerank"
        return super().build_url(channel, call)

    def to_native(self, op: Mode, body: dict[str, Any], channel: ChannelRoute) -> dict[str, Any]:
        parameters: dict[str, Any] = {"return_documents": bool(body.get("return_documents"))}
        if type(body.get("top_n")) is int:
            parameters["top_n"] = body["top_n"]
        return {"model": body["model"], "input": {"query": str(body.get("query", "")),
                                                  "documents": _documents(body.get("documents"))},
                "parameters": parameters}

    def from_native(self, call: RelayCall, body: bytes) -> tuple[dict[str, Any], Usage | None]:
        answer = json_object(body, "DashScope's answer")
        results = (answer.get("output") or {}).get("results") or []
        tokens = int((answer.get("usage") or {}).get("total_tokens") or 0)
        scored = [(int(r["index"]), float(r["relevance_score"])) for r in results if isinstance(r, dict)]
        return rerank_answer(call, scored, tokens, str(answer.get("request_id") or "")), Usage(tokens, 0, tokens)

    def convert_error(self, status: int, body: bytes) -> RelayError:
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError:
            obj = None
        if isinstance(obj, dict) and isinstance(obj.get("message"), str) and "error" not in obj:
            return RelayError(status, obj["message"], obj.get("code") or "upstream_error", "upstream_error")
        return super().convert_error(status, body)


class TEIAdaptor(NativeOpsAdaptor):
    """Hugging Face text-embeddings-inference (type 48): embeddings at its OpenAI route `/v1/embeddings`; rerank
    at `/rerank` with `{query, texts}`, answered `[{index, score}]`."""

    title = "Text Embeddings Inference"
    native = frozenset({Mode.RERANK})
    modes = frozenset({Mode.EMBEDDINGS, Mode.RERANK})

    def build_url(self, channel: ChannelRoute, call: RelayCall) -> str:
        root = api_root(channel.base_url, "/v1")
        return root + ("/rerank" if call.op == Mode.RERANK else "/v1/embeddings")

    def to_native(self, op: Mode, body: dict[str, Any], channel: ChannelRoute) -> dict[str, Any]:
        return {"query": str(body.get("query", "")), "texts": _documents(body.get("documents")),
                "return_text": False}

    def from_native(self, call: RelayCall, body: bytes) -> tuple[dict[str, Any], Usage | None]:
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            answer = None
        if not isinstance(answer, list):
            raise RelayError(502, "TEI's rerank answer is not a list.", "bad_upstream_answer", "upstream_error")
        scored = [(int(r["index"]), float(r["score"])) for r in answer if isinstance(r, dict)]
        return rerank_answer(call, scored), Usage()  # TEI counts no tokens


class CohereAdaptor(Adaptor):
    """Cohere (type 35): chat and embeddings at its Compatibility API (`/compatibility/v1`); rerank at its own
    `/v2/rerank`, whose body and answer are the shape the gateway's /v1/rerank already speaks."""

    title = "Cohere"
    modes = frozenset({Mode.CHAT_COMPLETIONS, Mode.EMBEDDINGS, Mode.RERANK})

    def build_url(self, channel: ChannelRoute, call: RelayCall) -> str:
        if call.op == Mode.RERANK:
            return api_root(channel.base_url, "/compatibility/v1") + "/v2/rerank"
        return super().build_url(channel, call)


FAKE_TEXT = "This is a fake answer from aiproxy-local: no model was called."


class FakeAdaptor(Adaptor):
    """Type 53: answers every call itself, in OpenAI's wire format, streamed or not, with usage; never calls out.
    The channel's config may set `static_text` (aiproxy's field)."""

    title = "Fake"
    modes = frozenset({Mode.CHAT_COMPLETIONS, Mode.COMPLETIONS, Mode.EMBEDDINGS, Mode.RERANK,
                       Mode.IMAGES_GENERATIONS, Mode.MODERATIONS})

    def local_answer(self, call: RelayCall, channel: ChannelRoute) -> LocalResponse | None:
        body = (call.obj if self.speaks(call) else call.pivot()) or {}
        prompt = estimate_tokens(len(orjson.dumps(body.get("messages") or body.get("input") or body.get("query")
                                                  or body.get("prompt") or "")))
        created, model = int(call.started), call.model
        if call.op == Mode.EMBEDDINGS:
            inputs = body.get("input") if isinstance(body.get("input"), list) else [body.get("input")]
            data = [{"object": "embedding", "index": i, "embedding": [round(0.1 * (i + 1), 3)] * 8}
                    for i in range(len(inputs))]
            return self._json({"object": "list", "model": model, "data": data,
                               "usage": {"prompt_tokens": prompt, "total_tokens": prompt}})
        if call.op == Mode.RERANK:
            docs = body.get("documents") if isinstance(body.get("documents"), list) else []
            return self._json(rerank_answer(call, [(i, 1.0 - i / (len(docs) + 1)) for i in range(len(docs))], prompt))
        if call.op == Mode.IMAGES_GENERATIONS:
            return self._json({"created": created, "data": [{"url": "https://fake.local/image.png",
                                                             "revised_prompt": str(body.get("prompt", ""))}]})
        if call.op == Mode.MODERATIONS:
            return self._json({"id": f"modr-{call.request_id}", "model": model, "results": [
                {"flagged": False, "categories": {}, "category_scores": {}}]})
        text = str((channel.config.get("static_text") or FAKE_TEXT))
        words = text.split(" ")
        usage = {"prompt_tokens": prompt, "completion_tokens": len(words), "total_tokens": prompt + len(words)}
        head = {"id": f"chatcmpl-{call.request_id}", "created": created, "model": model}
        if not call.stream:
            return self._json({**head, "object": "chat.completion", "usage": usage, "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]})
        pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
        events = [sse({**head, "object": "chat.completion.chunk", "choices": [
            {"index": 0, "delta": {"role": "assistant", "content": piece} if i == 0 else {"content": piece},
             "finish_reason": None}]}) for i, piece in enumerate(pieces)]
        events.append(sse({**head, "object": "chat.completion.chunk", "choices": [
            {"index": 0, "delta": {}, "finish_reason": "stop"}]}))
        events.append(sse({**head, "object": "chat.completion.chunk", "choices": [], "usage": usage}))
        return LocalResponse(200, b"".join(events) + b"data: [DONE]\n\n", "text/event-stream")

    @staticmethod
    def _json(obj: dict[str, Any]) -> LocalResponse:
        return LocalResponse(200, orjson.dumps(obj))


class FakeErrorAdaptor(FakeAdaptor):
    """Type 55: answers every call with the error its channel's config names (aiproxy's `error_status_code`,
    `error_message`, `error_code`; 400 "fake error" by default)."""

    title = "Fake error"

    def local_answer(self, call: RelayCall, channel: ChannelRoute) -> LocalResponse | None:
        config = channel.config
        status = config.get("error_status_code")
        status = status if type(status) is int and 400 <= status <= 599 else 400
        message = str(config.get("error_message") or "fake error")
        return LocalResponse(status, openai_error(status, message, str(config.get("error_code") or "fake_error"),
                                                  "upstream_error"))


# ==== 8. Anthropic Messages: the upstream of type 14, and the client door /v1/messages ======================
# docs.anthropic.com: Messages, streaming events, errors; aiproxy's core/relay/adaptor/anthropic and
# openai/claude.go make the same two conversions. Anthropic's input_tokens leaves out cache reads and writes, and
# the pivot's prompt_tokens counts them all.

ANTHROPIC_VERSION = "2023-06-01"
#: reasoning_effort → thinking.budget_tokens (Anthropic's minimum budget is 1024)
ANTHROPIC_THINKING_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576}
#: max_tokens is required by Anthropic and often absent from OpenAI requests: each model's output limit, first match
ANTHROPIC_MAX_TOKENS = (("opus-4-5", 64000), ("opus-4", 32000), ("sonnet-4", 64000), ("haiku-4", 64000),
                        ("3-7-sonnet", 64000), ("3-5", 8192))
ANTHROPIC_MAX_TOKENS_DEFAULT = 4096  # the Claude 3 models' limit
ANTHROPIC_MIN_THINKING_BUDGET = 1024
_ANTHROPIC_STOPS = {"end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop", "max_tokens": "length",
                    "tool_use": "tool_calls", "refusal": "content_filter"}
_OPENAI_STOPS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
                 "content_filter": "refusal"}
_ANTHROPIC_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
                          403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                          429: "rate_limit_error", 500: "api_error", 504: "timeout_error", 529: "overloaded_error"}
_ANTHROPIC_ERROR_STATUS = {kind: status for status, kind in _ANTHROPIC_ERROR_TYPES.items()}
_USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


def anthropic_max_tokens(model: str) -> int:
    """The max_tokens an OpenAI request without one gets: the model's output limit from the model snapshot, else
    the table above."""
    return model_output_limit(model, 14) or next(
        (limit for hint, limit in ANTHROPIC_MAX_TOKENS if hint in model), ANTHROPIC_MAX_TOKENS_DEFAULT)


def anthropic_usage(u: Any) -> Usage | None:
    if not isinstance(u, dict):
        return None
    read, written = int(u.get("cache_read_input_tokens") or 0), int(u.get("cache_creation_input_tokens") or 0)
    prompt, output = int(u.get("input_tokens") or 0) + read + written, int(u.get("output_tokens") or 0)
    return Usage(prompt, output, prompt + output, read, cache_write_tokens=written)


def usage_to_anthropic(usage: Usage | None) -> dict[str, int]:
    usage = usage or Usage()
    return {"input_tokens": usage.input_tokens - usage.cached_tokens - usage.cache_write_tokens,
            "output_tokens": usage.output_tokens,
            "cache_read_input_tokens": usage.cached_tokens, "cache_creation_input_tokens": usage.cache_write_tokens}


def anthropic_error_type(status: int) -> str:
    return _ANTHROPIC_ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")


def read_anthropic_error(status: int, body: bytes) -> RelayError:
    obj = loads_object(body)
    error = obj.get("error") if obj and obj.get("type") == "error" else None
    if not isinstance(error, dict):
        return read_openai_error(status, body)
    kind = str(error.get("type") or anthropic_error_type(status))
    return RelayError(status, str(error.get("message") or kind), kind, kind)


# -- pivot → Anthropic (an OpenAI client, or the pivot of any other, on an Anthropic channel) --

def _anthropic_image(url: str) -> dict[str, Any]:
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        return {"type": "image", "source": {"type": "base64", "media_type": header[5:].split(";")[0] or "image/png",
                                            "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _anthropic_user_blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for part in content if isinstance(content, list) else []:
        kind = part.get("type")
        if kind == "text" and part.get("text"):
            blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if isinstance(url, str) and url:
                blocks.append(_anthropic_image(url))
        elif kind == "file" and str((part.get("file") or {}).get("file_data", "")).startswith("data:"):
            header, _, data = part["file"]["file_data"].partition(",")
            blocks.append({"type": "document", "source": {"type": "base64", "media_type": header[5:].split(";")[0],
                                                          "data": data}})
    return blocks


def _anthropic_assistant_blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    # reasoning_content has no signature to go back with, and Anthropic refuses an unsigned thinking block
    text = _text_of(message.get("content"))
    blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    for i, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function") or {}
        blocks.append({"type": "tool_use", "id": call.get("id") or f"toolu_{i}", "name": function.get("name") or "",
                       "input": _arguments(function.get("arguments"))})
    return blocks


def _anthropic_tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    if isinstance(choice, dict):
        result = {"type": "tool", "name": (choice.get("function") or {}).get("name", "")}
    else:
        result = {"type": {"none": "none", "required": "any", "auto": "auto"}.get(choice, "auto")}
    if parallel is False and result["type"] != "none":
        result["disable_parallel_tool_use"] = True
    return result if choice is not None or parallel is False else None


def fold_turns(chat: dict[str, Any], system_block: Callable[[str], dict[str, Any]],
               tool_result_block: Callable[[str, str], dict[str, Any]],
               assistant_blocks: Callable[[dict[str, Any]], list[dict[str, Any]]],
               user_blocks: Callable[[Any], list[dict[str, Any]]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """An OpenAI chat's system texts as blocks apart, and its other messages as turns of blocks that alternate,
    as Anthropic's Messages and Bedrock's Converse want them: a tool result is a user turn, and turns of one role
    merge. The block shapes are the format's own."""
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    for message in chat.get("messages") or []:
        role = message.get("role")
        if role in ("system", "developer"):
            text = _text_of(message.get("content"))
            system += [system_block(text)] if text else []
            continue
        if role == "tool":
            role, blocks = "user", [tool_result_block(message.get("tool_call_id") or "",
                                                      _text_of(message.get("content")))]
        elif role == "assistant":
            blocks = assistant_blocks(message)
        else:
            role, blocks = "user", user_blocks(message.get("content"))
        if not blocks:
            continue
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"] += blocks
        else:
            messages.append({"role": role, "content": blocks})
    return system, messages


def openai_to_anthropic_request(chat: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI chat request as an Anthropic Messages request. System messages become `system`; tool results
    become user turns; consecutive turns of one role merge, as Anthropic wants them to alternate."""
    system, messages = fold_turns(
        chat, lambda text: {"type": "text", "text": text},
        lambda call_id, text: {"type": "tool_result", "tool_use_id": call_id, "content": text},
        _anthropic_assistant_blocks, _anthropic_user_blocks)
    body: dict[str, Any] = {"model": model, "messages": messages,
                            "max_tokens": chat.get("max_completion_tokens") or chat.get("max_tokens")
                            or anthropic_max_tokens(model)}
    if system:
        body["system"] = system
    stop = chat.get("stop")
    if stop:
        body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    body.update({name: chat[name] for name in ("temperature", "top_p") if chat.get(name) is not None})
    functions = [t.get("function") or {} for t in chat.get("tools") or [] if t.get("type", "function") == "function"]
    if functions:
        body["tools"] = [{"name": f.get("name", ""), "input_schema": {"type": "object", **(f.get("parameters") or {})},
                          **({"description": f["description"]} if f.get("description") else {})} for f in functions]
        choice = _anthropic_tool_choice(chat.get("tool_choice"), chat.get("parallel_tool_calls"))
        if choice:
            body["tool_choice"] = choice
    budget = ANTHROPIC_THINKING_BUDGETS.get(chat.get("reasoning_effort"))
    # an earlier tool call would need its turn's signed thinking block, which an OpenAI client cannot send back
    if budget and not any(m.get("tool_calls") for m in chat.get("messages") or []):
        body["thinking"] = {"type": "enabled", "budget_tokens": budget}
        if body["max_tokens"] <= budget:
            body["max_tokens"] += budget
        body.pop("temperature", None)  # thinking runs at temperature 1, and top_p only from 0.95
        if body.get("top_p", 1) < 0.95:
            body.pop("top_p")
    response_format = chat.get("response_format") if isinstance(chat.get("response_format"), dict) else {}
    schema = (response_format.get("json_schema") or {}).get("schema") if response_format.get(
        "type") == "json_schema" else None
    if isinstance(schema, dict):  # Anthropic's structured outputs
        body["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
    if isinstance(chat.get("user"), str):
        body["metadata"] = {"user_id": chat["user"]}
    if chat.get("stream"):
        body["stream"] = True
    return body


def anthropic_to_openai_response(message: dict[str, Any], model: str) -> tuple[dict[str, Any], Usage | None]:
    text, thinking, calls = [], [], []
    for block in message.get("content") or []:
        kind = block.get("type")
        if kind == "text":
            text.append(block.get("text", ""))
        elif kind == "thinking":
            thinking.append(block.get("thinking", ""))
        elif kind == "tool_use":
            calls.append({"id": block.get("id"), "type": "function", "function": {
                "name": block.get("name"), "arguments": orjson.dumps(block.get("input") or {}).decode()}})
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text or not calls else None}
    if thinking:
        reply["reasoning_content"] = "".join(thinking)
    if calls:
        reply["tool_calls"] = calls
    usage = anthropic_usage(message.get("usage"))
    answer = {"id": message.get("id") or "", "object": "chat.completion", "created": int(time.time()), "model": model,
              "choices": [{"index": 0, "message": reply,
                           "finish_reason": _ANTHROPIC_STOPS.get(message.get("stop_reason"), "stop")}]}
    if usage is not None:
        answer["usage"] = usage_to_openai(usage)
    return answer, usage


class AnthropicDecoder(PivotDecoder):
    """Anthropic's stream events as pivot chunks: a role chunk at message_start, content, reasoning and tool-call
    deltas from the blocks, a finish chunk at message_delta; message_stop ends it."""

    def __init__(self, call: RelayCall) -> None:
        self.head = {"id": f"chatcmpl-{call.request_id}", "object": "chat.completion.chunk",
                     "created": int(call.started)}
        self.tools: dict[int, int] = {}  # content block index → tool call index
        self.counts: dict[str, int] = {}  # usage so far: message_start has the input, message_delta the output

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
        return [{**self.head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}]

    def _count(self, usage: Any) -> None:
        if isinstance(usage, dict):  # totals so far, so each new value replaces the last
            self.counts.update({k: int(usage[k]) for k in _USAGE_FIELDS if usage.get(k) is not None})
            self.usage = anthropic_usage(self.counts)

    def decode(self, name: str, data: bytes) -> list[dict[str, Any]]:
        event = loads_object(data) or {}
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self._count(message.get("usage"))
            return self._chunk({"role": "assistant", "content": ""})
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = self.tools.setdefault(event.get("index", 0), len(self.tools))
                return self._chunk({"tool_calls": [{"index": index, "id": block.get("id"), "type": "function",
                                                    "function": {"name": block.get("name"), "arguments": ""}}]})
            return self._chunk({"content": block["text"]}) if block.get("type") == "text" and block.get("text") else []
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta":
                return self._chunk({"content": delta.get("text", "")})
            if delta.get("type") == "thinking_delta":
                return self._chunk({"reasoning_content": delta.get("thinking", "")})
            if delta.get("type") == "input_json_delta":
                index = self.tools.get(event.get("index", 0), 0)
                return self._chunk({"tool_calls": [{"index": index, "function": {
                    "arguments": delta.get("partial_json", "")}}]})
            return []
        if kind == "message_delta":
            self._count(event.get("usage"))
            reason = (event.get("delta") or {}).get("stop_reason")
            return self._chunk({}, _ANTHROPIC_STOPS.get(reason, "stop")) if reason else []
        if kind == "message_stop":
            self.done = True
        elif kind == "error":
            error = event.get("error") or {}
            kind = str(error.get("type") or "api_error")
            self.error = RelayError(_ANTHROPIC_ERROR_STATUS.get(kind, 500), str(error.get("message") or kind), kind,
                                    kind)
        return []  # ping, content_block_stop, signature deltas, and event types added later


class AnthropicPassthrough(DecodedPassthrough):
    """hot path: an Anthropic stream for an Anthropic client; a mapped model is renamed back."""

    def __init__(self, call: RelayCall, channel: ChannelRoute) -> None:
        super().__init__(AnthropicDecoder(call), model_rename(call, channel))

    def feed(self, events: bytes) -> bytes:
        self.events += events.count(b"data:")
        if b'"usage"' in events or b"error" in events:
            for event in sse_events(events):
                name, data = sse_fields(event)
                if name in ("message_start", "message_delta", "error"):
                    self.decoder.decode(name, data)
        return _rewrite_model(events, *self.rename) if self.rename else events


def _without_unsigned_thinking(message: Any) -> Any:
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, list):
        return message
    return dict(message, content=[b for b in content if not (isinstance(b, dict) and b.get("type") == "thinking"
                                                             and not b.get("signature"))])


class AnthropicAdaptor(Adaptor):
    """`{base}/messages` with `x-api-key` and `anthropic-version` (the client's own when it sent one), forwarding
    the client's `anthropic-beta`."""

    title = "Anthropic"
    formats = frozenset({"anthropic"})
    modes = frozenset({Mode.CHAT_COMPLETIONS})

    def build_url(self, channel: ChannelRoute, call: RelayCall) -> str:
        if not self.speaks(call):
            return channel.base_url.rstrip("/") + "/messages"
        beta = "?beta=true" if "beta=true" in call.query.split("&") else ""  # Claude Code's flag, as aiproxy does
        return channel.base_url.rstrip("/") + call.upstream_path + beta

    def build_headers(self, channel: ChannelRoute, call: RelayCall | None = None) -> dict[str, str]:
        headers = {"x-api-key": channel.key, "anthropic-version": ANTHROPIC_VERSION}
        client = call.headers if call is not None else {}
        if client.get(b"anthropic-version"):
            headers["anthropic-version"] = client[b"anthropic-version"].decode("latin-1")
        if client.get(b"anthropic-beta"):
            headers["anthropic-beta"] = client[b"anthropic-beta"].decode("latin-1")
        return headers

    def passthrough_body(self, call: RelayCall, channel: ChannelRoute) -> bytes:
        target = channel.upstream_model(call.model)
        unsigned = b'"signature":""' in call.body or b'"signature": ""' in call.body
        if target == call.model and not unsigned:
            return call.body
        body = dict(call.obj, model=target)
        if unsigned:  # thinking that another format's channel produced: Anthropic refuses it without a signature
            body["messages"] = [_without_unsigned_thinking(m) for m in body["messages"]]
        return orjson.dumps(body)

    def request_from_pivot(self, pivot: dict[str, Any], call: RelayCall, channel: ChannelRoute) -> bytes:
        return orjson.dumps(openai_to_anthropic_request(dict(pivot, stream=call.stream),
                                                        channel.upstream_model(call.model)))

    def usage_of(self, answer: Any) -> Usage | None:
        return anthropic_usage(answer.get("usage")) if isinstance(answer, dict) else None

    def response_to_pivot(self, call: RelayCall, body: bytes) -> tuple[dict[str, Any], Usage | None]:
        return anthropic_to_openai_response(json_object(body, "Anthropic's answer"), call.model)

    def passthrough_stream(self, call: RelayCall, channel: ChannelRoute) -> StreamFilter:
        return AnthropicPassthrough(call, channel)

    def pivot_decoder(self, call: RelayCall) -> PivotDecoder:
        return AnthropicDecoder(call)

    def convert_error(self, status: int, body: bytes) -> RelayError:
        return read_anthropic_error(status, body)




# -- Anthropic → pivot (an Anthropic client, e.g. Claude Code, on any channel) --
# What has no counterpart in OpenAI's chat, by rule (the README's "Conversion rules" lists the same):
# - `system` messages inside `messages` (Claude Code's mid-conversation system beta) join the leading system
#   message, after the top-level `system`: OpenAI-compatible chat templates refuse a system message after a turn;
# - thinking (enabled or adaptive) and `output_config.effort` become `reasoning_effort`; `output_config.format`
#   (and the older `output_format`) becomes `response_format`; signed or redacted thinking in earlier turns goes
#   back as `reasoning_content` (redacted: dropped, it is encrypted for Anthropic alone);
# - documents become file parts (PDF) or text (plain text, an URL, nested content); search results become
#   text; images inside tool results follow the tool messages in a user message;
# - server tools (web search, code execution, bash/text editor/computer definitions, tool search, MCP servers)
#   and their blocks in earlier turns are dropped, except the text of their results;
# - `cache_control`, `defer_loading`, `strict`, `input_examples`, `allowed_callers` on tools and blocks,
#   `metadata`, `context_management`, `container`, `service_tier`, `inference_geo`, `speed` and `top_k` are
#   dropped; stop_sequences keeps OpenAI's first 4.

ANTHROPIC_OPENAI_STOP_MAX = 4
#: output_config.effort → reasoning_effort (OpenAI knows minimal/low/medium/high)
_EFFORTS = {"low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}
_SERVER_RESULT_SUFFIX = "_tool_result"


def _openai_part(block: dict[str, Any]) -> dict[str, Any] | None:
    kind, given = block.get("type"), block.get("source")
    source = given if isinstance(given, dict) else {}  # a search result's source is its URL
    if kind == "text":
        return {"type": "text", "text": block.get("text", "")} if block.get("text") else None
    if kind == "image":
        if source.get("type") not in ("url", "base64"):
            return None  # a Files API id means something to Anthropic alone
        url = source.get("url") if source.get("type") == "url" else \
            f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
        return {"type": "image_url", "image_url": {"url": url}}
    if kind == "document":
        title = f"{block['title']}\n" if isinstance(block.get("title"), str) else ""
        if source.get("type") == "base64":
            return {"type": "file", "file": {"filename": block.get("title") or "document.pdf",
                                             "file_data": f"data:{source.get('media_type')};base64,"
                                                          f"{source.get('data')}"}}
        text = {"text": source.get("data"), "url": source.get("url"),
                "content": _block_text(source.get("content"))}.get(source.get("type"))
        return {"type": "text", "text": title + text} if isinstance(text, str) and text else None
    if kind == "search_result":
        url = given if isinstance(given, str) else None
        text = "\n".join(filter(None, (block.get("title"), url, _block_text(block.get("content")))))
        return {"type": "text", "text": text} if text else None
    return None


def _block_text(content: Any) -> str:
    """The text inside a tool result, a server tool's result or a document: strings, text blocks, search results,
    web search results (title and URL)."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        content = [content]
    if not isinstance(content, list):
        return ""
    texts = []
    for block in content:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            texts.append(str(block.get("text") or ""))
        elif kind == "search_result":
            url = block.get("source") if isinstance(block.get("source"), str) else None
            texts.append("\n".join(filter(None, (block.get("title"), url, _block_text(block.get("content"))))))
        elif kind == "web_search_result":
            texts.append(" ".join(filter(None, (block.get("title"), block.get("url")))))
        elif isinstance(block.get("content"), (str, list, dict)):
            texts.append(_block_text(block["content"]))
        elif isinstance(block.get("stdout"), str):
            texts.append(block["stdout"] + str(block.get("stderr") or ""))
    return "\n".join(t for t in texts if t)


def _tool_message(block: dict[str, Any]) -> dict[str, Any]:
    text = _block_text(block.get("content"))
    if block.get("is_error") and text:
        text = f"Error: {text}"
    return {"role": "tool", "tool_call_id": block.get("tool_use_id", ""), "content": text}


def _openai_user_messages(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tool results first, each its own `tool` message (they answer the previous turn's calls), then the rest:
    the turn's own blocks and the images the tool results held (a tool message takes text only)."""
    results = [b for b in blocks if b.get("type") == "tool_result"]
    messages = [_tool_message(b) for b in results]
    images = [i for r in results if isinstance(r.get("content"), list)
              for i in r["content"] if isinstance(i, dict) and i.get("type") == "image"]
    parts = [p for p in map(_openai_part, images + [b for b in blocks if b.get("type") != "tool_result"]) if p]
    if parts:
        # all-text content goes as one string: several OpenAI-style upstreams take no list of parts
        only_text = all(p["type"] == "text" for p in parts)
        messages.append({"role": "user", "content": "\n".join(p["text"] for p in parts) if only_text else parts})
    return messages


def _openai_assistant_message(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    texts = [b.get("text") or "" for b in blocks if b.get("type") == "text"]
    # a server tool's result (web search, code execution, ...) keeps its text: the model saw it in this turn
    texts += [_block_text(b.get("content")) for b in blocks if str(b.get("type", "")).endswith(_SERVER_RESULT_SUFFIX)]
    text = "\n".join(t for t in texts if t)
    thinking = "".join(b.get("thinking") or "" for b in blocks if b.get("type") == "thinking")
    calls = [{"id": b.get("id"), "type": "function", "function": {
        "name": b.get("name"), "arguments": orjson.dumps(b.get("input") or {}).decode()}}
        for b in blocks if b.get("type") == "tool_use"]
    message: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
    if thinking:  # DeepSeek's thinking mode refuses a turn after a tool call without it
        message["reasoning_content"] = thinking
    if calls:
        message["tool_calls"] = calls
    return message


def _reasoning_effort(body: dict[str, Any]) -> str | None:
    """`output_config.effort`, else the thinking setting: a budget's size, or adaptive thinking's "medium"."""
    config = body.get("output_config") if isinstance(body.get("output_config"), dict) else {}
    thinking = body.get("thinking") if isinstance(body.get("thinking"), dict) else {}
    if thinking.get("type") == "disabled":
        return None
    if config.get("effort") in _EFFORTS:
        return _EFFORTS[config["effort"]]
    if thinking.get("type") == "adaptive":
        return "medium"
    if thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens") if isinstance(thinking.get("budget_tokens"), int) else 0
        return "low" if budget < ANTHROPIC_THINKING_BUDGETS["low"] * 2 else \
            "medium" if budget < ANTHROPIC_THINKING_BUDGETS["medium"] * 2 else "high"
    return None


def _response_format(body: dict[str, Any]) -> dict[str, Any] | None:
    config = body.get("output_config") if isinstance(body.get("output_config"), dict) else {}
    fmt = config.get("format") or body.get("output_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema" and isinstance(fmt.get("schema"), dict):
        return {"type": "json_schema", "json_schema": {"name": "output", "schema": fmt["schema"], "strict": True}}
    return None


def anthropic_to_openai_request(body: dict[str, Any]) -> dict[str, Any]:
    system = [_text_of(body.get("system"))]
    messages: list[dict[str, Any]] = []
    for i, message in enumerate(body["messages"]):
        content = message.get("content") if isinstance(message, dict) else None
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant", "system") or not isinstance(blocks, list):
            raise RelayError(400, f"messages.{i}: a message needs the role 'user', 'assistant' or 'system' and a "
                                  "content", "invalid_request")
        blocks = [b for b in blocks if isinstance(b, dict)]
        if role == "system":
            system.append(_text_of(blocks))
        elif role == "assistant":
            messages.append(_openai_assistant_message(blocks))
        else:
            messages += _openai_user_messages(blocks)
    system_text = "\n\n".join(s for s in system if s)
    if system_text:
        messages.insert(0, {"role": "system", "content": system_text})
    chat: dict[str, Any] = {"model": body["model"], "messages": messages}
    chat.update({name: body[name] for name in ("max_tokens", "temperature", "top_p") if body.get(name) is not None})
    if body.get("stop_sequences"):
        chat["stop"] = list(body["stop_sequences"])[:ANTHROPIC_OPENAI_STOP_MAX]
    # custom tools only: a server tool (web_search_…, bash_…, code_execution_…) has a versioned type and no schema
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and isinstance(t.get("input_schema"), dict)
             and t.get("type") in (None, "custom")]
    if tools:
        chat["tools"] = [{"type": "function", "function": {
            "name": t.get("name", ""), "description": t.get("description", ""), "parameters": t["input_schema"]}}
            for t in tools]
        choice = body.get("tool_choice") if isinstance(body.get("tool_choice"), dict) else {}
        kind = choice.get("type")
        if kind in ("auto", "any", "none"):
            chat["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[kind]
        elif kind == "tool" and any(t.get("name") == choice.get("name") for t in tools):
            chat["tool_choice"] = {"type": "function", "function": {"name": choice.get("name", "")}}
        if choice.get("disable_parallel_tool_use"):
            chat["parallel_tool_calls"] = False
    effort = _reasoning_effort(body)
    if effort:
        chat["reasoning_effort"] = effort
    response_format = _response_format(body)
    if response_format:
        chat["response_format"] = response_format
    if body.get("stream"):
        chat["stream"] = True
    return chat


def openai_to_anthropic_response(chat: dict[str, Any], model: str) -> dict[str, Any]:
    choice = (chat.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    reasoning = _reasoning_of(message)
    if reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = _text_of(message.get("content"))
    if text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        content.append({"type": "tool_use", "id": call.get("id") or "", "name": function.get("name") or "",
                        "input": _arguments(function.get("arguments"))})
    return {"id": f"msg_{chat.get('id') or ''}", "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": _OPENAI_STOPS.get(choice.get("finish_reason"), "end_turn"),
            "stop_sequence": None, "usage": usage_to_anthropic(usage_from(chat))}


class AnthropicEncoder(PivotEncoder):
    """Pivot chunks as Anthropic's events: message_start, then a content block per kind of delta (thinking, text,
    each tool call), and at the end message_delta with the stop reason and usage, then message_stop."""

    def __init__(self, call: RelayCall) -> None:
        self.model, self.id = call.model, f"msg_{call.request_id}"
        self.started = False
        self.index, self.kind = -1, ""  # the open content block
        self.tools: dict[int, int] = {}  # pivot tool call index → block index
        self.stop = "end_turn"

    def _start(self) -> bytes:
        if self.started:
            return b""
        self.started = True
        return sse({"type": "message_start", "message": {
            "id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": usage_to_anthropic(None)}}, "message_start")

    def _open(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close_block()
        self.index, self.kind = self.index + 1, kind
        return out + sse({"type": "content_block_start", "index": self.index, "content_block": block},
                         "content_block_start")

    def _close_block(self) -> bytes:
        if not self.kind:
            return b""
        self.kind = ""
        return sse({"type": "content_block_stop", "index": self.index}, "content_block_stop")

    def _delta(self, index: int, delta: dict[str, Any]) -> bytes:
        return sse({"type": "content_block_delta", "index": index, "delta": delta}, "content_block_delta")

    def encode(self, chunk: dict[str, Any]) -> bytes:
        out = [self._start()]
        for choice in (chunk.get("choices") or [])[:1]:
            delta = choice.get("delta") or {}
            reasoning = _reasoning_of(delta)
            if reasoning:
                if self.kind != "thinking":
                    out.append(self._open("thinking", {"type": "thinking", "thinking": "", "signature": ""}))
                out.append(self._delta(self.index, {"type": "thinking_delta", "thinking": reasoning}))
            if delta.get("content"):
                if self.kind != "text":
                    out.append(self._open("text", {"type": "text", "text": ""}))
                out.append(self._delta(self.index, {"type": "text_delta", "text": delta["content"]}))
            for call in delta.get("tool_calls") or []:
                number, function = call.get("index", 0), call.get("function") or {}
                if number not in self.tools:
                    out.append(self._open("tool_use", {"type": "tool_use", "id": call.get("id") or f"toolu_{number}",
                                                       "name": function.get("name") or "", "input": {}}))
                    self.tools[number] = self.index
                if function.get("arguments"):
                    out.append(self._delta(self.tools[number], {"type": "input_json_delta",
                                                                "partial_json": function["arguments"]}))
            if choice.get("finish_reason"):
                self.stop = _OPENAI_STOPS.get(choice["finish_reason"], "end_turn")
        return b"".join(out)

    def close(self, usage: Usage | None) -> bytes:
        return b"".join((self._start(), self._close_block(), sse({
            "type": "message_delta", "delta": {"stop_reason": self.stop, "stop_sequence": None},
            "usage": usage_to_anthropic(usage)}, "message_delta"), sse({"type": "message_stop"}, "message_stop")))


_ANTHROPIC_SOURCE = {"type": str, "media_type": str, "data": str, "url": str}
_ANTHROPIC_TEXT = {"type": str, "text": str}
#: a block inside a tool's or a server tool's result: text, a search result (its source a URL), nested results
_ANTHROPIC_RESULT: dict[str, Any] = {"type": str, "text": str, "title": str, "url": str,
                                     "source": Either(_ANTHROPIC_SOURCE, str)}
_ANTHROPIC_RESULT["content"] = Either(str, [_ANTHROPIC_RESULT], _ANTHROPIC_RESULT)
#: the fields of a Messages request that the conversion to the pivot reads (Dialect.shape, check_shape)
ANTHROPIC_SHAPE = {
    "model": str, "max_tokens": NUMBER, "stream": bool, "temperature": NUMBER, "top_p": NUMBER, "top_k": NUMBER,
    "system": Either(str, [_ANTHROPIC_TEXT]), "stop_sequences": [str], "metadata": dict,
    "messages": [{"role": str, "content": Either(str, [{
        **_ANTHROPIC_RESULT, "id": str, "name": str, "input": dict, "tool_use_id": str, "thinking": str,
        "signature": str}])}],
    "tools": [{"name": str, "description": str, "input_schema": dict}],
    "tool_choice": {"type": str, "name": str, "disable_parallel_tool_use": bool},
    "thinking": {"type": str, "budget_tokens": NUMBER},
}


class AnthropicDialect(Dialect):
    """`POST /v1/messages` (Claude Code, the anthropic SDK) and `/v1/messages/count_tokens`, on every channel."""

    format = "anthropic"
    prefixes = ("/v1/messages",)

    def model_entry(self, model: str, owner: str, kind: str) -> dict[str, Any]:
        return {"type": "model", "id": model, "display_name": model, "created_at": "1970-01-01T00:00:00Z"}

    def model_list(self, entries: list[dict[str, Any]]) -> dict[str, Any]:
        return {"data": entries, "has_more": False, "first_id": entries[0]["id"] if entries else None,
                "last_id": entries[-1]["id"] if entries else None}

    def lists_models(self, incoming: Incoming) -> bool:
        """`GET /v1/models` from the anthropic SDK (it sends anthropic-version)."""
        return b"anthropic-version" in incoming.headers and is_models_path(incoming.path, "/v1")

    def routes(self) -> Iterable[tuple[str, RelayRoute]]:
        yield "/v1/messages", RelayRoute(self, Mode.ANTHROPIC, Mode.CHAT_COMPLETIONS, "/messages")
        # only an Anthropic channel counts tokens itself; elsewhere an estimate answers, never a chat call
        yield "/v1/messages/count_tokens", RelayRoute(self, Mode.ANTHROPIC, None, "/messages/count_tokens",
                                                      native_only=True)

    def read(self, call: RelayCall) -> None:
        if call.obj is None or not isinstance(call.obj.get("messages"), list):
            raise RelayError(400, "messages: a list of messages is required.", "invalid_request")
        call.stream = bool(call.obj.get("stream"))
        call.client_wants_usage = True  # an Anthropic stream always ends with its usage

    def shape(self, call: RelayCall) -> Any:
        return ANTHROPIC_SHAPE

    def to_pivot(self, call: RelayCall) -> dict[str, Any]:
        return anthropic_to_openai_request(call.obj)

    def response_from_pivot(self, call: RelayCall, pivot: dict[str, Any]) -> bytes:
        return orjson.dumps(openai_to_anthropic_response(pivot, call.model))

    def stream_encoder(self, call: RelayCall) -> PivotEncoder:
        return AnthropicEncoder(call)

    def error_body(self, error: RelayError) -> bytes:
        return orjson.dumps({"type": "error", "error": {"type": anthropic_error_type(error.status),
                                                        "message": error.message}})

    def stream_error(self, error: RelayError, call: RelayCall | None = None) -> bytes:
        return b"event: error\ndata: " + self.error_body(error) + b"\n\n"

    def answer_locally(self, call: RelayCall) -> bytes:
        counted = [call.obj.get(k) for k in ("system", "messages", "tools")]
        return orjson.dumps({"input_tokens": estimate_tokens(len(orjson.dumps(counted)))})


# ==== 9. Google Gemini: the upstream of type 24, and the doors /v1beta/models/{model}:… and /v1/models/… ====
# ai.google.dev/api: generateContent, streamGenerateContent (each SSE event a whole response), countTokens,
# embedContent and batchEmbedContents; field names are camelCase. Gemini has no tool call ids: a functionResponse
# answers the earlier functionCall of its name, so ids are invented on the way out and matched by name and order
# on the way in.

GEMINI_API_VERSION = "v1beta"  # upstream calls; the client door serves this and v1 (google-genai's default)
#: Google's documented stand-in for a thought signature that another format's history cannot carry back: Gemini 3
#: refuses a replayed functionCall without one (ai.google.dev/gemini-api/docs/thought-signatures)
GEMINI_SKIP_SIGNATURE = "skip_thought_signature_validator"
#: reasoning_effort → thinkingConfig.thinkingBudget (2.5 Pro's minimum is 128)
GEMINI_THINKING_BUDGETS = {"none": 0, "minimal": 128, "low": 1024, "medium": 8192, "high": 24576}
_GEMINI_METHODS = {  # client method → (pivot operation, whether it streams); countTokens has no pivot form
    "generateContent": (Mode.CHAT_COMPLETIONS, False), "streamGenerateContent": (Mode.CHAT_COMPLETIONS, True),
    "countTokens": (None, False), "embedContent": (Mode.EMBEDDINGS, False),
    "batchEmbedContents": (Mode.EMBEDDINGS, False),
}
_GEMINI_PATH = re.compile(r"/(v1|v1beta)/models/(.+):([A-Za-z]+)")  # a model may hold "/" or ":" (ft:…, org/m)
_GEMINI_DOOR = re.compile(r"/(v1|v1beta)/models/.*:")  # a POST here is Gemini's, answered in its error shape
_GEMINI_STOPS = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter", "RECITATION": "content_filter",
                 "BLOCKLIST": "content_filter", "PROHIBITED_CONTENT": "content_filter", "SPII": "content_filter",
                 "IMAGE_SAFETY": "content_filter"}
_TO_GEMINI_STOPS = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP", "content_filter": "SAFETY"}
_GEMINI_STATUSES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                    409: "ABORTED", 413: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED",
                    500: "INTERNAL", 501: "UNIMPLEMENTED", 502: "UNAVAILABLE", 503: "UNAVAILABLE",
                    504: "DEADLINE_EXCEEDED"}
#: the JSON Schema keywords Gemini's `parameters` Schema knows; it refuses any other (additionalProperties, $schema)
_GEMINI_SCHEMA_KEYS = frozenset({"type", "format", "title", "description", "nullable", "enum", "items", "minItems",
                                 "maxItems", "properties", "required", "minProperties", "maxProperties", "minLength",
                                 "maxLength", "pattern", "example", "anyOf", "propertyOrdering", "default",
                                 "minimum", "maximum"})


def gemini_usage(meta: Any) -> Usage | None:
    """usageMetadata as one Usage: the output counts the thoughts too, as OpenAI's completion_tokens does."""
    if not isinstance(meta, dict):
        return None
    prompt = int(meta.get("promptTokenCount") or 0) + int(meta.get("toolUsePromptTokenCount") or 0)
    output = int(meta.get("candidatesTokenCount") or 0) + int(meta.get("thoughtsTokenCount") or 0)
    return Usage(prompt, output, prompt + output, int(meta.get("cachedContentTokenCount") or 0))


def usage_to_gemini(usage: Usage | None) -> dict[str, int]:
    usage = usage or Usage()
    meta = {"promptTokenCount": usage.input_tokens, "candidatesTokenCount": usage.output_tokens,
            "totalTokenCount": usage.total_tokens}
    if usage.cached_tokens:
        meta["cachedContentTokenCount"] = usage.cached_tokens
    return meta


def gemini_error_status(status: int) -> str:
    return _GEMINI_STATUSES.get(status) or ("INTERNAL" if status >= 500 else "INVALID_ARGUMENT")


def gemini_error(status: int, message: str) -> bytes:
    return orjson.dumps({"error": {"code": status, "message": message, "status": gemini_error_status(status)}})


def read_gemini_error(status: int, body: bytes) -> RelayError:
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        obj = None
    if isinstance(obj, list) and obj:  # a streamGenerateContent without alt=sse answers a JSON array
        obj = obj[0]
    error = obj.get("error") if isinstance(obj, dict) else None
    if not isinstance(error, dict) or not error.get("message"):
        return read_openai_error(status, body)
    kind = str(error.get("status") or gemini_error_status(status))
    return RelayError(status, str(error["message"]), kind, kind)


def gemini_schema(schema: Any) -> Any:
    """A JSON Schema cut to what Gemini's Schema accepts: unknown keywords dropped, `type: [t, "null"]` as
    nullable, `const` as a one-value enum."""
    if isinstance(schema, list):
        return [gemini_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "type" and isinstance(value, list):
            kinds = [k for k in value if k != "null"]
            out["type"] = kinds[0] if kinds else "string"
            if "null" in value:
                out["nullable"] = True
        elif key == "const":
            out["enum"] = [value]
        elif key == "properties" and isinstance(value, dict):
            # a free-form object (no properties) is dropped: Gemini refuses an OBJECT without properties
            out[key] = {name: gemini_schema(sub) for name, sub in value.items() if not _free_form_object(sub)}
            if isinstance(schema.get("required"), list):
                out["required"] = [name for name in schema["required"] if name in out[key]]
        elif key in _GEMINI_SCHEMA_KEYS and not (key == "required" and "required" in out):
            out[key] = gemini_schema(value) if key in ("items", "anyOf") else value
    return out


def _free_form_object(schema: Any) -> bool:
    return isinstance(schema, dict) and str(schema.get("type", "")).lower() == "object" and not schema.get(
        "properties")


def openai_schema(schema: Any) -> Any:
    """Gemini's Schema as JSON Schema: its upper-case types (the google-genai SDK sends OBJECT, STRING) lower-cased."""
    if isinstance(schema, list):
        return [openai_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key == "type" and isinstance(value, str):
            out[key] = value.lower()
        elif key == "properties" and isinstance(value, dict):
            out[key] = {name: openai_schema(sub) for name, sub in value.items()}
        elif key in ("items", "anyOf"):
            out[key] = openai_schema(value)
        elif key != "propertyOrdering":
            out[key] = value
    return out


def _tool_response_object(content: Any) -> dict[str, Any]:
    """A tool message's content as the object a functionResponse's `response` must be."""
    text = _text_of(content)
    return (loads_object(text) if text.strip() else None) or {"content": text}


# -- pivot → Gemini (an OpenAI client, or the pivot of any other, on a Gemini channel) --

def _gemini_media(url: str) -> dict[str, Any]:
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        return {"inlineData": {"mimeType": header[5:].split(";")[0] or "image/png", "data": data}}
    mime = mimetypes.guess_type(urllib.parse.urlsplit(url).path)[0] or "image/jpeg"
    return {"fileData": {"mimeType": mime, "fileUri": url}}


def _gemini_user_parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts = []
    for part in content if isinstance(content, list) else []:
        kind = part.get("type")
        if kind == "text" and part.get("text"):
            parts.append({"text": part["text"]})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if isinstance(url, str) and url:
                parts.append(_gemini_media(url))
        elif kind == "input_audio" and isinstance(part.get("input_audio"), dict):
            audio = part["input_audio"]
            parts.append({"inlineData": {"mimeType": f"audio/{audio.get('format') or 'wav'}",
                                         "data": audio.get("data", "")}})
        elif kind == "file" and str((part.get("file") or {}).get("file_data", "")).startswith("data:"):
            parts.append(_gemini_media(part["file"]["file_data"]))
    return parts


def _gemini_model_parts(message: dict[str, Any], names: dict[str, str]) -> list[dict[str, Any]]:
    # reasoning_content goes nowhere: Gemini reads no thought text sent back, only signatures
    text = _text_of(message.get("content"))
    parts: list[dict[str, Any]] = [{"text": text}] if text else []
    for i, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function") or {}
        names[call.get("id") or ""] = function.get("name") or ""
        part: dict[str, Any] = {"functionCall": {"name": function.get("name") or "",
                                                 "args": _arguments(function.get("arguments"))}}
        if i == 0:  # a turn's first call carries the signature, and this history has none to give
            part["thoughtSignature"] = GEMINI_SKIP_SIGNATURE
        parts.append(part)
    return parts


def _gemini_tool_config(choice: Any) -> dict[str, Any] | None:
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name", "")
        return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}
    mode = {"none": "NONE", "required": "ANY", "auto": "AUTO"}.get(choice)
    return {"functionCallingConfig": {"mode": mode}} if mode else None


def _gemini_generation_config(chat: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for ours, theirs in (("temperature", "temperature"), ("top_p", "topP"), ("n", "candidateCount"),
                         ("presence_penalty", "presencePenalty"), ("frequency_penalty", "frequencyPenalty"),
                         ("seed", "seed")):
        if chat.get(ours) is not None:
            config[theirs] = chat[ours]
    limit = chat.get("max_completion_tokens") or chat.get("max_tokens")
    if limit:
        config["maxOutputTokens"] = limit
    stop = chat.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    response_format = chat.get("response_format") or {}
    if response_format.get("type") in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
        schema = (response_format.get("json_schema") or {}).get("schema")
        if schema:
            config["responseSchema"] = gemini_schema(schema)
    budget = GEMINI_THINKING_BUDGETS.get(chat.get("reasoning_effort"))
    if budget is not None:
        config["thinkingConfig"] = {"includeThoughts": budget > 0, "thinkingBudget": budget}
    return config


def openai_to_gemini_request(chat: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat request as a Gemini generateContent body. System messages become systemInstruction;
    consecutive turns of one role merge, so all the results of one turn's calls answer it together."""
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool call id → function name, for the functionResponse that answers it
    for message in chat.get("messages") or []:
        role = message.get("role")
        if role in ("system", "developer"):
            text = _text_of(message.get("content"))
            system += [{"text": text}] if text else []
            continue
        if role == "assistant":
            role, parts = "model", _gemini_model_parts(message, names)
        elif role == "tool":
            role, parts = "user", [{"functionResponse": {"name": names.get(message.get("tool_call_id") or "", ""),
                                                         "response": _tool_response_object(message.get("content"))}}]
        else:
            role, parts = "user", _gemini_user_parts(message.get("content"))
        if not parts:
            continue
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"] += parts
        else:
            contents.append({"role": role, "parts": parts})
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": system}
    config = _gemini_generation_config(chat)
    if config:
        body["generationConfig"] = config
    functions = [t.get("function") or {} for t in chat.get("tools") or [] if t.get("type", "function") == "function"]
    if functions:
        declarations = []
        for f in functions:
            declaration = {"name": f.get("name", "")}
            if f.get("description"):
                declaration["description"] = f["description"]
            parameters = gemini_schema(f.get("parameters") or {})
            if parameters.get("properties"):  # Gemini refuses an OBJECT without properties
                declaration["parameters"] = parameters
            declarations.append(declaration)
        body["tools"] = [{"functionDeclarations": declarations}]
        tool_config = _gemini_tool_config(chat.get("tool_choice"))
        if tool_config:
            body["toolConfig"] = tool_config
    return body


def _gemini_parts(answer: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    """The first candidate's parts and its finish reason."""
    candidates = answer.get("candidates") or []
    candidate = candidates[0] if candidates and isinstance(candidates[0], dict) else {}
    parts = (candidate.get("content") or {}).get("parts") or []
    return [p for p in parts if isinstance(p, dict)], candidate.get("finishReason")


def _gemini_text(parts: list[dict[str, Any]], thought: bool) -> str:
    """The text of Gemini parts: their thoughts, or their answer without the thoughts."""
    return "".join(p["text"] for p in parts if isinstance(p.get("text"), str) and bool(p.get("thought")) == thought)


def _gemini_call(part: dict[str, Any], call_id: str, index: int | None = None) -> dict[str, Any]:
    call = part["functionCall"]
    out = {"id": call.get("id") or call_id, "type": "function",
           "function": {"name": call.get("name") or "", "arguments": orjson.dumps(call.get("args") or {}).decode()}}
    return out if index is None else {"index": index, **out}


def gemini_to_openai_response(answer: dict[str, Any], model: str,
                              request_id: str) -> tuple[dict[str, Any], Usage | None]:
    parts, finish = _gemini_parts(answer)
    text, thought = _gemini_text(parts, thought=False), _gemini_text(parts, thought=True)
    calls = [_gemini_call(p, f"call_{request_id}_{i}") for i, p in enumerate(q for q in parts if "functionCall" in q)]
    reply: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
    if thought:
        reply["reasoning_content"] = thought
    if calls:
        reply["tool_calls"] = calls
    blocked = not answer.get("candidates") and (answer.get("promptFeedback") or {}).get("blockReason")
    reason = "tool_calls" if calls else "content_filter" if blocked else _GEMINI_STOPS.get(finish, "stop")
    usage = gemini_usage(answer.get("usageMetadata"))
    chat = {"id": answer.get("responseId") or f"chatcmpl-{request_id}", "object": "chat.completion",
            "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": reply, "finish_reason": reason}]}
    if usage is not None:
        chat["usage"] = usage_to_openai(usage)
    return chat, usage


def gemini_embeddings_request(chat: dict[str, Any], model: str) -> dict[str, Any]:
    texts = chat.get("input")
    texts = [texts] if isinstance(texts, str) else texts if isinstance(texts, list) else []
    extra = {"outputDimensionality": chat["dimensions"]} if chat.get("dimensions") else {}
    return {"requests": [{"model": f"models/{model}", "content": {"parts": [{"text": str(t)}]}, **extra}
                         for t in texts]}


class GeminiDecoder(PivotDecoder):
    """Gemini's stream as pivot chunks: each event is a whole response with the new parts, so each becomes one
    chunk (text, thoughts, whole function calls, and the finish reason on the last). The stream just ends."""

    def __init__(self, call: RelayCall) -> None:
        self.head = {"id": f"chatcmpl-{call.request_id}", "object": "chat.completion.chunk",
                     "created": int(call.started)}
        self.request_id = call.request_id
        self.calls = 0
        self.started = False

    def decode(self, name: str, data: bytes) -> list[dict[str, Any]]:
        event = loads_object(data)
        if event is None:
            return []
        if isinstance(event.get("error"), dict):
            error = event["error"]
            self.error = read_gemini_error(int(error.get("code") or 500), data)
            return []
        self.usage = gemini_usage(event.get("usageMetadata")) or self.usage
        parts, finish = _gemini_parts(event)
        delta: dict[str, Any] = {} if self.started else {"role": "assistant"}
        self.started = True
        for part in parts:
            if "functionCall" in part:
                delta.setdefault("tool_calls", []).append(
                    _gemini_call(part, f"call_{self.request_id}_{self.calls}", self.calls))
                self.calls += 1
            elif isinstance(part.get("text"), str) and part["text"]:
                key = "reasoning_content" if part.get("thought") else "content"
                delta[key] = delta.get(key, "") + part["text"]
        reason = None
        if finish:
            reason = "tool_calls" if self.calls else _GEMINI_STOPS.get(finish, "stop")
        if not delta and reason is None:
            return []
        return [{**self.head, "choices": [{"index": 0, "delta": delta, "finish_reason": reason}]}]


class GeminiPassthrough(DecodedPassthrough):
    """hot path: a Gemini stream for a Gemini client; a mapped model is renamed back in modelVersion."""

    def __init__(self, call: RelayCall, channel: ChannelRoute) -> None:
        super().__init__(GeminiDecoder(call), model_rename(call, channel, "modelVersion"))

    def feed(self, events: bytes) -> bytes:
        self.events += events.count(b"data:")
        if b"usageMetadata" in events or b'"error"' in events:
            for event in sse_events(events):
                _, data = sse_fields(event)
                if b"usageMetadata" in data or b'"error"' in data:
                    self.decoder.decode("", data)
        return events.replace(*self.rename) if self.rename else events


class GeminiAdaptor(Adaptor):
    """`{base}/v1beta/models/{model}:generateContent`, `:streamGenerateContent?alt=sse` and
    `:batchEmbedContents`, with the key in `x-goog-api-key`."""

    title = "Google Gemini"
    formats = frozenset({"gemini"})
    modes = frozenset({Mode.CHAT_COMPLETIONS, Mode.EMBEDDINGS})

    def build_url(self, channel: ChannelRoute, call: RelayCall) -> str:
        if self.speaks(call):
            method = call.upstream_path
        elif call.op == Mode.EMBEDDINGS:
            method = "batchEmbedContents"
        else:
            method = "streamGenerateContent?alt=sse" if call.stream else "generateContent"
        model = urllib.parse.quote(channel.upstream_model(call.model), safe="")
        return f"{channel.base_url.rstrip('/')}/{GEMINI_API_VERSION}/models/{model}:{method}"

    def build_headers(self, channel: ChannelRoute, call: RelayCall | None = None) -> dict[str, str]:
        return {"x-goog-api-key": channel.key}

    def models_request(self, channel: ChannelRoute) -> tuple[str, dict[str, str]]:
        return (f"{channel.base_url.rstrip('/')}/{GEMINI_API_VERSION}/models?pageSize=1000",
                self.build_headers(channel))

    def models_from(self, answer: Any) -> list[str]:
        return [str(m["name"]).removeprefix("models/") for m in answer["models"]]

    def passthrough_body(self, call: RelayCall, channel: ChannelRoute) -> bytes:
        """The model is in the URL; only a batch of embeddings names it again in each request."""
        target = channel.upstream_model(call.model)
        requests = call.obj.get("requests")
        if target == call.model or not isinstance(requests, list):
            return call.body
        return orjson.dumps(dict(call.obj, requests=[dict(r, model=f"models/{target}") if isinstance(r, dict)
                                                     else r for r in requests]))

    def request_from_pivot(self, pivot: dict[str, Any], call: RelayCall, channel: ChannelRoute) -> bytes:
        if call.op == Mode.IMAGES_GENERATIONS:  # Imagen: the prompt, how many, and the size as an aspect ratio
            parameters: dict[str, Any] = {"sampleCount": int(pivot.get("n") or 1)}
            if VERTEX_ASPECT_RATIOS.get(str(pivot.get("size"))):
                parameters["aspectRatio"] = VERTEX_ASPECT_RATIOS[str(pivot["size"])]
            return orjson.dumps({"instances": [{"prompt": str(pivot.get("prompt") or "")}], "parameters": parameters})
        if call.op == Mode.EMBEDDINGS:
            return orjson.dumps(gemini_embeddings_request(pivot, channel.upstream_model(call.model)))
        return orjson.dumps(openai_to_gemini_request(pivot))

    def passthrough_response(self, call: RelayCall, body: bytes) -> tuple[bytes, Usage | None]:
        answer = loads_object(body)
        if answer is None:
            return body, None
        if call.op == Mode.EMBEDDINGS:  # Gemini counts no embedding tokens: estimate the input's
            prompt = estimate_tokens(len(call.body))
            return body, Usage(prompt, 0, prompt, 0, True)
        if answer.get("modelVersion") not in (None, call.model):
            answer["modelVersion"] = call.model
            body = orjson.dumps(answer)
        return body, gemini_usage(answer.get("usageMetadata"))

    def response_to_pivot(self, call: RelayCall, body: bytes) -> tuple[dict[str, Any], Usage | None]:
        answer = json_object(body, "Gemini's answer")
        if call.op != Mode.EMBEDDINGS:
            return gemini_to_openai_response(answer, call.model, call.request_id)
        vectors = [e.get("values") or [] for e in answer.get("embeddings") or [] if isinstance(e, dict)]
        prompt = estimate_tokens(len(orjson.dumps(call.pivot().get("input"))))
        usage = Usage(prompt, 0, prompt, 0, True)
        return {"object": "list", "model": call.model,
                "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
                "usage": {"prompt_tokens": prompt, "total_tokens": prompt}}, usage

    def passthrough_stream(self, call: RelayCall, channel: ChannelRoute) -> StreamFilter:
        return GeminiPassthrough(call, channel)

    def pivot_decoder(self, call: RelayCall) -> PivotDecoder:
        return GeminiDecoder(call)

    def convert_error(self, status: int, body: bytes) -> RelayError:
        return read_gemini_error(status, body)




# -- Gemini → pivot (a Gemini client, e.g. Gemini CLI or google-genai, on any channel) --

def _openai_media(part: dict[str, Any]) -> dict[str, Any] | None:
    if isinstance(part.get("inlineData"), dict):
        blob = part["inlineData"]
        url = f"data:{blob.get('mimeType') or 'application/octet-stream'};base64,{blob.get('data', '')}"
    elif isinstance(part.get("fileData"), dict):
        blob = part["fileData"]
        url = blob.get("fileUri") or ""
    else:
        return None
    mime = str(blob.get("mimeType") or "")
    if mime.startswith("image/") or not mime:
        return {"type": "image_url", "image_url": {"url": url}}
    return {"type": "file", "file": {"filename": "file", "file_data": url}}


def _gemini_thinking(config: dict[str, Any]) -> str | None:
    """thinkingConfig as a reasoning_effort; None when it asks for nothing in particular (-1 is dynamic)."""
    thinking = config.get("thinkingConfig") or {}
    level = thinking.get("thinkingLevel")
    if isinstance(level, str) and level:
        return level.lower()
    budget = thinking.get("thinkingBudget")
    if not isinstance(budget, int) or budget < 0:
        return None
    return "none" if budget == 0 else "low" if budget <= 1024 else "medium" if budget <= 8192 else "high"


def _chat_options_from_gemini(config: dict[str, Any]) -> dict[str, Any]:
    chat: dict[str, Any] = {}
    for theirs, ours in (("temperature", "temperature"), ("topP", "top_p"), ("maxOutputTokens", "max_tokens"),
                         ("candidateCount", "n"), ("presencePenalty", "presence_penalty"),
                         ("frequencyPenalty", "frequency_penalty"), ("seed", "seed")):
        if config.get(theirs) is not None:
            chat[ours] = config[theirs]
    if config.get("stopSequences"):
        chat["stop"] = config["stopSequences"]
    schema = config.get("responseJsonSchema") or config.get("responseSchema")
    if schema:
        chat["response_format"] = {"type": "json_schema", "json_schema": {"name": "response",
                                                                          "schema": openai_schema(schema)}}
    elif config.get("responseMimeType") == "application/json":
        chat["response_format"] = {"type": "json_object"}
    effort = _gemini_thinking(config)
    if effort:
        chat["reasoning_effort"] = effort
    return chat


def _chat_tools_from_gemini(body: dict[str, Any]) -> dict[str, Any]:
    declarations = [d for tool in body.get("tools") or [] if isinstance(tool, dict)
                    for d in tool.get("functionDeclarations") or [] if isinstance(d, dict)]
    if not declarations:  # googleSearch, codeExecution and the like have no chat form
        return {}
    chat: dict[str, Any] = {"tools": [{"type": "function", "function": {
        "name": d.get("name", ""), "description": d.get("description", ""),
        "parameters": d.get("parametersJsonSchema") or openai_schema(d.get("parameters"))
        or {"type": "object", "properties": {}}}} for d in declarations]}
    calling = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
    mode, allowed = calling.get("mode"), calling.get("allowedFunctionNames") or []
    if mode == "ANY" and len(allowed) == 1:
        chat["tool_choice"] = {"type": "function", "function": {"name": allowed[0]}}
    elif mode in ("AUTO", "ANY", "NONE"):
        chat["tool_choice"] = {"AUTO": "auto", "ANY": "required", "NONE": "none"}[mode]
    return chat


def gemini_to_openai_request(body: dict[str, Any], model: str) -> dict[str, Any]:
    """A generateContent body as an OpenAI chat request. Each functionCall gets an id (call_0, call_1, … in the
    order of the conversation), and each functionResponse the id of the oldest unanswered call of its name."""
    messages: list[dict[str, Any]] = []
    system = _text_of((body.get("systemInstruction") or {}).get("parts"))
    if system:
        messages.append({"role": "system", "content": system})
    waiting: dict[str, list[str]] = collections.defaultdict(list)  # function name → ids of unanswered calls
    calls = 0
    for i, content in enumerate(body["contents"]):
        parts = content.get("parts") if isinstance(content, dict) else None
        if not isinstance(parts, list):
            raise RelayError(400, f"contents[{i}].parts: a list of parts is required.", "invalid_request")
        parts = [p for p in parts if isinstance(p, dict)]
        if content.get("role") == "model":
            text, thought = _gemini_text(parts, thought=False), _gemini_text(parts, thought=True)
            message: dict[str, Any] = {"role": "assistant", "content": text or None}
            if thought:
                message["reasoning_content"] = thought
            for part in (p for p in parts if isinstance(p.get("functionCall"), dict)):
                call_id = f"call_{calls}"
                calls += 1
                waiting[part["functionCall"].get("name") or ""].append(call_id)
                message.setdefault("tool_calls", []).append({"id": call_id, "type": "function", "function": {
                    "name": part["functionCall"].get("name") or "",
                    "arguments": orjson.dumps(part["functionCall"].get("args") or {}).decode()}})
            if message["content"] is None and "tool_calls" not in message:
                message["content"] = ""
            messages.append(message)
            continue
        for part in (p for p in parts if isinstance(p.get("functionResponse"), dict)):
            name = part["functionResponse"].get("name") or ""
            call_id = waiting[name].pop(0) if waiting[name] else f"call_{calls}"
            messages.append({"role": "tool", "tool_call_id": call_id,
                             "content": orjson.dumps(part["functionResponse"].get("response") or {}).decode()})
        pieces = [{"type": "text", "text": p["text"]} if isinstance(p.get("text"), str) else _openai_media(p)
                  for p in parts if "functionResponse" not in p]
        pieces = [p for p in pieces if p]
        if pieces:
            only_text = all(p["type"] == "text" for p in pieces)
            messages.append({"role": "user", "content": "".join(p["text"] for p in pieces) if only_text else pieces})
    chat = {"model": model, "messages": messages, **_chat_options_from_gemini(body.get("generationConfig") or {}),
            **_chat_tools_from_gemini(body)}
    return chat


def openai_to_gemini_response(chat: dict[str, Any], model: str) -> dict[str, Any]:
    choice = (chat.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    parts: list[dict[str, Any]] = []
    reasoning = _reasoning_of(message)
    if reasoning:
        parts.append({"text": reasoning, "thought": True})
    text = _text_of(message.get("content"))
    if text:
        parts.append({"text": text})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        parts.append({"functionCall": {"name": function.get("name") or "", "args": _arguments(function.get("arguments"))}})
    return {"candidates": [{"content": {"role": "model", "parts": parts or [{"text": ""}]},
                            "finishReason": _TO_GEMINI_STOPS.get(choice.get("finish_reason"), "STOP"), "index": 0}],
            "usageMetadata": usage_to_gemini(usage_from(chat)), "modelVersion": model,
            "responseId": str(chat.get("id") or "")}


def _embedding_values(chat: dict[str, Any]) -> list[Any]:
    return [item.get("embedding") or [] for item in sorted(chat.get("data") or [], key=lambda d: d.get("index", 0))]


class GeminiEncoder(PivotEncoder):
    """Pivot chunks as Gemini's stream: an event of text or thought parts per chunk, and at the end one event with
    the function calls (Gemini sends each call whole), the finish reason and the usage."""

    def __init__(self, call: RelayCall) -> None:
        self.model, self.id = call.model, call.request_id
        self.calls: dict[int, dict[str, str]] = {}  # pivot tool call index → name and arguments so far
        self.finish = "STOP"

    def _event(self, parts: list[dict[str, Any]], finish: str | None = None, usage: Usage | None = None) -> bytes:
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
        answer: dict[str, Any] = {"candidates": [candidate], "modelVersion": self.model, "responseId": self.id}
        if finish:
            candidate["finishReason"] = finish
            answer["usageMetadata"] = usage_to_gemini(usage)
        return sse(answer)

    def encode(self, chunk: dict[str, Any]) -> bytes:
        parts: list[dict[str, Any]] = []
        for choice in (chunk.get("choices") or [])[:1]:
            delta = choice.get("delta") or {}
            reasoning = _reasoning_of(delta)
            if reasoning:
                parts.append({"text": reasoning, "thought": True})
            if delta.get("content"):
                parts.append({"text": delta["content"]})
            for call in delta.get("tool_calls") or []:
                function = call.get("function") or {}
                known = self.calls.setdefault(call.get("index", 0), {"name": "", "arguments": ""})
                known["name"] = known["name"] or function.get("name") or ""
                known["arguments"] += function.get("arguments") or ""
            if choice.get("finish_reason"):
                self.finish = _TO_GEMINI_STOPS.get(choice["finish_reason"], "STOP")
        return self._event(parts) if parts else b""

    def close(self, usage: Usage | None) -> bytes:
        parts = [{"functionCall": {"name": c["name"], "args": _arguments(c["arguments"])}}
                 for _, c in sorted(self.calls.items())]
        return self._event(parts or [{"text": ""}], self.finish, usage)


_GEMINI_PART = {"text": str, "thought": bool, "inlineData": {"mimeType": str, "data": str},
                "fileData": {"mimeType": str, "fileUri": str}, "functionCall": {"name": str, "args": dict},
                "functionResponse": {"name": str, "response": dict}}
_GEMINI_CONTENT = {"role": str, "parts": [_GEMINI_PART]}
_GEMINI_GENERATE = {
    "contents": [_GEMINI_CONTENT], "systemInstruction": _GEMINI_CONTENT,
    "generationConfig": {
        "temperature": NUMBER, "topP": NUMBER, "topK": NUMBER, "maxOutputTokens": NUMBER, "candidateCount": NUMBER,
        "presencePenalty": NUMBER, "frequencyPenalty": NUMBER, "seed": NUMBER, "stopSequences": [str],
        "responseMimeType": str, "responseSchema": dict, "responseJsonSchema": dict,
        "thinkingConfig": {"thinkingBudget": NUMBER, "thinkingLevel": str, "includeThoughts": bool}},
    "tools": [{"functionDeclarations": [{"name": str, "description": str, "parameters": dict,
                                         "parametersJsonSchema": dict}]}],
    "toolConfig": {"functionCallingConfig": {"mode": str, "allowedFunctionNames": [str]}},
}
_GEMINI_EMBED = {"model": str, "content": _GEMINI_CONTENT, "outputDimensionality": NUMBER}
#: per method, the fields of a request that the conversion to the pivot (or the token estimate) reads
GEMINI_SHAPES: dict[str, Any] = {
    "generateContent": _GEMINI_GENERATE, "streamGenerateContent": _GEMINI_GENERATE,
    "countTokens": {"contents": [_GEMINI_CONTENT], "generateContentRequest": _GEMINI_GENERATE},
    "embedContent": _GEMINI_EMBED, "batchEmbedContents": {"requests": [_GEMINI_EMBED]},
}


class GeminiDialect(Dialect):
    """Gemini's API (Gemini CLI, google-genai) on every channel: `POST /{v1,v1beta}/models/{model}:{method}` for
    generateContent, streamGenerateContent (always answered as SSE, as with `alt=sse`), countTokens,
    embedContent and batchEmbedContents. The key comes in `x-goog-api-key` or `?key=`."""

    format = "gemini"
    prefixes = ("/v1beta",)

    def routes(self) -> Iterable[tuple[str, RelayRoute]]:
        return ()  # every path names its model: see match()

    def match(self, incoming: Incoming) -> RelayRoute | None:
        if incoming.method == "GET":
            return super().match(incoming)
        found = _GEMINI_PATH.fullmatch(incoming.path) if incoming.method == "POST" else None
        if found is None or found.group(3) not in _GEMINI_METHODS:
            return None
        model, name = found.group(2), found.group(3)
        op, streams = _GEMINI_METHODS[name]
        return RelayRoute(self, Mode.GEMINI, op, name + ("?alt=sse" if streams else ""),
                          native_only=op is None, model=model)

    def owns(self, path: str, method: str) -> bool:
        return method == "POST" and _GEMINI_DOOR.match(path) is not None

    def lists_models(self, incoming: Incoming) -> bool:
        """`GET /v1beta/models[/{model}]`, and under /v1 when the key came Google's way (google-genai with
        api_version v1)."""
        if is_models_path(incoming.path, "/v1beta"):
            return True
        headers = incoming.headers
        return (is_models_path(incoming.path, "/v1") and b"authorization" not in headers
                and (b"x-goog-api-key" in headers or b"key=" in incoming.query))

    def api_key(self, incoming: Incoming) -> str:
        key = incoming.headers.get(b"x-goog-api-key", b"").decode("latin-1").strip()
        if not key:
            query = urllib.parse.parse_qs(incoming.query.decode("latin-1"))
            key = (query.get("key") or [""])[0].strip()
        return key or super().api_key(incoming)

    def read(self, call: RelayCall) -> None:
        if call.obj is None:
            raise RelayError(400, "The request body must be JSON.", "invalid_json")
        method = call.upstream_path.partition("?")[0]
        needs = {"embedContent": ("content", dict), "batchEmbedContents": ("requests", list)}.get(
            method, ("contents", list))
        if method == "countTokens" and "generateContentRequest" in call.obj:
            needs = ("generateContentRequest", dict)
        if not isinstance(call.obj.get(needs[0]), needs[1]):
            raise RelayError(400, f"{needs[0]}: a {needs[1].__name__} is required.", "invalid_request")
        call.stream = method == "streamGenerateContent"
        call.client_wants_usage = True  # a Gemini stream always ends with its usage

    def shape(self, call: RelayCall) -> Any:
        return GEMINI_SHAPES.get(call.upstream_path.partition("?")[0])

    def to_pivot(self, call: RelayCall) -> dict[str, Any]:
        if call.op != Mode.EMBEDDINGS:
            chat = gemini_to_openai_request(call.obj, call.model)
            return dict(chat, stream=True) if call.stream else chat
        requests = call.obj.get("requests") or [call.obj]
        texts = [_text_of((r.get("content") or {}).get("parts")) for r in requests if isinstance(r, dict)]
        pivot: dict[str, Any] = {"model": call.model, "input": texts, "encoding_format": "float"}
        dimensions = requests[0].get("outputDimensionality") if requests and isinstance(requests[0], dict) else None
        if dimensions:
            pivot["dimensions"] = dimensions
        return pivot

    def response_from_pivot(self, call: RelayCall, pivot: dict[str, Any]) -> bytes:
        if call.op != Mode.EMBEDDINGS:
            return orjson.dumps(openai_to_gemini_response(pivot, call.model))
        vectors = _embedding_values(pivot)
        if call.upstream_path == "embedContent":
            return orjson.dumps({"embedding": {"values": vectors[0] if vectors else []}})
        return orjson.dumps({"embeddings": [{"values": v} for v in vectors]})

    def stream_encoder(self, call: RelayCall) -> PivotEncoder:
        return GeminiEncoder(call)

    def error_body(self, error: RelayError) -> bytes:
        return gemini_error(error.status, error.message)

    def stream_error(self, error: RelayError, call: RelayCall | None = None) -> bytes:
        return b"data: " + self.error_body(error) + b"\n\n"

    def model_entry(self, model: str, owner: str, kind: str) -> dict[str, Any]:
        methods = (["embedContent", "batchEmbedContents"] if kind == "embedding"
                   else ["generateContent", "streamGenerateContent", "countTokens"])
        return {"name": f"models/{model}", "baseModelId": model, "version": "", "displayName": model,
                "description": f"served by {owner}", "supportedGenerationMethods": methods}

    def model_list(self, entries: list[dict[str, Any]]) -> dict[str, Any]:
        return {"models": entries}

    def answer_locally(self, call: RelayCall) -> bytes:
        request = call.obj.get("generateContentRequest") or call.obj
        counted = [request.get(k) for k in ("systemInstruction", "contents", "tools")]
        return orjson.dumps({"totalTokens": estimate_tokens(len(orjson.dumps(counted)))})


# ==== 10. OpenAI Responses: the client door /v1/responses (Codex, the openai SDK), on every channel =========
# developers.openai.com: the Responses API and its streaming events, which the SDKs parse strictly (one
# response id throughout, each item added before its deltas and done before response.completed). A provider row
# with "nativeFormats": ["responses"] (OpenAI itself) gets the request as it is; every other channel through the
# pivot. Answers are stored (unless `store: false`; section 5's stored responses), so `previous_response_id` replays the turns
# before it: upstream, unless that channel itself answered the previous turn and so knows it.

@dataclass
class ResponsesTurn:
    """One /v1/responses call: this turn's input, the stored turns it continues, and where to keep its answer."""

    id: str
    items: list[dict[str, Any]]  # this turn's input, as items
    history: list[dict[str, Any]] = field(default_factory=list)  # stored turns it continues, oldest first
    gap: str = ""  # the first earlier response of the chain this gateway does not hold
    state: AppState | None = None  # where the answer is kept; None with `store: false`
    channel: int = 0  # the native channel the request went to last
    sequence: int = 0  # the next stream event's sequence_number
    snapshot: dict[str, Any] | None = None  # the response as streamed so far
    started: bool = False  # response.created is out

    def event(self, kind: str, **data: Any) -> bytes:
        self.sequence += 1
        return sse({"type": kind, "sequence_number": self.sequence - 1, **data}, kind)

    def open_stream(self) -> bytes:
        """response.created and response.in_progress, once: every event of a stream comes after them."""
        if self.started or self.snapshot is None:
            return b""
        self.started = True
        return self.event("response.created", response=self.snapshot) + self.event("response.in_progress",
                                                                                   response=self.snapshot)

    def keep(self, call: RelayCall, response: dict[str, Any], native_channel: int = 0) -> None:
        if self.state is not None and response.get("status") in ("completed", "incomplete"):
            self.state.responses.remember({
                "id": response.get("id") or self.id, "created_at": now_ms(), "token_id": call.caller.token_id,
                "native_channel": native_channel, "model": call.model,
                "previous_response_id": call.obj.get("previous_response_id") or "",
                "input_items": self.items, "answer": response})


def responses_turn(call: RelayCall) -> ResponsesTurn:
    """The call's turn; a call that skipped the dialect's prepare() (a unit test) gets one that stores nothing."""
    if call.dialect_state is None:
        call.dialect_state = ResponsesTurn(f"resp_{call.request_id}", responses_input_items(call.obj))
    return call.dialect_state


def responses_input_items(body: dict[str, Any]) -> list[dict[str, Any]]:
    value = body.get("input")
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def replay_items(history: list[dict[str, Any]], native: bool) -> list[dict[str, Any]]:
    """Stored turns as input items: each turn's input, then its output. For an OpenAI upstream, output items go
    without their ids and reasoning items not at all: that upstream never saw them, and refuses unknown ids."""
    items: list[dict[str, Any]] = []
    for turn in history:
        items += turn["input_items"] or []
        for out in (turn["answer"] or {}).get("output") or []:
            kind = out.get("type")
            if kind == "message":
                items.append({"type": "message", "role": "assistant", "content": out.get("content") or []})
            elif kind == "function_call":
                items.append({k: out.get(k) for k in ("type", "call_id", "name", "arguments")})
            elif kind == "reasoning" and not native:
                items.append(out)
    return items


def _chat_user_content(content: Any) -> Any:
    if not isinstance(content, list):
        return content if isinstance(content, str) else ""
    parts = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": part.get("text", "")})
        elif kind == "input_image" and part.get("image_url"):
            image = {"url": part["image_url"], **({"detail": part["detail"]} if part.get("detail") else {})}
            parts.append({"type": "image_url", "image_url": image})
        elif kind == "input_file" and part.get("file_data"):
            parts.append({"type": "file", "file": {"filename": part.get("filename") or "file",
                                                   "file_data": part["file_data"]}})
    if all(p["type"] == "text" for p in parts):  # several OpenAI-style upstreams take no list of parts
        return "\n".join(p["text"] for p in parts)
    return parts


def _reasoning_text(item: dict[str, Any]) -> str:
    return "".join(p.get("text", "") for key in ("summary", "content") for p in item.get(key) or []
                   if isinstance(p, dict))


def _chat_options_from_responses(body: dict[str, Any]) -> dict[str, Any]:
    chat: dict[str, Any] = {name: body[name] for name in ("temperature", "top_p", "parallel_tool_calls")
                            if body.get(name) is not None}
    if body.get("max_output_tokens"):
        chat["max_tokens"] = body["max_output_tokens"]
    effort = (body.get("reasoning") or {}).get("effort")
    if effort:
        chat["reasoning_effort"] = effort
    functions = [t for t in body.get("tools") or [] if isinstance(t, dict) and t.get("type") == "function"]
    if functions:  # built-in tools (web_search, ...) have no chat form
        chat["tools"] = [{"type": "function", "function": {k: t[k] for k in ("name", "description", "parameters",
                                                                              "strict") if t.get(k) is not None}}
                         for t in functions]
        choice = body.get("tool_choice")
        if choice in ("auto", "none", "required"):
            chat["tool_choice"] = choice
        elif isinstance(choice, dict) and choice.get("type") == "function":
            chat["tool_choice"] = {"type": "function", "function": {"name": choice.get("name", "")}}
    text_format = (body.get("text") or {}).get("format") or {}
    if text_format.get("type") == "json_schema":
        chat["response_format"] = {"type": "json_schema", "json_schema": {
            k: text_format[k] for k in ("name", "schema", "strict", "description") if k in text_format}}
    elif text_format.get("type") == "json_object":
        chat["response_format"] = {"type": "json_object"}
    user = body.get("user") or body.get("safety_identifier")
    if isinstance(user, str):
        chat["user"] = user
    return chat


def responses_to_chat(body: dict[str, Any], items: list[dict[str, Any]]) -> dict[str, Any]:
    """A Responses request (its earlier turns already in `items`) as an OpenAI chat request: instructions become
    the system message, function calls the assistant's tool_calls, their outputs tool messages, and a reasoning
    item the reasoning_content of the assistant turn after it."""
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    reasoning = ""
    for item in items:
        kind = item.get("type") or "message"
        if kind == "reasoning":
            reasoning += _reasoning_text(item)
        elif kind == "function_call_output":
            output = item.get("output")
            messages.append({"role": "tool", "tool_call_id": item.get("call_id") or "",
                             "content": output if isinstance(output, str) else _text_of(output)})
        elif kind == "function_call":
            last = messages[-1] if messages else {}
            if last.get("role") != "assistant":
                last = {"role": "assistant", "content": None}
                messages.append(last)
            last.setdefault("tool_calls", []).append({"id": item.get("call_id") or "", "type": "function",
                                                      "function": {"name": item.get("name") or "",
                                                                   "arguments": item.get("arguments") or "{}"}})
        elif kind == "message":
            role = item.get("role")
            if role in ("system", "developer"):
                messages.append({"role": "system", "content": _text_of(item.get("content"))})
            elif role == "assistant":
                messages.append({"role": "assistant", "content": _text_of(item.get("content"))})
            else:
                messages.append({"role": "user", "content": _chat_user_content(item.get("content"))})
        else:
            continue  # item references, built-in tool calls: nothing a chat upstream can take
        if reasoning and messages and messages[-1]["role"] == "assistant":
            messages[-1]["reasoning_content"] = reasoning  # DeepSeek's thinking refuses a turn without it
            reasoning = ""
    chat = {"model": body["model"], "messages": messages, **_chat_options_from_responses(body)}
    if body.get("stream"):
        chat["stream"] = True
    return chat


def usage_to_responses(usage: Usage | None, reasoning_tokens: int = 0) -> dict[str, Any]:
    usage = usage or Usage()
    return {"input_tokens": usage.input_tokens, "input_tokens_details": {"cached_tokens": usage.cached_tokens},
            "output_tokens": usage.output_tokens, "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
            "total_tokens": usage.total_tokens}


def response_object(call: RelayCall, turn: ResponsesTurn, status: str, output: list[dict[str, Any]],
                    usage: dict[str, Any] | None) -> dict[str, Any]:
    """The Response around `output`, echoing the request's settings as OpenAI does."""
    body = call.obj
    return {
        "id": turn.id, "object": "response", "created_at": int(call.started), "status": status,
        "background": False, "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
        "model": call.model, "output": output, "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": (body.get("reasoning") or {}).get("effort"), "summary": None},
        "store": body.get("store", True) is not False, "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}}, "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [], "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"), "usage": usage, "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }


def _message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}] if status == "completed" else []
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}


def _function_call_item(item_id: str, call: dict[str, Any], call_id: str, status: str = "completed") -> dict[str, Any]:
    function = call.get("function") or {}
    return {"id": item_id, "type": "function_call", "status": status, "call_id": call.get("id") or call_id,
            "name": function.get("name") or "", "arguments": function.get("arguments") or ""}


def chat_to_response(chat: dict[str, Any], call: RelayCall, turn: ResponsesTurn) -> dict[str, Any]:
    choice = (chat.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    output: list[dict[str, Any]] = []
    reasoning = _reasoning_of(message)
    if reasoning:
        output.append({"id": f"rs_{call.request_id}", "type": "reasoning",
                       "summary": [{"type": "summary_text", "text": reasoning}]})
    text = _text_of(message.get("content"))
    if text:
        output.append(_message_item(f"msg_{call.request_id}", text))
    for i, tool_call in enumerate(message.get("tool_calls") or []):
        output.append(_function_call_item(f"fc_{call.request_id}_{i}", tool_call, f"call_{call.request_id}_{i}"))
    status = "incomplete" if choice.get("finish_reason") == "length" else "completed"
    details = (chat.get("usage") or {}).get("completion_tokens_details") or {}
    usage = usage_to_responses(usage_from(chat), int(details.get("reasoning_tokens") or 0))
    return response_object(call, turn, status, output, usage)


class ResponsesEncoder(PivotEncoder):
    """Pivot chunks as Responses events: response.created and .in_progress, then per output item (reasoning,
    message, each function call) its added event, its deltas and its done events, and response.completed (or
    .incomplete at the length limit) with the whole response and usage. No [DONE]."""

    def __init__(self, call: RelayCall) -> None:
        self.call, self.turn = call, responses_turn(call)
        self.output: list[dict[str, Any]] = []  # the items so far, in output order
        self.open: list[int] = []  # output indexes of the items not done yet
        self.current: dict[str, int] = {}  # "message" / "reasoning" → the open item of that kind
        self.tools: dict[int, int] = {}  # pivot tool call index → output index
        # an open item's deltas, joined when it is done: `+=` would copy a long answer's text for every delta
        self.pieces: dict[int, list[str]] = collections.defaultdict(list)
        self.finish: str | None = None
        self.turn.snapshot = response_object(call, self.turn, "in_progress", self.output, None)

    def _add(self, kind: str, item: dict[str, Any]) -> tuple[int, bytes]:
        """Close the open items of the other kinds (a function call stays open beside its siblings), then add."""
        closing = [i for i in self.open if self.output[i]["type"] != kind or kind != "function_call"]
        out = b"".join(self._done(i) for i in closing)
        index = len(self.output)
        self.output.append(item)
        self.open.append(index)
        return index, out + self.turn.event("response.output_item.added", output_index=index, item=item)

    def _done(self, index: int) -> bytes:
        self.open.remove(index)
        item = self.output[index]
        text = "".join(self.pieces.pop(index, ()))
        where = {"item_id": item["id"], "output_index": index}
        if item["type"] == "message":
            self.current.pop("message", None)
            part = item["content"][0]
            part["text"] = text
            out = (self.turn.event("response.output_text.done", **where, content_index=0, text=part["text"],
                                   logprobs=[])
                   + self.turn.event("response.content_part.done", **where, content_index=0, part=part))
        elif item["type"] == "reasoning":
            self.current.pop("reasoning", None)
            part = item["summary"][0]
            part["text"] = text
            out = (self.turn.event("response.reasoning_summary_text.done", **where, summary_index=0,
                                   text=part["text"])
                   + self.turn.event("response.reasoning_summary_part.done", **where, summary_index=0, part=part))
        else:
            item["arguments"] = text
            out = self.turn.event("response.function_call_arguments.done", **where, arguments=text)
        item["status"] = "completed"
        return out + self.turn.event("response.output_item.done", output_index=index, item=item)

    def _text(self, text: str) -> bytes:
        out = b""
        if "message" not in self.current:
            index, out = self._add("message", _message_item(f"msg_{self.call.request_id}_{len(self.output)}", "",
                                                            "in_progress"))
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            out += self.turn.event("response.content_part.added", item_id=self.output[index]["id"],
                                   output_index=index, content_index=0, part=part)
            self.output[index]["content"].append(dict(part))
            self.current["message"] = index
        index = self.current["message"]
        self.pieces[index].append(text)
        return out + self.turn.event("response.output_text.delta", item_id=self.output[index]["id"],
                                     output_index=index, content_index=0, delta=text, logprobs=[])

    def _reasoning(self, text: str) -> bytes:
        out = b""
        if "reasoning" not in self.current:
            index, out = self._add("reasoning", {"id": f"rs_{self.call.request_id}_{len(self.output)}",
                                                 "type": "reasoning", "summary": []})
            part = {"type": "summary_text", "text": ""}
            out += self.turn.event("response.reasoning_summary_part.added", item_id=self.output[index]["id"],
                                   output_index=index, summary_index=0, part=part)
            self.output[index]["summary"].append(dict(part))
            self.current["reasoning"] = index
        index = self.current["reasoning"]
        self.pieces[index].append(text)
        return out + self.turn.event("response.reasoning_summary_text.delta", item_id=self.output[index]["id"],
                                     output_index=index, summary_index=0, delta=text)

    def _tool(self, call: dict[str, Any]) -> bytes:
        number, out = call.get("index", 0), b""
        if number not in self.tools:
            item = _function_call_item(f"fc_{self.call.request_id}_{number}", dict(call, function=dict(
                call.get("function") or {}, arguments="")), f"call_{self.call.request_id}_{number}", "in_progress")
            self.tools[number], out = self._add("function_call", item)
        index = self.tools[number]
        arguments = (call.get("function") or {}).get("arguments") or ""
        if arguments and index in self.open:
            self.pieces[index].append(arguments)
            out += self.turn.event("response.function_call_arguments.delta", item_id=self.output[index]["id"],
                                   output_index=index, delta=arguments)
        return out

    def encode(self, chunk: dict[str, Any]) -> bytes:
        out = [self.turn.open_stream()]
        for choice in (chunk.get("choices") or [])[:1]:
            delta = choice.get("delta") or {}
            reasoning = _reasoning_of(delta)
            if reasoning:
                out.append(self._reasoning(reasoning))
            if delta.get("content"):
                out.append(self._text(delta["content"]))
            out += [self._tool(call) for call in delta.get("tool_calls") or []]
            self.finish = choice.get("finish_reason") or self.finish
        return b"".join(out)

    def close(self, usage: Usage | None) -> bytes:
        out = self.turn.open_stream() + b"".join(self._done(i) for i in list(self.open))
        status = "incomplete" if self.finish == "length" else "completed"
        final = response_object(self.call, self.turn, status, self.output, usage_to_responses(usage))
        self.turn.keep(self.call, final)
        return out + self.turn.event(f"response.{status}", response=final)


class ResponsesPassthrough(StreamFilter):
    """hot path: an OpenAI Responses stream for a Responses client. Bytes pass; the response.created event gives
    the response's id (for an error later), the final event its usage and the answer to store; a mapped model is
    renamed back."""

    _FINAL = (b"response.completed", b"response.incomplete", b"response.failed", b'"type":"error"')

    def __init__(self, call: RelayCall, channel: ChannelRoute) -> None:
        self.call, self.turn, self.channel = call, responses_turn(call), channel.id
        self.rename = model_rename(call, channel)

    def feed(self, events: bytes) -> bytes:
        self.events += events.count(b"data:")
        self.turn.sequence = self.events  # the upstream numbers its events from 0
        if not self.turn.started or any(mark in events for mark in self._FINAL):
            for event in sse_events(events):
                self._read(sse_fields(event)[1])
        return _rewrite_model(events, *self.rename) if self.rename else events

    def _read(self, data: bytes) -> None:
        event = loads_object(data) or {}
        kind, response = event.get("type"), event.get("response")
        if kind == "response.created" and isinstance(response, dict):
            self.turn.snapshot, self.turn.started = dict(response, model=self.call.model), True
        elif kind in ("response.completed", "response.incomplete") and isinstance(response, dict):
            self.usage = usage_from(response)
            self.turn.keep(self.call, dict(response, model=self.call.model), self.channel)
        elif kind == "response.failed" and isinstance(response, dict):
            error = response.get("error") or {}
            self.error = RelayError(500, str(error.get("message") or "The response failed."),
                                    error.get("code") or "response_failed", "upstream_error")
        elif kind == "error":
            self.error = RelayError(500, str(event.get("message") or "The upstream stream failed."),
                                    event.get("code") or "upstream_error", "upstream_error")


class OpenAIResponsesAdaptor(Adaptor):
    """OpenAI itself (providers.json "nativeFormats": ["responses"]): /v1/responses passes through with only the
    model mapped, and with `previous_response_id` replaced by the stored turns when this upstream never saw the
    previous one (it was answered through the pivot, or by another channel)."""

    formats = frozenset({"openai", "responses"})
    openai_models = True

    def passthrough_body(self, call: RelayCall, channel: ChannelRoute) -> bytes:
        if call.dialect.format != "responses":
            return super().passthrough_body(call, channel)
        turn = responses_turn(call)
        turn.channel = channel.id
        body, target = call.obj, channel.upstream_model(call.model)
        if turn.history and turn.history[-1]["native_channel"] != channel.id:
            if turn.gap:
                raise RelayError(400, f"Previous response with id '{turn.gap}' not found.",
                                 "previous_response_not_found")
            body = {k: v for k, v in body.items() if k != "previous_response_id"}
            body["input"] = replay_items(turn.history, native=True) + turn.items
        elif target == call.model:
            return call.body
        return orjson.dumps(dict(body, model=target))

    def passthrough_response(self, call: RelayCall, body: bytes) -> tuple[bytes, Usage | None]:
        if call.dialect.format != "responses":
            return super().passthrough_response(call, body)
        response = json_object(body, "OpenAI's response")
        response["model"] = call.model
        responses_turn(call).keep(call, response, responses_turn(call).channel)
        return orjson.dumps(response), usage_from(response)

    def passthrough_stream(self, call: RelayCall, channel: ChannelRoute) -> StreamFilter:
        if call.dialect.format != "responses":
            return super().passthrough_stream(call, channel)
        return ResponsesPassthrough(call, channel)




_RESPONSES_PART = {"type": str, "text": str, "image_url": str, "detail": str, "file_data": str, "filename": str}
#: the fields of a Responses request that the conversion to the pivot reads (Dialect.shape, check_shape)
RESPONSES_SHAPE = {
    "model": str, "stream": bool, "store": bool, "previous_response_id": str, "instructions": Either(str, list),
    "input": Either(str, [{"type": str, "role": str, "content": Either(str, [_RESPONSES_PART]), "call_id": str,
                           "name": str, "arguments": str, "output": Either(str, list), "id": str,
                           "summary": [_RESPONSES_PART]}]),
    "tools": [{"type": str, "name": str, "description": str, "parameters": dict, "strict": bool}],
    "tool_choice": Either(str, {"type": str, "name": str}), "parallel_tool_calls": bool,
    "temperature": NUMBER, "top_p": NUMBER, "max_output_tokens": NUMBER, "user": str, "safety_identifier": str,
    "reasoning": {"effort": str, "summary": str},
    "text": {"format": {"type": str, "name": str, "schema": dict, "strict": bool, "description": str}},
    "metadata": dict,
}


class ResponsesDialect(Dialect):
    """`POST /v1/responses` (stream and non-stream) on every channel, and `GET` / `DELETE /v1/responses/{id}`
    for the stored answers (section 5)."""

    format = "responses"
    prefixes = ("/v1/responses",)

    def routes(self) -> Iterable[tuple[str, RelayRoute]]:
        yield "/v1/responses", RelayRoute(self, Mode.RESPONSES, Mode.CHAT_COMPLETIONS, "/responses")

    def match(self, incoming: Incoming) -> RelayRoute | None:
        path, method = incoming.path, incoming.method
        response_id = path.removeprefix("/v1/responses/")
        if response_id == path or not response_id or "/" in response_id or method not in ("GET", "DELETE"):
            return None
        return RelayRoute(self, Mode.RESPONSES_GET if method == "GET" else Mode.RESPONSES_DELETE, None, "",
                          serve="stored")

    def lists_models(self, incoming: Incoming) -> bool:
        return False  # OpenAI's model list serves the Responses clients

    def read(self, call: RelayCall) -> None:
        if call.obj is None or not isinstance(call.obj.get("input"), (str, list)):
            raise RelayError(400, "input: a string or a list of input items is required.", "invalid_request")
        call.stream = bool(call.obj.get("stream"))
        call.client_wants_usage = True  # response.completed always carries the usage

    def shape(self, call: RelayCall) -> Any:
        return RESPONSES_SHAPE

    async def prepare(self, state: AppState, call: RelayCall) -> None:
        keep = call.obj.get("store", True) is not False
        turn = ResponsesTurn(f"resp_{call.request_id}", responses_input_items(call.obj), state=state if keep else None)
        previous = call.obj.get("previous_response_id")
        if isinstance(previous, str) and previous:
            turn.history, turn.gap = await state.responses.chain(state.engine, previous, call.caller)
        call.dialect_state = turn

    def to_pivot(self, call: RelayCall) -> dict[str, Any]:
        turn = responses_turn(call)
        if turn.gap:
            raise RelayError(400, f"Previous response with id '{turn.gap}' not found.", "previous_response_not_found")
        return responses_to_chat(call.obj, replay_items(turn.history, native=False) + turn.items)

    def response_from_pivot(self, call: RelayCall, pivot: dict[str, Any]) -> bytes:
        turn = responses_turn(call)
        response = chat_to_response(pivot, call, turn)
        turn.keep(call, response)
        return orjson.dumps(response)

    def stream_encoder(self, call: RelayCall) -> PivotEncoder:
        return ResponsesEncoder(call)

    def stream_error(self, error: RelayError, call: RelayCall | None = None) -> bytes:
        """An `error` event, then response.failed with the output so far (after response.created, if the failure
        came first)."""
        turn = call.dialect_state if call is not None else None
        code = str(error.code) if error.code is not None else None
        if not isinstance(turn, ResponsesTurn):
            return sse({"type": "error", "code": code, "message": error.message, "param": None,
                        "sequence_number": 0}, "error")
        out = turn.open_stream() + turn.event("error", code=code, message=error.message, param=None)
        if turn.snapshot is not None:
            failed = dict(turn.snapshot, status="failed", error={"code": code or "server_error",
                                                                 "message": error.message})
            out += turn.event("response.failed", response=failed)
        return out


# ==== 11. AWS Bedrock: the upstream of type 33, the Converse API ============================================
# docs.aws.amazon.com/bedrock/latest/APIReference: Converse (`POST /model/{modelId}/converse`) and ConverseStream
# (`/converse-stream`, answered in AWS's binary event-stream framing: each message a prelude with its lengths and
# CRC32, headers such as `:event-type`, a JSON payload, and a CRC32 of the whole). Every client format reaches it
# through the pivot. Keys: `region|access_key|secret_key[|session_token]`, signed with SigV4 by botocore (the
# optional extra `aws`), or `region|api_key`, a Bedrock API key sent as a bearer token (no extra needed).

BEDROCK_INSTALL = "pip install 'aiproxy-local[aws]'"
_BEDROCK_STOPS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
                  "guardrail_intervened": "content_filter", "content_filtered": "content_filter",
                  "model_context_window_exceeded": "length"}
_BEDROCK_DOCUMENT_FORMATS = {"application/pdf": "pdf", "text/csv": "csv", "application/msword": "doc",
                             "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
                             "application/vnd.ms-excel": "xls",
                             "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
                             "text/html": "html", "text/plain": "txt", "text/markdown": "md"}
_BEDROCK_IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/gif": "gif",
                          "image/webp": "webp"}
#: an exception message's `:exception-type` → HTTP status, as the API reference lists them for ConverseStream
_BEDROCK_EXCEPTIONS = {"validationException": 400, "accessDeniedException": 403, "resourceNotFoundException": 404,
                       "throttlingException": 429, "serviceQuotaExceededException": 429,
                       "modelTimeoutException": 408, "modelNotReadyException": 429, "modelErrorException": 424,
                       "modelStreamErrorException": 424, "internalServerException": 500,
                       "serviceUnavailableException": 503}


def bedrock_model_id(model: str, region: str) -> str:
    """A model's Bedrock id: an id with a provider prefix (`anthropic.…`, `us.anthropic.…`, `amazon.nova-…`) or an
    ARN goes as it is; a Claude name (`claude-sonnet-4-5-20250929`) becomes `anthropic.<name>-v1:0`, behind the
    region's cross-region inference profile (`us.`, `eu.`, `apac.`), which Claude 4 and later require on demand."""
    if "." in model.split(":")[0] or model.startswith("arn:"):
        return model
    if not model.startswith("claude-"):
        return model
    geography = {"us": "us", "eu": "eu", "ap": "apac", "ca": "us"}.get(region.split("-")[0], "")
    return f"{geography + '.' if geography else ''}anthropic.{model}-v1:0"


def bedrock_usage(u: Any) -> Usage | None:
    """Bedrock's TokenUsage: inputTokens leaves out the cache reads and writes, which the pivot counts in."""
    if not isinstance(u, dict):
        return None
    read, written = int(u.get("cacheReadInputTokens") or 0), int(u.get("cacheWriteInputTokens") or 0)
    prompt, output = int(u.get("inputTokens") or 0) + read + written, int(u.get("outputTokens") or 0)
    return Usage(prompt, output, prompt + output, read)


def read_bedrock_error(status: int, body: bytes) -> RelayError:
    """`{"message": "..."}` (the error's type comes in a header, x-amzn-ErrorType), or any other text."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        obj = None
    message = (obj.get("message") or obj.get("Message")) if isinstance(obj, dict) else None
    if not isinstance(message, str) or not message:
        return read_openai_error(status, body)
    return RelayError(status, message, "bedrock_error", "upstream_error")


# -- pivot → Converse --

def _bedrock_image(url: str) -> dict[str, Any]:
    if not url.startswith("data:"):
        raise RelayError(400, "AWS Bedrock takes images as data: URLs (base64), not as links.", "invalid_image")
    header, _, data = url.partition(",")
    mime = header[5:].split(";")[0].lower()
    if mime not in _BEDROCK_IMAGE_FORMATS:
        raise RelayError(400, f"AWS Bedrock takes png, jpeg, gif or webp images, not {mime or 'this one'}.",
                         "invalid_image")
    return {"image": {"format": _BEDROCK_IMAGE_FORMATS[mime], "source": {"bytes": data}}}


def _bedrock_user_blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    blocks = []
    for part in content if isinstance(content, list) else []:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text" and part.get("text"):
            blocks.append({"text": part["text"]})
        elif part.get("type") == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if isinstance(url, str) and url:
                blocks.append(_bedrock_image(url))
        elif part.get("type") == "file" and str((part.get("file") or {}).get("file_data", "")).startswith("data:"):
            header, _, data = part["file"]["file_data"].partition(",")
            kind = _BEDROCK_DOCUMENT_FORMATS.get(header[5:].split(";")[0].lower())
            if kind is None:
                raise RelayError(400, "AWS Bedrock takes documents as pdf, csv, doc, docx, xls, xlsx, html, txt or md, "
                                      f"not {header[5:].split(';')[0] or 'this file'}.", "invalid_file")
            # a document's name must be unique in the request, of letters, digits, spaces, hyphens and brackets
            blocks.append({"document": {"format": kind, "name": f"document {len(blocks) + 1}",
                                        "source": {"bytes": data}}})
    return blocks


def _bedrock_assistant_blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    text = _text_of(message.get("content"))
    blocks: list[dict[str, Any]] = [{"text": text}] if text else []
    for i, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function") or {}
        blocks.append({"toolUse": {"toolUseId": call.get("id") or f"tooluse_{i}", "name": function.get("name") or "",
                                   "input": _arguments(function.get("arguments"))}})
    return blocks


def openai_to_converse_request(chat: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI chat request as a Converse request: system messages become `system`, tool results user turns
    of toolResult blocks, and turns of one role merge (Converse wants them to alternate, starting with a user)."""
    system, messages = fold_turns(
        chat, lambda text: {"text": text},
        lambda call_id, text: {"toolResult": {"toolUseId": call_id, "content": [{"text": text or " "}]}},
        _bedrock_assistant_blocks, _bedrock_user_blocks)
    body: dict[str, Any] = {"messages": messages}
    if system:
        body["system"] = system
    config: dict[str, Any] = {}
    limit = chat.get("max_completion_tokens") or chat.get("max_tokens")
    if limit:
        config["maxTokens"] = int(limit)
    elif "claude" in model:  # as on Anthropic's own API, a Claude answer is cut at a small default otherwise
        config["maxTokens"] = anthropic_max_tokens(model)
    for name, key in (("temperature", "temperature"), ("top_p", "topP")):
        if chat.get(name) is not None:
            config[key] = chat[name]
    stop = chat.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    if config:
        body["inferenceConfig"] = config
    functions = [t.get("function") or {} for t in chat.get("tools") or [] if t.get("type", "function") == "function"]
    if functions:
        tools = {"tools": [{"toolSpec": {
            "name": f.get("name", ""), "inputSchema": {"json": {"type": "object", **(f.get("parameters") or {})}},
            **({"description": f["description"]} if f.get("description") else {})}} for f in functions]}
        choice = chat.get("tool_choice")
        if isinstance(choice, dict):
            tools["toolChoice"] = {"tool": {"name": (choice.get("function") or {}).get("name", "")}}
        elif choice == "required":
            tools["toolChoice"] = {"any": {}}
        elif choice == "auto":
            tools["toolChoice"] = {"auto": {}}
        body["toolConfig"] = tools  # "none" has no Converse form: the tools stay (earlier toolUse blocks need them)
    budget = ANTHROPIC_THINKING_BUDGETS.get(chat.get("reasoning_effort"))
    if budget and "claude" in model and not any(m.get("tool_calls") for m in chat.get("messages") or []):
        body["additionalModelRequestFields"] = {"thinking": {"type": "enabled", "budget_tokens": budget}}
        config = body.setdefault("inferenceConfig", {})
        config["maxTokens"] = max(config.get("maxTokens", 0), budget + 1024)
        config.pop("temperature", None)
        config.pop("topP", None)
    return body


# -- Converse → pivot --

def converse_to_openai_response(answer: dict[str, Any], model: str,
                                request_id: str) -> tuple[dict[str, Any], Usage | None]:
    message = (answer.get("output") or {}).get("message") or {}
    text, thinking, calls = [], [], []
    for block in message.get("content") or []:
        if not isinstance(block, dict):
            continue
        if isinstance(block.get("text"), str):
            text.append(block["text"])
        elif isinstance(block.get("toolUse"), dict):
            use = block["toolUse"]
            calls.append({"id": use.get("toolUseId"), "type": "function", "function": {
                "name": use.get("name"), "arguments": orjson.dumps(use.get("input") or {}).decode()}})
        elif isinstance(block.get("reasoningContent"), dict):
            thinking.append(str((block["reasoningContent"].get("reasoningText") or {}).get("text") or ""))
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text or not calls else None}
    if thinking:
        reply["reasoning_content"] = "".join(thinking)
    if calls:
        reply["tool_calls"] = calls
    usage = bedrock_usage(answer.get("usage"))
    pivot = {"id": f"chatcmpl-{request_id}", "object": "chat.completion", "created": int(time.time()),
             "model": model, "choices": [{"index": 0, "message": reply,
                                          "finish_reason": _BEDROCK_STOPS.get(answer.get("stopReason"), "stop")}]}
    if usage is not None:
        pivot["usage"] = usage_to_openai(usage)
    return pivot, usage


#: an event-stream header value's width by its type (bool true/false, byte, short, int, long, timestamp, uuid);
#: the others (6 bytes, 7 string) carry a 2-byte length first
_EVENT_HEADER_WIDTHS = {0: 0, 1: 0, 2: 1, 3: 2, 4: 4, 5: 8, 8: 8, 9: 16}


class EventStreamError(ValueError):
    """A frame of AWS's event-stream framing that is not whole or not intact (a CRC mismatch)."""


def event_stream_messages(buffer: bytes) -> tuple[list[tuple[dict[str, str], bytes]], bytes,
                                                 EventStreamError | None]:
    """The whole messages at the start of `buffer` as (string headers, payload), the bytes left over, and the
    error of a message that is not intact (the messages before it are returned). Each message: total length and
    headers length (big-endian uint32), the prelude's CRC32, headers, payload, and the CRC32 of all before it."""
    messages, at = [], 0
    while len(buffer) - at >= 12:
        total, header_length, prelude_crc = struct.unpack_from(">III", buffer, at)
        if zlib.crc32(buffer[at:at + 8]) != prelude_crc:
            return messages, buffer[at:], EventStreamError("event-stream prelude CRC mismatch")
        if total < 16 or header_length > total - 16:
            return messages, buffer[at:], EventStreamError(f"event-stream message of impossible length {total}")
        if len(buffer) - at < total:
            break
        message = buffer[at:at + total]
        if zlib.crc32(message[:-4]) != struct.unpack_from(">I", message, total - 4)[0]:
            return messages, buffer[at:], EventStreamError("event-stream message CRC mismatch")
        headers, pos, end = {}, 12, 12 + header_length
        while pos < end:
            name_end = pos + 1 + message[pos]
            kind, name, pos = message[name_end], message[pos + 1:name_end], name_end + 1
            width = _EVENT_HEADER_WIDTHS.get(kind)
            if width is None:  # 6 bytes, 7 string: a 2-byte length first
                width, pos = (message[pos] << 8) | message[pos + 1], pos + 2
                if kind == 7:
                    headers[name.decode("utf-8", "replace")] = message[pos:pos + width].decode("utf-8", "replace")
            pos += width
        messages.append((headers, message[end:total - 4]))
        at += total
    return messages, buffer[at:], None


class ConverseDecoder(PivotDecoder):
    """ConverseStream's events as pivot chunks: messageStart → the role chunk; contentBlockStart of a toolUse →
    the call's id and name; contentBlockDelta → text, reasoning or argument pieces; messageStop → the finish
    chunk; metadata (last) → the usage, and the end."""

    def __init__(self, call: RelayCall) -> None:
        self.head = {"id": f"chatcmpl-{call.request_id}", "object": "chat.completion.chunk",
                     "created": int(call.started)}
        self.tools: dict[int, int] = {}  # content block index → tool call index

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
        return [{**self.head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}]

    def decode(self, name: str, data: bytes) -> list[dict[str, Any]]:
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            return []
        if not isinstance(event, dict):
            return []
        if name == "messageStart":
            return self._chunk({"role": "assistant", "content": ""})
        if name == "contentBlockStart":
            use = (event.get("start") or {}).get("toolUse")
            if isinstance(use, dict):
                index = self.tools.setdefault(int(event.get("contentBlockIndex") or 0), len(self.tools))
                return self._chunk({"tool_calls": [{"index": index, "id": use.get("toolUseId"), "type": "function",
                                                    "function": {"name": use.get("name"), "arguments": ""}}]})
            return []
        if name == "contentBlockDelta":
            delta = event.get("delta") or {}
            if isinstance(delta.get("text"), str):
                return self._chunk({"content": delta["text"]})
            if isinstance(delta.get("toolUse"), dict):
                index = self.tools.get(int(event.get("contentBlockIndex") or 0), 0)
                return self._chunk({"tool_calls": [{"index": index, "function": {
                    "arguments": str(delta["toolUse"].get("input") or "")}}]})
            reasoning = delta.get("reasoningContent")
            if isinstance(reasoning, dict) and isinstance(reasoning.get("text"), str):
                return self._chunk({"reasoning_content": reasoning["text"]})
            return []
        if name == "messageStop":
            return self._chunk({}, _BEDROCK_STOPS.get(event.get("stopReason"), "stop"))
        if name == "metadata":
            self.usage = bedrock_usage(event.get("usage")) or self.usage
            self.done = True
        return []  # contentBlockStop, and event types added later

    def fail(self, kind: str, data: bytes) -> None:
        """An exception message (`:message-type: exception`) of the stream."""
        error = read_bedrock_error(_BEDROCK_EXCEPTIONS.get(kind, 500), data)
        self.error = RelayError(error.status, error.message, kind or "bedrock_error", "upstream_error")


class ConverseStream(ConvertedStream):
    """A ConverseStream answer for any client: raw bytes in, split into event-stream messages here, each message
    through the pivot into the client's format. A frame whose CRC fails ends the stream with an error."""

    raw = True

    def __init__(self, call: RelayCall) -> None:
        super().__init__(call, ConverseDecoder(call), call.dialect.stream_encoder(call))
        self.buffer = b""

    def feed(self, events: bytes) -> bytes:
        if self.closed:
            return b""
        out: list[bytes] = []
        messages, self.buffer, broken = event_stream_messages(self.buffer + events)
        for headers, payload in messages:
            if headers.get(":message-type") in ("exception", "error"):
                self.decoder.fail(headers.get(":exception-type") or headers.get(":error-code") or "", payload)
                out.append(self.dialect.stream_error(self.decoder.error, self.call))
                self.closed = True
                return b"".join(out)
            self.take(headers.get(":event-type", ""), payload, out)
        if broken is not None and not self.closed:
            self.decoder.error = RelayError(502, f"AWS Bedrock's stream is corrupt: {broken}", "bad_upstream_answer",
                                            "upstream_error")
            out.append(self.dialect.stream_error(self.decoder.error, self.call))
            self.closed = True
        return b"".join(out)


class BedrockAdaptor(Adaptor):
    """`https://bedrock-runtime.{region}.amazonaws.com/model/{id}/converse[-stream]` (or the channel's base URL in
    its place), signed with SigV4 (botocore) or a Bedrock API key as the bearer."""

    title = "AWS Bedrock"
    formats = frozenset()  # no client speaks Converse: every call goes through the pivot
    modes = frozenset({Mode.CHAT_COMPLETIONS})
    stream_type = "application/vnd.amazon.eventstream"

    @staticmethod
    def region(channel: ChannelRoute) -> str:
        return channel.key_parts.get("region") or str(channel.config.get("region") or "us-east-1")

    def endpoint(self, channel: ChannelRoute, service: str = "bedrock-runtime") -> str:
        return channel.base_url.rstrip("/") or f"https://{service}.{self.region(channel)}.amazonaws.com"

    def build_url(self, channel: ChannelRoute, call: RelayCall) -> str:
        model = bedrock_model_id(channel.upstream_model(call.model), self.region(channel))
        action = "converse-stream" if call.stream else "converse"
        return f"{self.endpoint(channel)}/model/{urllib.parse.quote(model, safe='')}/{action}"

    def build_headers(self, channel: ChannelRoute, call: RelayCall | None = None) -> dict[str, str]:
        headers = {"Accept": self.stream_type if call is not None and call.stream else "application/json"}
        if "api_key" in channel.key_parts:
            headers["Authorization"] = f"Bearer {channel.key_parts['api_key']}"
        return headers

    async def sign(self, state: AppState, channel: ChannelRoute, method: str, url: str, headers: dict[str, str],
                   body: bytes) -> str | yarl.URL:
        """A key of access keys: SigV4 over the exact URL, headers and body that leave (so the URL goes out as
        it is, its `%3A` kept)."""
        parts = channel.key_parts
        if "api_key" in parts:
            return yarl.URL(url, encoded=True)
        if not parts.get("ak") or not parts.get("sk"):
            raise RelayError(401, "An AWS Bedrock key is region|access_key|secret_key[|session_token] or "
                                  "region|api_key.", "invalid_key", "authentication_error")
        try:
            from botocore.auth import SigV4Auth
            from botocore.awsrequest import AWSRequest
            from botocore.credentials import Credentials
        except ImportError:
            raise RelayError(501, "AWS Bedrock channels with access keys sign their calls with botocore, which "
                                  f"is not installed: {BEDROCK_INSTALL} (or use a Bedrock API key, region|api_key)",
                             "missing_extra", "aiproxy_error") from None
        request = AWSRequest(method=method, url=url, data=body, headers=dict(headers))
        credentials = Credentials(parts["ak"], parts["sk"], parts.get("session_token") or None)
        # one signing name, "bedrock", for the runtime (calls) and the control plane (the model list) alike
        SigV4Auth(credentials, "bedrock", self.region(channel)).add_auth(request)
        headers.update({k: v for k, v in request.headers.items() if k.lower() in (
            "authorization", "x-amz-date", "x-amz-security-token", "x-amz-content-sha256")})
        return yarl.URL(url, encoded=True)

    def models_request(self, channel: ChannelRoute) -> tuple[str, dict[str, str]]:
        """ListFoundationModels, on the control plane (`bedrock.{region}`, or the base URL)."""
        return f"{self.endpoint(channel, 'bedrock')}/foundation-models", self.build_headers(channel)

    def models_from(self, answer: Any) -> list[str]:
        return [str(m["modelId"]) for m in answer["modelSummaries"]]

    def request_from_pivot(self, pivot: dict[str, Any], call: RelayCall, channel: ChannelRoute) -> bytes:
        return orjson.dumps(openai_to_converse_request(pivot, channel.upstream_model(call.model)))

    def usage_of(self, answer: Any) -> Usage | None:
        return bedrock_usage(answer.get("usage")) if isinstance(answer, dict) else None

    def response_to_pivot(self, call: RelayCall, body: bytes) -> tuple[dict[str, Any], Usage | None]:
        return converse_to_openai_response(json_object(body, "AWS Bedrock's answer"), call.model, call.request_id)

    def stream(self, call: RelayCall, channel: ChannelRoute) -> StreamFilter:
        return ConverseStream(call)

    def convert_error(self, status: int, body: bytes) -> RelayError:
        return read_bedrock_error(status, body)


# ==== 12. Google Vertex AI: the upstream of type 42, Gemini and Claude models ===============================
# cloud.google.com/vertex-ai/generative-ai/docs: Gemini models at
# `{host}/v1/projects/{project}/locations/{region}/publishers/google/models/{m}:generateContent` and
# `:streamGenerateContent?alt=sse` (section 9's format, other URL and auth); Claude models at
# `…/publishers/anthropic/models/{m}:rawPredict` and `:streamRawPredict` (section 8's body without `model`, with
# `anthropic_version: vertex-2023-10-16`). Keys: `region|<service-account JSON>`, exchanged for an access token
# (Google's OAuth 2.0 JWT-bearer grant, the JWT signed by google-auth, the optional extra `vertex`), cached until
# shortly before it expires; `region|api_key` (express mode, no project) and `region|project_id|api_key`.

VERTEX_INSTALL = "pip install 'aiproxy-local[vertex]'"
VERTEX_ANTHROPIC_VERSION = "vertex-2023-10-16"
VERTEX_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
VERTEX_TOKEN_LIFETIME_S = 3600  # what the assertion asks for; Google's answer says what it grants
VERTEX_TOKEN_MARGIN_S = 300  # a cached token is renewed this long before it expires
VERTEX_DEFAULT_TOKEN_URI = "https://oauth2.googleapis.com/token"
_JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: OpenAI's image sizes as the aspect ratios Imagen takes (1:1, 3:4, 4:3, 9:16, 16:9)
VERTEX_ASPECT_RATIOS = {"1024x1024": "1:1", "512x512": "1:1", "256x256": "1:1", "1792x1024": "16:9",
                        "1024x1792": "9:16", "1536x1024": "4:3", "1024x1536": "3:4"}


def is_claude(model: str) -> bool:
    return model.lower().startswith("claude")


def vertex_service_account(channel: ChannelRoute) -> dict[str, Any]:
    try:
        info = json.loads(channel.key_parts["adc"])
    except (KeyError, ValueError):
        info = None
    if not isinstance(info, dict) or not info.get("client_email") or not info.get("private_key"):
        raise RelayError(401, "A Vertex AI key is region|<service-account JSON with client_email and private_key>, "
                              "region|api_key or region|project_id|api_key.", "invalid_key", "authentication_error")
    return info


class VertexTokens:
    """Access tokens of service accounts, per account, cached until VERTEX_TOKEN_MARGIN_S before they expire; one
    exchange at a time per account, so a burst of calls waits for one token rather than asking for many."""

    def __init__(self) -> None:
        self.tokens: dict[str, tuple[str, float]] = {}  # account → (access token, expiry as time.time())
        self.locks: dict[str, asyncio.Lock] = {}

    async def token(self, state: AppState, channel: ChannelRoute) -> str:
        info = vertex_service_account(channel)
        account = hashlib.sha256(f"{info['client_email']}|{info.get('private_key_id', '')}|{info['private_key']}"
                                 .encode()).hexdigest()
        async with self.locks.setdefault(account, asyncio.Lock()):
            cached = self.tokens.get(account)
            if cached is None or cached[1] - VERTEX_TOKEN_MARGIN_S <= time.time():
                cached = self.tokens[account] = await self.exchange(state, channel, info)
            return cached[0]

    @staticmethod
    async def exchange(state: AppState, channel: ChannelRoute, info: dict[str, Any]) -> tuple[str, float]:
        """Sign a JWT for the account with google-auth and trade it at the key's token_uri; the HTTP goes through
        the channel's own session (its proxy, its TLS setting), not google-auth's blocking transport."""
        try:
            from google.auth import crypt, jwt
        except ImportError:
            raise RelayError(501, "Vertex AI channels with a service-account key need google-auth, which is not "
                                  f"installed: {VERTEX_INSTALL} (or use an API key, region|api_key)",
                             "missing_extra", "aiproxy_error") from None
        token_uri = str(info.get("token_uri") or VERTEX_DEFAULT_TOKEN_URI)
        now = int(time.time())
        try:
            signer = crypt.RSASigner.from_service_account_info(info)
        except (ValueError, TypeError) as exc:
            raise RelayError(401, f"The service account's private key cannot be read: {type(exc).__name__}",
                             "invalid_key", "authentication_error") from None
        assertion = jwt.encode(signer, {"iss": info["client_email"], "scope": VERTEX_SCOPE, "aud": token_uri,
                                        "iat": now, "exp": now + VERTEX_TOKEN_LIFETIME_S})
        session, options = channel_http(state, channel)
        try:
            async with session.post(token_uri, data={"grant_type": _JWT_BEARER, "assertion": assertion.decode()},
                                    **options) as response:
                status, body = response.status, await response.read()
        except _UPSTREAM_ERRORS as exc:
            error = upstream_failure(exc, token_uri, state.settings)
            raise RelayError(error.status, f"Vertex AI token exchange: {error.message}", error.code,
                             error.type) from None
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            answer = None
        if status != 200 or not isinstance(answer, dict) or not answer.get("access_token"):
            said = (answer.get("error_description") or answer.get("error")) if isinstance(answer, dict) else None
            said = said or body[:200].decode("utf-8", "replace")
            raise RelayError(401 if status in (400, 401, 403) else 502,
                             f"Google refused the service account's token exchange (HTTP {status}): {said}",
                             "token_exchange_failed", "authentication_error")
        expires = float(answer.get("expires_in") or VERTEX_TOKEN_LIFETIME_S)
        return str(answer["access_token"]), time.time() + expires


class VertexClaude(AnthropicAdaptor):
    """A Claude model on Vertex AI: the Messages body without `model`, with Vertex's anthropic_version."""

    def request_from_pivot(self, pivot: dict[str, Any], call: RelayCall, channel: ChannelRoute) -> bytes:
        body = openai_to_anthropic_request(dict(pivot, stream=call.stream), channel.upstream_model(call.model))
        body.pop("model")
        return orjson.dumps({"anthropic_version": VERTEX_ANTHROPIC_VERSION, **body})


class VertexAdaptor(Adaptor):
    """Gemini and Claude models of one Google Cloud project: each model's publisher picks the URL, the body and
    the answer's format (section 9's or section 8's converters); every client format goes through the pivot."""

    title = "Google Vertex AI"
    formats = frozenset()
    modes = frozenset({Mode.CHAT_COMPLETIONS, Mode.EMBEDDINGS, Mode.IMAGES_GENERATIONS})

    def __init__(self) -> None:
        self.gemini, self.claude = GeminiAdaptor(), VertexClaude()
        self.tokens = VertexTokens()

    def side(self, model: str) -> Adaptor:
        return self.claude if is_claude(model) else self.gemini

    @staticmethod
    def region(channel: ChannelRoute) -> str:
        return channel.key_parts.get("region") or str(channel.config.get("region") or "us-central1")

    def project(self, channel: ChannelRoute) -> str:
        parts = channel.key_parts
        if parts.get("project_id"):
            return parts["project_id"]
        if "adc" in parts:
            info = vertex_service_account(channel)
            if info.get("project_id"):
                return str(info["project_id"])
        return str(channel.config.get("project_id") or "")

    def host(self, channel: ChannelRoute) -> str:
        region = self.region(channel)
        if channel.base_url:
            return channel.base_url.rstrip("/")
        express = "api_key" in channel.key_parts and not channel.key_parts.get("project_id")
        return ("https://aiplatform.googleapis.com" if express or region == "global"
                else f"https://{region}-aiplatform.googleapis.com")

    def build_url(self, channel: ChannelRoute, call: RelayCall) -> str:
        model = channel.upstream_model(call.model)
        if getattr(call, "op", None) in (Mode.EMBEDDINGS, Mode.IMAGES_GENERATIONS):  # text-embedding-…, imagen-…
            publisher, method = "google", "predict"
        elif is_claude(model):
            publisher, method = "anthropic", "streamRawPredict" if call.stream else "rawPredict"
        else:
            publisher, method = "google", "streamGenerateContent?alt=sse" if call.stream else "generateContent"
        project = self.project(channel)
        where = f"/projects/{project}/locations/{self.region(channel)}" if project else ""
        return (f"{self.host(channel)}/v1{where}/publishers/{publisher}/models/"
                f"{urllib.parse.quote(model, safe='@')}:{method}")

    def build_headers(self, channel: ChannelRoute, call: RelayCall | None = None) -> dict[str, str]:
        api_key = channel.key_parts.get("api_key")
        return {"x-goog-api-key": api_key} if api_key else {}

    async def sign(self, state: AppState, channel: ChannelRoute, method: str, url: str, headers: dict[str, str],
                   body: bytes) -> str | yarl.URL:
        if "adc" in channel.key_parts:
            if not self.project(channel):
                raise RelayError(400, "This Vertex AI channel names no project: add project_id to the service "
                                      "account's JSON or to the channel's config.", "missing_project", "aiproxy_error")
            headers["Authorization"] = f"Bearer {await self.tokens.token(state, channel)}"
        return url

    def models_request(self, channel: ChannelRoute) -> tuple[str, dict[str, str]]:
        raise RelayError(400, "Vertex AI lists no models for a project's key: pick them from the built-in list, "
                              "or type their ids (gemini-…, claude-…@date).", "no_model_list", "aiproxy_error")

    def request_from_pivot(self, pivot: dict[str, Any], call: RelayCall, channel: ChannelRoute) -> bytes:
        if call.op == Mode.IMAGES_GENERATIONS:  # Imagen: the prompt, how many, and the size as an aspect ratio
            parameters: dict[str, Any] = {"sampleCount": int(pivot.get("n") or 1)}
            if VERTEX_ASPECT_RATIOS.get(str(pivot.get("size"))):
                parameters["aspectRatio"] = VERTEX_ASPECT_RATIOS[str(pivot["size"])]
            return orjson.dumps({"instances": [{"prompt": str(pivot.get("prompt") or "")}], "parameters": parameters})
        if call.op == Mode.EMBEDDINGS:
            texts = pivot.get("input")
            texts = texts if isinstance(texts, list) else [texts]
            body: dict[str, Any] = {"instances": [{"content": str(t)} for t in texts]}
            if pivot.get("dimensions"):
                body["parameters"] = {"outputDimensionality": pivot["dimensions"]}
            return orjson.dumps(body)
        return self.side(channel.upstream_model(call.model)).request_from_pivot(pivot, call, channel)

    def usage_of(self, answer: Any) -> Usage | None:
        if isinstance(answer, dict) and answer.get("type") == "message":
            return self.claude.usage_of(answer)
        return gemini_usage(answer.get("usageMetadata")) if isinstance(answer, dict) else None

    def response_to_pivot(self, call: RelayCall, body: bytes) -> tuple[dict[str, Any], Usage | None]:
        """The answer's shape says its publisher: a Messages answer (`type: message`) or Gemini's."""
        answer = json_object(body, "Vertex AI's answer")
        if call.op == Mode.IMAGES_GENERATIONS:  # {predictions: [{bytesBase64Encoded, mimeType}]}: no URL to give
            images = [p for p in answer.get("predictions") or [] if isinstance(p, dict) and p.get("bytesBase64Encoded")]
            return {"created": int(time.time()), "data": [{"b64_json": p["bytesBase64Encoded"]} for p in images]}, None
        if call.op == Mode.EMBEDDINGS:  # {predictions: [{embeddings: {values, statistics: {token_count}}}]}
            found = [p.get("embeddings") or {} for p in answer.get("predictions") or [] if isinstance(p, dict)]
            prompt = sum(int((e.get("statistics") or {}).get("token_count") or 0) for e in found)
            usage = Usage(prompt, 0, prompt, 0)
            return {"object": "list", "model": call.model, "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
                    "data": [{"object": "embedding", "index": i, "embedding": e.get("values") or []}
                             for i, e in enumerate(found)]}, usage
        side = self.claude if answer.get("type") == "message" else self.gemini
        return side.response_to_pivot(call, body)

    def stream(self, call: RelayCall, channel: ChannelRoute) -> StreamFilter:
        side = self.side(channel.upstream_model(call.model))
        return ConvertedStream(call, side.pivot_decoder(call), call.dialect.stream_encoder(call))

    def convert_error(self, status: int, body: bytes) -> RelayError:
        if b'"type":"error"' in body.replace(b" ", b""):
            return read_anthropic_error(status, body)
        return read_gemini_error(status, body)


# ==== 13. Registry: the formats not served yet, and FORMATS =================================================
# A provider type whose native API this file does not speak yet answers every call and test with a clear 501,
# never with a silent OpenAI request. Then the registry: FORMATS, one row per wire format, from which the tables the
# relay looks things up in derive (ADAPTORS, DIALECTS, RELAY_ROUTES, the relay's path roots); nothing registers a
# format item by item. Last, the catalog: assets/providers.json, each row's adaptor checked against FORMATS.

class UnsupportedAdaptor(Adaptor):
    """A provider type whose native API this file does not speak yet: every call and test says so."""

    modes = frozenset()

    def __init__(self, title: str, hint: str = "") -> None:
        self.title, self.hint = title, hint

    @property
    def reason(self) -> str:
        return f"{self.title} channels are not supported yet{self.hint}."

    def refusal(self, call: RelayCall) -> RelayError:
        return RelayError(501, self.reason, "channel_type_not_supported", "aiproxy_error")


@dataclass(frozen=True)
class WireFormat:
    """One wire format: its channel side (an Adaptor, for the providers.json rows whose "adaptor" names it) and
    its client side (a Dialect: paths, error shape, model-list shape), or one of the two."""

    adaptor: Adaptor | None = None
    dialect: Dialect | None = None


#: One row per wire format, like bottle's server_names: a new format is its section, its row here, its test file.
#: A row's name is what providers.json's "adaptor" says; "<adaptor>+<format>" is an upstream that also speaks a
#: client format natively (its "nativeFormats", e.g. OpenAI's own Responses API).
FORMATS: dict[str, WireFormat] = {
    "openai": WireFormat(Adaptor(), Dialect()),
    "azure": WireFormat(AzureAdaptor(keep_dots=False)),
    "azure2": WireFormat(AzureAdaptor(keep_dots=True)),
    "anthropic": WireFormat(AnthropicAdaptor(), AnthropicDialect()),
    "gemini": WireFormat(GeminiAdaptor(), GeminiDialect()),
    "openai+responses": WireFormat(OpenAIResponsesAdaptor(), ResponsesDialect()),
    "baiduv2": WireFormat(BaiduV2Adaptor()),
    "minimax": WireFormat(MiniMaxAdaptor()),
    "ali": WireFormat(AliAdaptor()),
    "tei": WireFormat(TEIAdaptor()),
    "cohere": WireFormat(CohereAdaptor()),
    "fake": WireFormat(FakeAdaptor()),
    "fake-error": WireFormat(FakeErrorAdaptor()),
    "aws": WireFormat(BedrockAdaptor()),
    "vertexai": WireFormat(VertexAdaptor()),
    "baidu": WireFormat(UnsupportedAdaptor("Baidu ERNIE (legacy API)", ": use type 13 (baidu v2) or 49 (qianfan)")),
    "coze": WireFormat(UnsupportedAdaptor("Coze")),
    "doubao-audio": WireFormat(UnsupportedAdaptor("Doubao speech")),
    "doc2x": WireFormat(UnsupportedAdaptor("Doc2X")),
}
ADAPTORS: dict[str, Adaptor] = {name: f.adaptor for name, f in FORMATS.items() if f.adaptor is not None}
DIALECTS: dict[str, Dialect] = {f.dialect.format: f.dialect for f in FORMATS.values() if f.dialect is not None}

#: exact POST path → route, from every dialect
RELAY_ROUTES: dict[str, RelayRoute] = {path: route for d in DIALECTS.values() for path, route in d.routes()}
MATCH_ORDER = tuple(sorted(DIALECTS.values(), key=lambda d: d.format == "openai"))  # find_route asks in this order
#: the roots of every dialect's paths (/v1, /v1beta): the gateway hands what is under them to the relay
RELAY_ROOTS = frozenset(p for d in DIALECTS.values() for p in d.prefixes
                        if not any(p.startswith(q + "/") for e in DIALECTS.values() for q in e.prefixes))
_RELAY_PREFIXES = tuple(root + "/" for root in sorted(RELAY_ROOTS))


def is_relay_path(path: str) -> bool:
    """hot path: whether the relay answers this path (or a dialect's error shape says it does not exist)."""
    return path.startswith(_RELAY_PREFIXES) or path in RELAY_ROOTS


def find_route(incoming: Incoming) -> RelayRoute | None:
    """hot path: one dict lookup for the fixed paths; any other request asks each dialect, OpenAI's last (its
    shapes are the default of /v1)."""
    route = RELAY_ROUTES.get(incoming.path) if incoming.method == "POST" else None
    if route is None:
        route = next((r for d in MATCH_ORDER if (r := d.match(incoming)) is not None), None)
    return route


def dialect_for_path(path: str, method: str = "POST") -> Dialect:
    """Whose error shape a request gets when no route matches: the dialect that owns it (Gemini's POST
    /v1/models/…:method), else the one with the longest matching prefix."""
    best, length = DIALECTS["openai"], 0
    for dialect in DIALECTS.values():
        if dialect.owns(path, method):
            return dialect
        for prefix in dialect.prefixes:
            if path.startswith(prefix) and len(prefix) > length:
                best, length = dialect, len(prefix)
    return best


def adaptor_for(provider: Provider | None) -> Adaptor:
    return ADAPTORS[provider.adaptor] if provider else ADAPTORS["openai"]


class CatalogError(Exception):
    """providers.json names an adaptor this file lacks: start-up stops, rather than call such channels as OpenAI."""


def load_catalog(path: Path | None = None, data: ModelData | None = None) -> dict[int, Provider]:
    """The provider catalog, assets/providers.json, with each type's built-in models from the model snapshot
    (`data`; model_data() for the shipped catalog)."""
    source = path or ASSETS_DIR / "providers.json"
    data = data if data is not None else (model_data() if path is None else None)
    catalog: dict[int, Provider] = {}
    for k, v in json.loads(source.read_text(encoding="utf-8")).items():
        if k.startswith("_"):
            continue
        # "nativeFormats": client formats its upstream also speaks, served by the adaptor "<adaptor>+<format>"
        base = v.get("adaptor", "openai")
        adaptor = "+".join([base, *v.get("nativeFormats", [])])
        if adaptor not in ADAPTORS:
            raise CatalogError(f"{source.name}: provider {k} ({v.get('name')}) names the adaptor "
                               f"'{base if base not in ADAPTORS else adaptor}', "
                               f"which does not exist (known: {', '.join(sorted(ADAPTORS))})")
        kinds = tuple(v.get("kinds", ()))
        # the built-ins: the snapshot's rows for this type (assets/models.json, current models first), else the
        # hand-written list of providers.json; only kinds the type's API serves
        snapshot = data.by_type.get(int(k)) if data is not None else None
        listed = [(m.model, m.kind) for m in snapshot] if snapshot else [
            (m["model"], m.get("kind", "chat")) for m in v.get("models", [])]
        unsupported = ADAPTORS[adaptor]
        catalog[int(k)] = Provider(
            id=int(k), name=v["name"], adaptor=adaptor, default_base_url=v.get("defaultBaseUrl", ""),
            key_help=v.get("keyHelp", ""), readme=v.get("readme", ""),
            models=tuple((m, kind) for m, kind in listed if not kinds or kind in kinds),
            key_format=tuple(v.get("keyFormat", ())), display=v.get("display", {}), help=v.get("help", {}),
            kinds=kinds, unsupported=unsupported.reason if isinstance(unsupported, UnsupportedAdaptor) else "",
        )
    return catalog


# ==== 14. Log writer ========================================================================================
# Requests never wait for the database: they append to a list, and one task writes batches in one transaction
# of multi-row INSERTs (an ORM write per request is ~24x slower, perf-notes.md §3.6).

LOG_FLUSH_ROWS = 2000  # rows per transaction: a larger one writes each touched index page once, not four times
LOG_FLUSH_SECONDS = 0.5  # a quiet gateway still shows a call in the log within half a second
LOG_CONFLICT_ATTEMPTS = 5  # a deadlock between instances is run again, up to this many times, then next round
LOG_CONFLICT_BACKOFF_S = 0.05  # doubled on each attempt, with jitter, so two instances stop colliding
_INT32, _INT64 = 2**31 - 1, 2**63 - 1
#: what a driver raises for a value it or the database refuses (SQLite's driver raises OverflowError for
#: an int beyond 64 bits, every driver UnicodeEncodeError for a lone surrogate)
_WRITE_ERRORS = (sa.exc.SQLAlchemyError, ValueError, TypeError, OverflowError)


@dataclass(slots=True)
class LogEntry:
    row: dict[str, Any]  # columns of LogRow
    detail: dict[str, Any] | None  # columns of LogDetail, only for failed calls
    retries: int
    segment: int = -1  # the journal file that holds it until it is committed


@dataclass(slots=True)
class ResponseEntry:
    """A stored Responses answer (a row of `responses`) on its way to the database, journaled as a log row is."""
    row: dict[str, Any]
    segment: int = -1


def _cut(body: bytes, limit: int) -> tuple[str, bool]:
    return body[:limit].decode("utf-8", "replace"), len(body) > limit


def make_log_entry(call: RelayCall, attempt: Attempt, outcome: Outcome) -> LogEntry:
    """The row of a call the relay has priced (charge(), section 5)."""
    usage = outcome.usage or Usage()
    channel = attempt.channel
    row = {
        "request_id": call.request_id, "request_at": int(call.started * 1000), "created_at": now_ms(),
        "ttfb_milliseconds": outcome.ttfb_ms, "model": call.model,
        "actual_model": channel.upstream_model(call.model) if channel else call.model,
        "channel": channel.id if channel else 0, "channel_name": channel.name if channel else "",
        "code": outcome.code, "mode": int(call.mode), "endpoint": call.endpoint,
        "content": outcome.error[:LOG_CONTENT_MAX].decode("utf-8", "replace") if outcome.code != 200 else "",
        "ip": call.ip, "retry_times": attempt.retries, "token_id": call.caller.token_id,
        "token_name": call.caller.token_name, "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens, "total_tokens": usage.total_tokens,
        "cached_tokens": usage.cached_tokens, "usage_estimated": usage.estimated,
        "cache_creation_tokens": usage.cache_write_tokens, "cost_unknown": outcome.used_amount is None or None,
        "used_amount": outcome.used_amount or 0.0, "stream": call.stream, "is_test": call.caller is TEST_CALLER,
        "attempts": _trail_text(call.attempts, channel),
    }
    detail = None
    if outcome.code != 200:
        request_body, request_cut = _cut(call.body, BODY_DETAIL_MAX)
        response_body, response_cut = _cut(outcome.response_body or outcome.error, BODY_DETAIL_MAX)
        detail = {"request_id": call.request_id, "request_body": request_body, "response_body": response_body,
                  "request_body_truncated": request_cut, "response_body_truncated": response_cut}
    return LogEntry(row, detail, attempt.retries)


def _trail_text(attempts: list[dict[str, Any]], channel: ChannelRoute | None) -> str | None:
    """hot path: the trail as JSON, or None for one clean try of the row's own channel (see row_attempts)."""
    if not attempts:
        return None
    if len(attempts) == 1 and channel is not None:
        only = attempts[0]
        if only["channel_id"] == channel.id and not only.keys() & {"error", "skipped", "adjusted"}:
            return None
    return orjson.dumps(attempts).decode()


LOG_COLUMNS = tuple(c for c in LogRow.__table__.columns.keys() if c != "id")
#: what a column a row lacks gets: a journal written by an older version has no newer columns
LOG_DEFAULTS = {c: LogRow.__table__.c[c].default.arg if LogRow.__table__.c[c].default is not None else None
                for c in LOG_COLUMNS}
LOG_ROWS_PER_INSERT = 400  # 400 rows x 23 columns stays under SQLite's 32,766 variables per statement


@functools.lru_cache(maxsize=32)
def _multirow_insert_sql(engine: sa.Engine, table: sa.Table, columns: tuple[str, ...], rows: int) -> str:
    """One INSERT with many VALUES groups. The writer runs in a thread, and the driver's executemany drops and
    retakes the GIL for every row, each time making the relay's event loop wait (-8% req/s in bench/); one
    statement per 400 rows does not. Each index on `logs` costs every insert, so only the ones the filters
    need are kept."""
    quote = engine.dialect.identifier_preparer.quote
    mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"
    group = f"({', '.join([mark] * len(columns))})"
    return (f"INSERT INTO {quote(table.name)} ({', '.join(quote(c) for c in columns)}) "
            f"VALUES {', '.join([group] * rows)}")


# ---- a row the database refuses: written with safe values, and the reason ----

def _safe_value(column: sa.Column, value: Any, replaced: list[str]) -> Any:
    """`value` if every supported database stores it in `column` as it is, else a neutral one (noted)."""
    kind = column.type
    if isinstance(kind, sa.Boolean):
        return bool(value)
    if isinstance(kind, sa.Integer):
        limit = _INT64 if isinstance(kind, sa.BigInteger) else _INT32  # INTEGER is 32-bit on PostgreSQL, MySQL
        if isinstance(value, int) and -limit - 1 <= value <= limit:
            return int(value)
        replaced.append(f"{column.name}={value!r:.40}")
        return 0
    if isinstance(kind, sa.Float):
        if isinstance(value, (int, float)) and math.isfinite(value):
            return float(value)
        replaced.append(f"{column.name}={value!r:.40}")
        return 0.0
    text = "" if value is None else str(value)
    clean = _storable_text(text)[:getattr(kind, "length", None) or None]
    if clean != text:
        replaced.append(f"{column.name} (cleaned)")
    return clean


def _storable_text(text: str) -> str:
    """Without NUL (PostgreSQL refuses it) and lone surrogates (no driver can encode them)."""
    return text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def neutralised_entry(entry: LogEntry, error: BaseException) -> LogEntry:
    """The row, with every value a database could refuse replaced by a neutral one and the error in `content`:
    the call stays in the log, the dashboard and the counters, which then sum what was written."""
    replaced: list[str] = []
    columns = LogRow.__table__.c
    row = {c: _safe_value(columns[c], entry.row.get(c), replaced) for c in LOG_COLUMNS}
    detail = None
    if entry.detail is not None:
        detail = {c: _safe_value(LogDetail.__table__.c[c], v, replaced) for c, v in entry.detail.items()}
        detail["request_id"] = row["request_id"]
    note = f"log row refused by the database ({_first_line(error)}); stored with {', '.join(replaced) or 'nothing'} replaced"
    row["content"] = _storable_text(f"{note}. {row['content']}".rstrip(". "))[:LOG_CONTENT_MAX]
    retries = entry.retries if isinstance(entry.retries, int) and 0 <= entry.retries <= _INT32 else 0
    return LogEntry(row, detail, retries)


# ---- the journal: an answered call keeps its row through a crash ----

JOURNAL_DIR = "journal"  # in the data dir; one set of files per running instance
JOURNAL_QUERY_IDS = 500  # request ids per "which of these does the database have?" query on replay


def _try_lock(fd: int) -> bool:
    """Take the exclusive lock on an open file without waiting; the OS drops it when the process dies."""
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        return True
    except OSError:
        return False


def _journal_line(entry: LogEntry | ResponseEntry) -> bytes:
    item = ({"response": entry.row} if type(entry) is ResponseEntry
            else {"row": entry.row, "detail": entry.detail, "retries": entry.retries})
    try:
        return orjson.dumps(item, option=orjson.OPT_APPEND_NEWLINE)
    except orjson.JSONEncodeError:  # an int beyond 64 bits or a lone surrogate: the refused-row path stores it
        return json.dumps(item).encode() + b"\n"


def _journal_entries(path: Path) -> Iterator[LogEntry | ResponseEntry]:
    """The rows (and stored responses) of one journal file; a line cut short by a crash is skipped."""
    for line in path.read_bytes().splitlines():
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError:
            try:
                item = json.loads(line)
            except ValueError:
                continue
        if isinstance(item, dict) and isinstance(item.get("row"), dict) and item["row"].get("request_id"):
            yield LogEntry(item["row"], item.get("detail"), item.get("retries") or 0)
        elif isinstance(item, dict) and isinstance(item.get("response"), dict) and item["response"].get("id"):
            yield ResponseEntry(item["response"])


class LogJournal:
    """Append-only files in <data-dir>/journal. Each log row is written once, with one write() and no fsync,
    before its answer's last byte leaves: the OS keeps it through a crash of the process (kill -9). A file is
    deleted once all its rows are committed, and start-up replays the rows the database lacks. Each instance
    holds a lock on its own lock file, so instances sharing a data dir never replay each other's live files."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.directory = directory
        self.instance = secrets.token_hex(6)
        self._lock_path = directory / f"{self.instance}.lock"
        self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        _try_lock(self._lock_fd)
        self.segment = 0
        self.rows: collections.Counter[int] = collections.Counter()  # rows not yet committed, per file
        self._fd = self._open(0)  # only after the lock: a file of ours is never seen unlocked

    def _path(self, segment: int, instance: str | None = None) -> Path:
        return self.directory / f"{instance or self.instance}-{segment}.jsonl"

    def _open(self, segment: int) -> int:
        return os.open(self._path(segment), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def append(self, entry: LogEntry | ResponseEntry) -> None:
        """hot path: one line, one write()."""
        try:
            os.write(self._fd, _journal_line(entry))
        except OSError as exc:  # a full disk must not fail the call; the row still goes to the database
            logger.error("log journal write failed: %s", exc)
            return
        entry.segment = self.segment
        self.rows[self.segment] += 1

    def rotate(self) -> None:
        """Start a new file, so that a batch taken now lies in older ones, which its commit can delete."""
        if self.rows[self.segment]:
            os.close(self._fd)
            self.segment += 1
            self._fd = self._open(self.segment)

    def committed(self, entries: Iterable[LogEntry | ResponseEntry]) -> None:
        for e in entries:
            if e.segment >= 0:
                self.rows[e.segment] -= 1
        for segment in [n for n, rows in self.rows.items() if rows <= 0 and n != self.segment]:
            del self.rows[segment]
            self._path(segment).unlink(missing_ok=True)

    def close(self) -> None:
        """After a clean stop with every row committed, no file is left; otherwise the next start replays."""
        os.close(self._fd)
        if not any(rows > 0 for rows in self.rows.values()):
            for segment in {*self.rows, self.segment}:
                self._path(segment).unlink(missing_ok=True)
            self._lock_path.unlink(missing_ok=True)
        os.close(self._lock_fd)

    def take_orphans(self) -> list[LogEntry | ResponseEntry]:
        """Move the rows of instances that are gone (their lock is free) into this journal, and delete their
        files. Rows appear twice only if this is cut short, and replay() keeps one of each request id."""
        found: list[LogEntry | ResponseEntry] = []
        files: dict[str, list[Path]] = collections.defaultdict(list)
        for path in self.directory.glob("*-*.jsonl"):
            files[path.name.split("-", 1)[0]].append(path)
        for instance, paths in files.items():
            lock_path = self.directory / f"{instance}.lock"
            if instance == self.instance:
                continue
            lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                if not _try_lock(lock_fd):
                    continue  # a live instance
                entries = [e for path in paths for e in _journal_entries(path)]
                for e in entries:
                    self.append(e)
                found += entries
                for path in paths:
                    path.unlink(missing_ok=True)
                lock_path.unlink(missing_ok=True)
            finally:
                os.close(lock_fd)
        return found


def _row_mark(row: dict[str, Any]) -> tuple[Any, Any]:
    """What tells one call's row from another's under the same request id: when it came, when it was logged."""
    return row.get("request_at"), row.get("created_at")


def logged_marks(engine: sa.Engine, ids: list[str]) -> dict[str, set[tuple[Any, Any]]]:
    """The marks (_row_mark) of the log rows the database has for each of `ids`."""
    have: dict[str, set[tuple[Any, Any]]] = collections.defaultdict(set)
    with engine.connect() as conn:
        for start in range(0, len(ids), JOURNAL_QUERY_IDS):
            part = ids[start:start + JOURNAL_QUERY_IDS]
            for r in conn.execute(sa.select(LogRow.request_id, LogRow.request_at, LogRow.created_at)
                                  .where(LogRow.request_id.in_(part))):
                have[r.request_id].add((r.request_at, r.created_at))
    return have


def rows_to_replay(engine: sa.Engine, entries: list[LogEntry]) -> tuple[list[LogEntry], list[LogEntry], int]:
    """(the journaled rows the database lacks, those it has, how many request ids clash). A row is written when
    the database holds one with its request id and its marks; two different calls under one id are a clash, a
    bug reported in the server log, and each of them is written rather than taken for "already written"."""
    unique: dict[tuple[str, Any, Any], LogEntry] = {}
    for e in entries:  # the same row twice (a move of orphans cut short) is one row
        unique.setdefault((e.row["request_id"], *_row_mark(e.row)), e)
    have = logged_marks(engine, sorted({key[0] for key in unique}))
    missing, written, clashes = [], [], 0
    per_id = collections.Counter(key[0] for key in unique)
    for (request_id, *mark), e in unique.items():
        (written if tuple(mark) in have.get(request_id, ()) else missing).append(e)
        if per_id[request_id] > 1 or have.get(request_id, set()) - {tuple(mark)}:
            clashes += 1
            logger.error("request id clash, a bug: %s is the id of more than one call (this row: request_at %s, "
                         "created_at %s); every row is kept", request_id, *mark)
    written_ids = {id(e) for e in unique.values()}
    written += [e for e in entries if id(e) not in written_ids]  # the duplicates: done with the row they repeat
    return missing, written, clashes


def missing_response_ids(engine: sa.Engine, ids: list[str]) -> set[str]:
    """Which of `ids` have no stored response yet."""
    have: set[str] = set()
    with engine.connect() as conn:
        for start in range(0, len(ids), JOURNAL_QUERY_IDS):
            part = ids[start:start + JOURNAL_QUERY_IDS]
            have.update(conn.execute(sa.select(StoredResponse.id).where(StoredResponse.id.in_(part))).scalars())
    return set(ids) - have


class LogWriter:
    """One writer owns the log tables: a list in memory, flushed in batches; drained on shutdown. A batch is
    never dropped: a row the database refuses is found by halving the batch and stored neutralised; rows that
    meet an unreachable database or a deadlock wait for the next round."""

    def __init__(self, engine: sa.Engine, store: ResponseStore | None = None) -> None:
        self.engine = engine
        self.journal: LogJournal | None = None
        self.pending: list[LogEntry] = []
        self.responses: list[ResponseEntry] = []  # stored Responses answers, written with the next batch
        self.store = store
        if store is not None:
            store.writer = self
        self.written = 0  # rows committed, the neutralised ones included
        self.neutralised = 0  # rows stored with refused values replaced (the reason is in their content)
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._lock: asyncio.Lock | None = None

    def submit(self, entry: LogEntry) -> None:
        """hot path: never awaits; one write() to the journal."""
        if self.journal is not None:
            self.journal.append(entry)
        self.pending.append(entry)
        if len(self.pending) >= LOG_FLUSH_ROWS and self._wake is not None:
            self._wake.set()

    def submit_call(self, call: RelayCall, attempt: Attempt, outcome: Outcome) -> None:
        self.submit(make_log_entry(call, attempt, outcome))

    def submit_response(self, row: dict[str, Any]) -> None:
        """A stored Responses answer: journaled now, written with the next batch."""
        entry = ResponseEntry(row)
        if self.journal is not None:
            self.journal.append(entry)
        self.responses.append(entry)

    def drop_response(self, response_id: str) -> None:
        """A stored response deleted before it could be written: it never will be."""
        dropped = [e for e in self.responses if e.row["id"] == response_id]
        if dropped:
            self.responses = [e for e in self.responses if e.row["id"] != response_id]
            if self.journal is not None:
                self.journal.committed(dropped)

    def open_journal(self, directory: Path) -> int:
        """Journal every row from now on, and queue the rows that stopped instances journaled but the database
        lacks (by request id). Returns how many."""
        self.journal = LogJournal(directory)
        found = self.journal.take_orphans()
        orphans = [e for e in found if type(e) is LogEntry]
        missing, written, _ = rows_to_replay(self.engine, orphans)
        self.journal.committed(written)
        self.pending += missing
        if orphans:
            logger.warning("log journal: %d rows of a stopped instance found, %d of them not in the database "
                           "yet; writing those now", len(orphans), len(missing))
        answers = {e.row["id"]: e for e in found if type(e) is ResponseEntry}
        unsaved = missing_response_ids(self.engine, list(answers))
        self.journal.committed(e for rid, e in answers.items() if rid not in unsaved)
        self.responses += [answers[rid] for rid in answers if rid in unsaved]
        if self.store is not None:  # readable at once, before the first batch writes them
            self.store.pending.update((rid, answers[rid].row) for rid in unsaved)
        if unsaved:
            logger.warning("log journal: %d stored responses of a stopped instance were not in the database "
                           "yet; writing them now", len(unsaved))
        return len(missing)

    def start(self) -> None:
        self._wake, self._lock = asyncio.Event(), asyncio.Lock()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), LOG_FLUSH_SECONDS)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            await self.flush()

    async def flush(self) -> bool:
        """Write what is pending now; False when some rows could not be written and wait for the next round.
        Rows that arrive meanwhile wait too: looping until the list is empty would write ever smaller batches
        under load, each paying a full commit (bench/)."""
        async with self._lock:
            batch, self.pending = self.pending, []
            answers, self.responses = self.responses, []
            if self.journal is not None:
                self.journal.rotate()
            if answers:
                kept = await asyncio.to_thread(self.write_responses, answers)
                self.responses[:0] = kept
                left = {id(e) for e in kept}
                saved = [e for e in answers if id(e) not in left]
                if self.journal is not None:
                    self.journal.committed(saved)
                if self.store is not None:
                    self.store.written(e.row for e in saved)
            unwritten: list[LogEntry] = []
            for start in range(0, len(batch), LOG_FLUSH_ROWS):
                part = batch[start:start + LOG_FLUSH_ROWS]
                if unwritten:  # the database failed on this round: keep the rest for the next one
                    unwritten += part
                else:
                    unwritten += await asyncio.to_thread(self.write_batch, part)
            self.pending[:0] = unwritten
            if self.journal is not None:
                left = {id(e) for e in unwritten}
                self.journal.committed(e for e in batch if id(e) not in left)
            return not unwritten and not (answers and kept)

    async def stop(self) -> None:
        if self._task is not None:
            async with self._lock:  # never cancel a flush halfway: its batch would be neither pending nor done
                self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            while (self.pending or self.responses) and await self.flush():
                pass
            if self.pending or self.responses:
                logger.error("%d log rows and %d stored responses could not be written before shutdown%s",
                             len(self.pending), len(self.responses),
                             "; the journal keeps them for the next start" if self.journal else "")
        if self.journal is not None:
            self.journal.close()
            self.journal = None

    def write_batch(self, batch: list[LogEntry]) -> list[LogEntry]:
        """Commit `batch` with its summaries and counters; return the rows left for the next round."""
        try:
            self._commit(batch)
        except _WRITE_ERRORS as exc:
            if is_write_conflict(exc) or not is_database_reachable(self.engine):
                logger.warning("%d log rows wait for the next round: %s", len(batch), _first_line(exc))
                return batch
            if len(batch) > 1:  # some row is refused: halve until it is alone, writing every other row
                middle = len(batch) // 2
                return self.write_batch(batch[:middle]) + self.write_batch(batch[middle:])
            return self._write_neutralised(batch[0], exc)
        self.written += len(batch)
        return []

    def write_responses(self, entries: list[ResponseEntry]) -> list[ResponseEntry]:
        """Commit stored Responses answers; return those left for the next round. One the database refuses is
        found by halving, reported and dropped (its next turn gets "not found")."""
        table = StoredResponse.__table__
        try:
            with self.engine.begin() as conn:
                rows = {e.row["id"]: e.row for e in entries}
                for found in conn.execute(sa.select(table.c.id, table.c.created_at, table.c.token_id)
                                          .where(table.c.id.in_(list(rows)))):
                    row = rows[found.id]
                    if (found.created_at, found.token_id) != (row["created_at"], row["token_id"]):
                        logger.error("response id clash, a bug: %s is already stored for another call (created "
                                     "at %s, this one at %s); the first answer stays", found.id, found.created_at,
                                     row["created_at"])
                        del rows[found.id]
                upsert(conn, table, list(rows.values()), ("id",))
            return []
        except _WRITE_ERRORS as exc:
            if is_write_conflict(exc) or not is_database_reachable(self.engine):
                logger.warning("%d stored responses wait for the next round: %s", len(entries), _first_line(exc))
                return entries
            if len(entries) > 1:
                middle = len(entries) // 2
                return self.write_responses(entries[:middle]) + self.write_responses(entries[middle:])
            logger.error("stored response %s was refused by the database and is dropped: %s", entries[0].row["id"],
                         _first_line(exc))
            return []

    def _write_neutralised(self, entry: LogEntry, error: BaseException) -> list[LogEntry]:
        safe = neutralised_entry(entry, error)
        try:
            self._commit([safe])
        except _WRITE_ERRORS as exc:
            logger.error("log row %s could not be written even neutralised: %s", entry.row.get("request_id"),
                         _first_line(exc))
            return [entry]
        logger.warning("log row %s was refused by the database (%s): %s", entry.row.get("request_id"),
                       _first_line(error), safe.row["content"])
        self.written += 1
        self.neutralised += 1
        return []

    def _commit(self, batch: list[LogEntry]) -> None:
        for attempt in itertools.count(1):
            try:
                with self.engine.begin() as conn:
                    _insert_rows(self.engine, conn, batch)
                    _add_summaries(conn, batch)
                    _add_counters(conn, batch)
                return
            except sa.exc.DBAPIError as exc:
                if not is_write_conflict(exc) or attempt == LOG_CONFLICT_ATTEMPTS:
                    raise
                time.sleep(LOG_CONFLICT_BACKOFF_S * 2 ** attempt * random.uniform(0.5, 1.5))


_LOG_GETTER = operator.itemgetter(*LOG_COLUMNS)


def _log_values(row: dict[str, Any]) -> tuple:
    """A row's values in LOG_COLUMNS order, at C speed; a journaled row of an older version lacks newer columns."""
    try:
        return _LOG_GETTER(row)
    except KeyError:
        return tuple(row.get(c, LOG_DEFAULTS[c]) for c in LOG_COLUMNS)


def _insert_rows(engine: sa.Engine, conn: sa.Connection, batch: list[LogEntry]) -> None:
    for start in range(0, len(batch), LOG_ROWS_PER_INSERT):
        part = batch[start:start + LOG_ROWS_PER_INSERT]
        params = tuple(itertools.chain.from_iterable(_log_values(e.row) for e in part))
        conn.exec_driver_sql(_multirow_insert_sql(engine, LogRow.__table__, LOG_COLUMNS, len(part)), params)
    details = [e.detail for e in batch if e.detail]
    if details:
        conn.execute(sa.insert(LogDetail), details)


def _add_summaries(conn: sa.Connection, batch: list[LogEntry]) -> None:
    """The batch's calls into the per-minute summaries and the hourly rollup, in the transaction of its rows: the
    dashboard's totals always equal the logs' rows."""
    sums: dict[tuple[int, int, str], collections.Counter] = collections.defaultdict(collections.Counter)
    for e in batch:
        r = e.row
        if r["is_test"]:
            continue
        add_call(sums[(r["created_at"] // 60000 * 60, r["channel"], r["model"])], r)
        for a in failed_attempts(r):  # each failed try counts against the channel that failed (issue 10), apart
            sums[(r["created_at"] // 60000 * 60, a["channel_id"], r["model"])].update(  # from the calls (issue 19)
                failed_attempts=1, failed_attempt_ms=a["ms"])
    add_summaries(conn, sums)


def _add_counters(conn: sa.Connection, batch: list[LogEntry]) -> None:
    """Channels, then tokens, each in id order: the same lock order in every instance (see upsert())."""
    channels: dict[int, list] = {}  # id -> [requests, retries, amount, errors]
    tokens: dict[int, list] = {}  # id -> [requests, amount]
    for e in batch:
        r = e.row
        if r["channel"] and not r["is_test"]:
            c = channels.get(r["channel"]) or channels.setdefault(r["channel"], [0, 0, 0.0, 0])
            c[0] += 1
            c[1] += e.retries
            c[2] += r["used_amount"]
            c[3] += r["code"] != 200
        for a in failed_attempts(r) if not r["is_test"] else ():
            c = channels.get(a["channel_id"]) or channels.setdefault(a["channel_id"], [0, 0, 0.0, 0])
            c[0] += 1
            c[3] += 1
        if r["token_id"]:
            t = tokens.get(r["token_id"]) or tokens.setdefault(r["token_id"], [0, 0.0])
            t[0] += 1
            t[1] += r["used_amount"]
    if channels:  # one statement for all, compiled once: building an UPDATE per channel cost more than running it
        conn.execute(_CHANNEL_COUNTERS, [{"cid": cid, "n": c[0], "retries": c[1], "usd": c[2], "errors": c[3]}
                                         for cid, c in sorted(channels.items())])
    if tokens:
        conn.execute(_TOKEN_COUNTERS, [{"tid": tid, "n": t[0], "usd": t[1]} for tid, t in sorted(tokens.items())])


_CHANNEL_COUNTERS = sa.update(Channel).where(Channel.id == sa.bindparam("cid")).values(
    request_count=Channel.request_count + sa.bindparam("n"), retry_count=Channel.retry_count + sa.bindparam("retries"),
    used_amount=Channel.used_amount + sa.bindparam("usd"), error_count=Channel.error_count + sa.bindparam("errors"))
_TOKEN_COUNTERS = sa.update(Token).where(Token.id == sa.bindparam("tid")).values(
    request_count=Token.request_count + sa.bindparam("n"), used_amount=Token.used_amount + sa.bindparam("usd"))


# ---- metrics: what the log records, counted in memory for Prometheus (GET /metrics) ----
# The hot path adds to plain dicts (one lookup per call, no lock: everything runs on the event loop); the
# official prometheus_client only formats them, when scraped, and is imported then. Labels stay bounded: a
# channel's id, a model some channel offers (any other name is "other"), the client's route (never a call's own
# id, e.g. /v1/responses/{id}).

CALL_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)  # seconds
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025,
                    0.05, 0.1, 0.25)  # seconds: the gateway's own share of a call is far smaller than the call


class CallMetrics:
    """Counts of every call the relay logs, and the gateway's own overhead: a call's time minus the time it
    waited on upstreams (RelayCall.waited), which is the figure bench/ S1 measures from outside."""

    def __init__(self) -> None:
        #: (channel, model, endpoint) -> [seconds summed, bucket counts of CALL_BUCKETS + the +Inf one]
        self.latency: dict[tuple[str, str, str], list] = {}
        self.calls: collections.Counter[tuple[str, str, str, str]] = collections.Counter()  # ... + (code,)
        self.tokens: collections.Counter[tuple[str, str, str]] = collections.Counter()  # (channel, model, kind)
        self.overhead = [0.0] + [0] * (len(OVERHEAD_BUCKETS) + 1)  # seconds summed, bucket counts
        self.refused: collections.Counter[int] = collections.Counter()  # refused at the door (key, route)
        self.cooldowns: collections.Counter[int] = collections.Counter()
        self.auto_disables: collections.Counter[int] = collections.Counter()
        self._registry: Any = None

    def observe(self, state: AppState, call: RelayCall, channel: int, code: int, usage: Usage | None) -> None:
        """hot path: one call, as log_call() logs it."""
        now = time.time()
        seconds = now - call.started
        model = call.model if call.model in state.routes.known_models else "other"
        endpoint = call.endpoint if call.endpoint in RELAY_ROUTES else f"{call.route.dialect.format}:{call.mode.name.lower()}"
        key = (str(channel), model, endpoint)
        entry = self.latency.get(key)
        if entry is None:
            entry = self.latency[key] = [0.0] + [0] * (len(CALL_BUCKETS) + 1)
        entry[0] += seconds
        entry[1 + bisect.bisect_left(CALL_BUCKETS, seconds)] += 1
        self.calls[(*key, str(code))] += 1
        overhead = max(0.0, seconds - call.waited)
        self.overhead[0] += overhead
        self.overhead[1 + bisect.bisect_left(OVERHEAD_BUCKETS, overhead)] += 1
        if usage is not None:
            self.tokens[(key[0], model, "input")] += usage.input_tokens
            self.tokens[(key[0], model, "output")] += usage.output_tokens
            if usage.cached_tokens:
                self.tokens[(key[0], model, "cached")] += usage.cached_tokens

    def exposition(self, state: AppState) -> tuple[bytes, str]:
        """The text format Prometheus scrapes, and its content type."""
        import prometheus_client
        from prometheus_client import CollectorRegistry, ProcessCollector

        if self._registry is None:
            self._registry = CollectorRegistry(auto_describe=False)
            ProcessCollector(registry=self._registry)  # CPU seconds, resident memory, open files of this process
            self._registry.register(_MetricsCollector(self, state))
        return prometheus_client.generate_latest(self._registry), prometheus_client.CONTENT_TYPE_LATEST


def _histogram(family: Any, labels: list[str], entry: list, bounds: tuple[float, ...]) -> None:
    cumulative, buckets = 0, []
    for bound, count in zip((*bounds, math.inf), entry[1:]):
        cumulative += count
        buckets.append(("+Inf" if bound == math.inf else repr(bound), cumulative))
    family.add_metric(labels, buckets, entry[0])


class _MetricsCollector:
    """prometheus_client's custom-collector protocol: the families, built from CallMetrics at each scrape."""

    def __init__(self, metrics: CallMetrics, state: AppState) -> None:
        self.metrics, self.state = metrics, state

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        m, state, where = self.metrics, self.state, ["channel", "model", "endpoint"]
        calls = CounterMetricFamily("aiproxy_calls", "Relay calls answered, by channel (0: none), model, endpoint "
                                    "and HTTP status.", labels=[*where, "code"])
        errors = CounterMetricFamily("aiproxy_call_errors", "Relay calls answered with a status other than 200.",
                                     labels=where)
        failed: collections.Counter[tuple[str, str, str]] = collections.Counter()
        for (channel, model, endpoint, code), n in list(m.calls.items()):
            calls.add_metric([channel, model, endpoint, code], n)
            if code != "200":
                failed[(channel, model, endpoint)] += n
        for labels, n in failed.items():
            errors.add_metric(list(labels), n)
        yield calls
        yield errors
        latency = HistogramMetricFamily("aiproxy_call_seconds", "Time from a call's arrival to its answer's last "
                                        "byte, upstream included.", labels=where)
        for labels, entry in list(m.latency.items()):
            _histogram(latency, list(labels), entry, CALL_BUCKETS)
        yield latency
        overhead = HistogramMetricFamily("aiproxy_overhead_seconds", "The gateway's own time per call: its time "
                                         "minus the time it waited on upstreams (bench/ S1's added latency).")
        _histogram(overhead, [], m.overhead, OVERHEAD_BUCKETS)
        yield overhead
        tokens = CounterMetricFamily("aiproxy_tokens", "Tokens of the calls answered (input, output, cached).",
                                     labels=["channel", "model", "kind"])
        for labels, n in list(m.tokens.items()):
            tokens.add_metric(list(labels), n)
        yield tokens
        refused = CounterMetricFamily("aiproxy_refused", "Requests refused before a call began (no or bad key, "
                                      "unknown route), by HTTP status.", labels=["code"])
        for code, n in sorted(m.refused.items()):
            refused.add_metric([str(code)], n)
        yield refused
        for name, text, counts in (
                ("aiproxy_channel_cooldowns", "Cool-downs started or lengthened, by channel.", m.cooldowns),
                ("aiproxy_channel_auto_disables", "Channels auto-disabled by this instance.", m.auto_disables)):
            family = CounterMetricFamily(name, text, labels=["channel"])
            for channel, n in sorted(counts.items()):
                family.add_metric([str(channel)], n)
            yield family
        now, cooling = time.time(), GaugeMetricFamily("aiproxy_channel_cooling_down", "(channel, model) pairs "
                                                      "cooling down now, by channel.", labels=["channel"])
        by_channel = collections.Counter(k[0] for k, c in list(state.health.cooling.items()) if c.until > now)
        for channel, n in sorted(by_channel.items()):
            cooling.add_metric([str(channel)], n)
        yield cooling
        yield GaugeMetricFamily("aiproxy_channels_auto_disabled", "Channels auto-disabled now (status 3).", value=sum(
            1 for r in state.routes.channels.values() if r.status == STATUS_AUTO_DISABLED))
        writer = state.writer
        yield GaugeMetricFamily("aiproxy_log_rows_pending", "Log rows answered and not yet in the database.",
                                value=len(writer.pending) if writer else 0)
        yield CounterMetricFamily("aiproxy_log_rows_written", "Log rows this instance committed.",
                                  value=writer.written if writer else 0)


async def serve_metrics(state: AppState, scope: Scope, send: Send) -> None:
    """GET /metrics: the admin key or METRICS_TOKEN as a bearer; never open without one."""
    headers = dict(scope["headers"])
    token = strip_bearer(headers.get(b"authorization", b"").decode("latin-1"))
    wanted = state.settings.metrics_token.encode()
    if not (is_admin_key(state, token) or (wanted and secrets.compare_digest(token.encode("latin-1"), wanted))):
        body = orjson.dumps({"success": False, "message": "GET /metrics needs the admin key or METRICS_TOKEN as "
                                                            "'Authorization: Bearer <token>'."})
        return await send_bytes(send, 401, body, "application/json", "", [(b"www-authenticate", b"Bearer")])
    if scope["method"] not in ("GET", "HEAD"):
        body = orjson.dumps({"success": False, "message": "GET /metrics only."})
        return await send_bytes(send, 405, body, "application/json", "", [(b"allow", b"GET")])
    body, content_type = state.metrics.exposition(state)
    await send_bytes(send, 200, body, content_type, "")


# ==== 15. Admin API: aiproxy's /api contract ================================================================
# Every route answers {success, message?, data?}. The UI calls the same functions the routes call. Every input
# has declared bounds (published at /api/openapi.json), so no value can reach the database that it would refuse,
# or that would break a later read (issue 10).

PER_PAGE_DEFAULT, PER_PAGE_MAX = 10, 100
INT32_MAX = 2**31 - 1  # type, status, priority and weight are INTEGER columns
INT64_MAX = 2**63 - 1  # ids and times: SQLite's and BIGINT's limit; a larger number fails in the driver
PAGE_MIN, PAGE_MAX = -INT32_MAX - 1, INT32_MAX  # aiproxy reads page ≤ 0 as 1; the offset stays within int64
NAME_MAX = 128  # Channel.name, Token.name
MODEL_NAME_MAX = 191  # the model columns (MySQL's utf8mb4 index limit)
BASE_URL_MAX = 512
PROXY_URL_MAX = 255  # aiproxy's column size
KEY_MAX = 16 * 1024  # one channel key; a Vertex AI service-account JSON is about 2.3 KB
KEYS_FIELD_MAX = 1024 * 1024  # a create's key field: one key a line
MODELS_MAX = 2000  # models (and mapping entries) per channel or API key; aggregators list a few hundred
ITEMS_MAX = 1000  # channels one request creates, ids one batch call takes
PRIORITY_MIN, PRIORITY_MAX = -1_000_000, 1_000_000  # aiproxy caps at 1,000,000; one-api allows negatives
WEIGHT_MAX = 10_000
PRICE_MAX = 1_000_000.0  # USD per 1K tokens: keeps price × tokens finite, so a log row can always be written
QUOTA_MAX = 1e15
MS_MAX = 253_402_300_799_999  # 9999-12-31: the last instant a date can show
TIMEZONE_MAX = 64


class ApiError(Exception):
    def __init__(self, message: str, status: int = 400, retry_after: int = 0) -> None:
        super().__init__(message)
        self.message, self.status, self.retry_after = message, status, retry_after


class _OrjsonResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


def api_ok(data: Any = None) -> JSONResponse:
    return _OrjsonResponse({"success": True} if data is None else {"success": True, "data": data})


def api_error(message: str, status: int = 400, retry_after: int = 0) -> JSONResponse:
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    return _OrjsonResponse({"success": False, "message": message}, status_code=status, headers=headers)


def invalid_request_message(errors: list[dict[str, Any]]) -> str:
    """The first of pydantic's errors, as one line: `invalid request: 0.priority: Input should be ≤ 1000000`."""
    first = errors[0] if errors else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path"))
    return f"invalid request: {where + ': ' if where else ''}{first.get('msg', 'bad input')}"


class ApiInput(BaseModel):
    """A request body with declared bounds. Built in Python, as the UI does, a bad value raises ApiError: the same
    400 the route answers (FastAPI validates without calling __init__)."""

    model_config = ConfigDict(extra="ignore")

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ApiError(invalid_request_message(exc.errors())) from None


class ApiEnvelope(BaseModel):
    """What every /api route answers (aiproxy leaves out an empty message or data)."""

    success: bool
    message: str | None = None
    data: Any = None


def _blank_is_none(value: Any) -> Any:
    """FastGPT sends `channel=` for "all": an empty query value means no filter."""
    return None if isinstance(value, str) and not value.strip() else value


def _int_in(low: int, high: int) -> Any:
    return Annotated[int, pydantic.Field(ge=low, le=high)]


def _optional_int(low: int, high: int) -> Any:
    return Annotated[_int_in(low, high) | None, BeforeValidator(_blank_is_none)]


Id = Annotated[int, pydantic.Field(ge=0, le=INT64_MAX, examples=[1])]
QueryId = _optional_int(0, INT64_MAX)
QueryPage = _optional_int(PAGE_MIN, PAGE_MAX)
QueryTimestamp = _optional_int(0, INT64_MAX)  # in any unit parse_timestamp_ms reads
ModelName = Annotated[str, pydantic.Field(max_length=MODEL_NAME_MAX)]
Status = Literal[1, 2]  # enabled, disabled
ChannelStatus = Literal[1, 2, 3]  # FastGPT's edit form sends a channel's stored status back, 3 included
Price = Annotated[float, pydantic.Field(ge=0, le=PRICE_MAX)]
Timezone = Annotated[str, pydantic.Field(max_length=TIMEZONE_MAX)]


def app_state(request: Request) -> AppState:
    """The running app's state, which create_app() hangs on the FastAPI app."""
    return request.app.state.aiproxy


def require_admin(request: Request, state: AppState = Depends(app_state)) -> AppState:
    """The admin key, from an address that has not sent too many wrong ones (AuthThrottle)."""
    raw = strip_bearer(request.headers.get("authorization", "")) or request.query_params.get("key", "").strip()
    address, throttle = request.client.host if request.client else "", state.throttle
    waiting = throttle.refusal(address, time.time())
    if waiting:
        raise ApiError(waiting, 429, math.ceil(throttle.wait(address, time.time())))
    if not is_admin_key(state, raw):
        if raw:
            throttle.failed(address, time.time(), raw)
        raise ApiError("unauthorized: send the admin key as 'Authorization: Bearer <key>'", 401)
    throttle.succeeded(address)
    return state


_ERRORS = {"default": {"model": ApiEnvelope, "description": "an error: {success: false, message}"}}
public_router = APIRouter(prefix="/api", responses=_ERRORS)
# every route also names `state: AppState = Depends(require_admin)`; FastAPI runs the check once per request
admin_router = APIRouter(prefix="/api", dependencies=[Depends(require_admin)], responses=_ERRORS)


@public_router.get("/status")
def api_status(state: AppState = Depends(app_state)) -> JSONResponse:
    return api_ok({"startTime": state.started_ms, "version": __version__})


def _page(page: int | None, p: int | None, per_page: int | None) -> tuple[int, int]:
    number = page or p or 1
    size = per_page if per_page and per_page > 0 else PER_PAGE_DEFAULT  # aiproxy: ≤ 0 means the default
    return max(1, number), min(PER_PAGE_MAX, size)


def _timestamp(value: str | int | None, name: str) -> int | None:
    try:
        return parse_timestamp_ms(value)
    except ValueError as exc:
        raise ApiError(f"{name}: {exc}") from None


def parse_timezone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ApiError(f"unknown timezone: {name[:TIMEZONE_MAX]!r} (an IANA name, e.g. Asia/Shanghai)") from None


# ---- channels ----

ERROR_RATE_MAX = 100.0  # aiproxy's rates are fractions (0.3); a percentage still fits


class ChannelIn(ApiInput):
    """A channel as FastGPT and aiproxy's UI send it; unknown fields are ignored."""

    type: _int_in(0, INT32_MAX) = 1
    name: Annotated[str, pydantic.Field(max_length=NAME_MAX)] = ""
    key: Annotated[str, pydantic.Field(max_length=KEYS_FIELD_MAX)] | None = None  # one key a line
    base_url: Annotated[str, pydantic.Field(max_length=BASE_URL_MAX)] | None = None
    models: Annotated[list[ModelName], pydantic.Field(max_length=MODELS_MAX)] | None = None
    model_mapping: Annotated[dict[ModelName, ModelName], pydantic.Field(max_length=MODELS_MAX)] | None = None
    priority: _int_in(PRIORITY_MIN, PRIORITY_MAX) | None = None
    weight: _int_in(0, WEIGHT_MAX) | None = None  # 0 means 1, as one-api stores it
    status: ChannelStatus | None = None
    config: dict[str, Any] | None = None
    configs: dict[str, Any] | None = None
    proxy_url: Annotated[str, pydantic.Field(max_length=PROXY_URL_MAX)] | None = None
    skip_tls_verify: bool | None = None
    enabled_auto_balance_check: bool | None = None
    enabled_no_permission_ban: bool | None = None
    warn_error_rate: Annotated[float, pydantic.Field(ge=0, le=ERROR_RATE_MAX)] | None = None
    max_error_rate: Annotated[float, pydantic.Field(ge=0, le=ERROR_RATE_MAX)] | None = None


def clean_models(models: Iterable[Any] | None) -> list[str]:
    """Trim, drop empties and duplicates, keep order. Any model name is allowed: no model config needed."""
    seen: dict[str, None] = {}
    for m in models or ():
        name = str(m).strip()
        if name:
            seen.setdefault(name, None)
    return list(seen)


def clean_mapping(mapping: dict[str, Any] | None) -> dict[str, str]:
    out = {}
    for k, v in (mapping or {}).items():
        if not isinstance(v, str):
            raise ApiError(f"model_mapping[{k!r}] must be a model name (a string)")
        if k.strip() and v.strip():
            out[k.strip()] = v.strip()
    return out


def _validate_channel(state: AppState, data: ChannelIn, keep: dict[str, Any] | None = None) -> dict[str, Any]:
    """Channel columns from an input; `keep` is the stored channel when updating."""
    keep = keep or {}
    # like aiproxy, an update without a type (or with 0) keeps the stored one
    ctype = data.type if data.type and "type" in data.model_fields_set else keep.get("type", data.type)
    if ctype not in state.catalog:
        raise ApiError(f"invalid channel type: {ctype} (see GET /api/channels/type_metas)")
    key = (data.key or "").strip()
    if keep and (not key or key == mask_key(keep.get("key", ""))):
        key = keep["key"]  # an untouched masked key keeps the stored one
    if not key:
        raise ApiError("key is required")
    if any(len(line) > KEY_MAX for line in key.splitlines()):
        raise ApiError(f"a key may be at most {KEY_MAX} characters long")
    base_url = (data.base_url if data.base_url is not None else keep.get("base_url", "")).strip()
    if base_url and not re.match(r"^https?://", base_url):
        raise ApiError("base_url must start with http:// or https://")
    proxy_url = (data.proxy_url if data.proxy_url is not None else keep.get("proxy_url") or "").strip()
    if keep.get("proxy_url") and proxy_url == mask_proxy_url(keep["proxy_url"]):
        proxy_url = keep["proxy_url"]  # an untouched masked password keeps the stored one
    check_proxy_url(proxy_url)
    provider = state.catalog[ctype]
    placeholder = re.search(r"\{(account_id)\}", base_url or provider.default_base_url)
    if placeholder:  # sent as it is, the URL would fail every call (issue 17)
        raise ApiError(f"the base URL still holds the placeholder {{{placeholder.group(1)}}}: write your Cloudflare "
                       f"account id there (dashboard → Workers AI → Use REST API), e.g. "
                       f"https://api.cloudflare.com/client/v4/accounts/0123456789abcdef/ai/v1")
    status = data.status if data.status is not None else keep.get("status", STATUS_ENABLED)
    if status == STATUS_AUTO_DISABLED and keep.get("status") != STATUS_AUTO_DISABLED:
        status = keep.get("status", STATUS_ENABLED)  # only the gateway auto-disables; a stale 3 keeps what is stored
    return {
        "type": ctype, "name": data.name.strip() or keep.get("name") or provider.name,
        "key": key, "base_url": base_url.rstrip("/"),
        "models": clean_models(data.models if data.models is not None else keep.get("models")),
        "model_mapping": clean_mapping(data.model_mapping if data.model_mapping is not None
                                       else keep.get("model_mapping")),
        "config": check_channel_config(data.config if data.config is not None else (
            data.configs if data.configs is not None else keep.get("config") or {})),
        "priority": data.priority if data.priority is not None else keep.get("priority", 0),
        "weight": max(1, data.weight if data.weight is not None else keep.get("weight", 1)),
        "status": status,
        "proxy_url": proxy_url,
        "skip_tls_verify": bool(data.skip_tls_verify if data.skip_tls_verify is not None
                                else keep.get("skip_tls_verify", False)),
        **{name: getattr(data, name) if getattr(data, name) is not None else keep.get(name) or default
           for name, default in (("enabled_auto_balance_check", False), ("enabled_no_permission_ban", False),
                                 ("warn_error_rate", 0.0), ("max_error_rate", 0.0))},
    }


def check_channel_config(config: dict[str, Any]) -> dict[str, Any]:
    """The request settings in a channel's config: `param_override` an object (new-api sends it as a JSON
    string), `max_output_tokens` a number or {model: number}."""
    config = dict(config)
    override = config.get(CONFIG_PARAM_OVERRIDE)
    if isinstance(override, str) and override.strip():
        try:
            override = config[CONFIG_PARAM_OVERRIDE] = json.loads(override)
        except ValueError:
            raise ApiError(f"config.{CONFIG_PARAM_OVERRIDE} is not valid JSON") from None
    if override not in (None, "") and not isinstance(override, dict):
        raise ApiError(f"config.{CONFIG_PARAM_OVERRIDE} must be a JSON object (null deletes a field)")
    limit = config.get(CONFIG_MAX_OUTPUT_TOKENS)
    if limit not in (None, "", 0) and not output_limits_setting(limit):
        raise ApiError(f"config.{CONFIG_MAX_OUTPUT_TOKENS} must be a positive number or {{\"model\": number}}")
    return config


PROXY_SCHEMES = ("http", "https", "socks5", "socks5h")


def proxy_url_ok(url: str | None) -> bool:
    try:
        check_proxy_url((url or "").strip())
    except ApiError:
        return False
    return True


def check_proxy_url(url: str) -> None:
    """A channel's proxy_url is empty or `scheme://[user:password@]host:port` with a scheme in PROXY_SCHEMES; the
    error never repeats the URL, which may hold a password."""
    if not url:
        return
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        parts, port = None, None
    if parts is None or parts.scheme not in PROXY_SCHEMES or not parts.hostname or (
            parts.path not in ("", "/")) or (parts.scheme.startswith("socks") and port is None):
        raise ApiError("proxy_url must be http://, https://, socks5:// or socks5h:// followed by [user:password@]"
                       "host:port, e.g. socks5://127.0.0.1:1080 or http://proxy.example:3128")


def create_channels(state: AppState, items: list[ChannelIn]) -> list[int]:
    """Insert channels in one transaction; a key with several lines becomes one channel per line."""
    rows = []
    for item in items:
        if item.status == STATUS_AUTO_DISABLED:
            raise ApiError("status 3 (auto-disabled) is set by the gateway only; create a channel with 1 or 2")
        cols = _validate_channel(state, item)
        for line in [k.strip() for k in cols["key"].splitlines() if k.strip()]:
            rows.append(dict(cols, key=line, created_at=now_ms()))
    if len(rows) > ITEMS_MAX:
        raise ApiError(f"one request creates at most {ITEMS_MAX} channels (one per key line); got {len(rows)}")
    ids = []
    with state.engine.begin() as conn:
        for row in rows:
            ids.append(conn.execute(sa.insert(Channel).values(**row)).inserted_primary_key[0])
    reload_routes(state)
    return ids


def get_channel(state: AppState, channel_id: int) -> dict[str, Any]:
    channels, _ = select_channels(state.engine, [Channel.id == channel_id])
    if not channels:
        raise ApiError(f"channel {channel_id} not found", 404)
    return with_health(state, channels)[0]


def with_health(state: AppState, channels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Channels with this instance's view of their health: `fatal_errors` in a row and the `cooldowns` under way
    (`[{model, until, seconds_left, failures, code, reason}]`); status 3 and its reason come from the database."""
    view = state.health.view(time.time())
    for ch in channels:
        ch.update(view.get(ch["id"]) or {"fatal_errors": 0, "cooldowns": []})
    return channels


def update_channel(state: AppState, channel_id: int, data: ChannelIn) -> dict[str, Any]:
    old = get_channel(state, channel_id)
    cols = _validate_channel(state, data, keep=old)
    if "\n" in cols["key"].strip():
        raise ApiError("an existing channel takes one key; add the others as new channels")
    if cols["status"] != old["status"]:  # a user's enable or disable: an auto-disable's reason is history now
        cols.update(status_reason="", status_time=now_ms())
    with state.engine.begin() as conn:
        conn.execute(sa.update(Channel).where(Channel.id == channel_id).values(**cols))
    state.health.forget([channel_id])
    reload_routes(state)
    return get_channel(state, channel_id)


def _check_ids(ids: list[int]) -> None:
    if len(ids) > ITEMS_MAX or any(not 0 <= i <= INT64_MAX for i in ids):
        raise ApiError(f"ids: at most {ITEMS_MAX}, each between 0 and {INT64_MAX}")


def set_channels_status(state: AppState, ids: list[int], status: int) -> int:
    if status not in (STATUS_ENABLED, STATUS_DISABLED):
        raise ApiError("status must be 1 (enabled) or 2 (disabled)")
    _check_ids(ids)
    with state.engine.begin() as conn:
        n = conn.execute(sa.update(Channel).where(Channel.id.in_(ids)).values(status=status, status_reason="")).rowcount
    state.health.forget(ids)
    reload_routes(state)
    return n


def set_channels_priority(state: AppState, ids: list[int], priority: int) -> int:
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise ApiError(f"priority must be between {PRIORITY_MIN} and {PRIORITY_MAX}")
    _check_ids(ids)
    with state.engine.begin() as conn:
        n = conn.execute(sa.update(Channel).where(Channel.id.in_(ids)).values(priority=priority)).rowcount
    reload_routes(state)
    return n


def delete_channels(state: AppState, ids: list[int]) -> int:
    _check_ids(ids)
    with state.engine.begin() as conn:
        conn.execute(sa.delete(ChannelTest).where(ChannelTest.channel_id.in_(ids)))
        n = conn.execute(sa.delete(Channel).where(Channel.id.in_(ids))).rowcount
    reload_routes(state)
    return n


def type_metas(state: AppState) -> dict[str, dict[str, Any]]:
    return {str(p.id): {"name": p.name, "keyHelp": p.key_help, "defaultBaseUrl": p.default_base_url,
                        "readme": p.readme, "adaptor": p.adaptor, "kinds": list(p.kinds) or list(MODEL_KINDS),
                        "supported": not p.unsupported, "unsupported_reason": p.unsupported,
                        "models": [{"model": m, "kind": k, **_model_status(p.id, m)} for m, k in p.models]}
            for p in state.catalog.values()}


def _model_status(type_id: int, model: str) -> dict[str, Any]:
    info = model_data().info(model, type_id)
    return {"status": info.status() if info else "current", "retired": (info.retired or None) if info else None}


def contains(column: Any, text: str) -> Any:
    """Case-insensitive substring match in which `%` and `_` match themselves, not anything (issue 10).
    ilike, as aiproxy: PostgreSQL's LIKE is case-sensitive (SQLite's and MariaDB's are not)."""
    return column.icontains(text, autoescape=True)


_CHANNEL_ORDER = {"name", "type", "created_at", "status", "used_amount", "request_count", "priority", "id"}


def _order(order: str | None, allowed: set[str], table: Any, default: Any) -> Any:
    if not order:
        return default
    name, _, direction = order.partition("-")
    if name not in allowed:
        return default
    column = getattr(table, name)
    return column.asc() if direction == "asc" else column.desc()


@admin_router.get("/channels")
def api_channels_list(page: QueryPage = None, p: QueryPage = None, per_page: QueryPage = None, id: QueryId = None,
                      name: str = "", key: str = "", channel_type: QueryId = None, type: QueryId = None,
                      base_url: str = "", status: QueryId = None, order: str = "", keyword: str = "",
                      search: str = "", state: AppState = Depends(require_admin)) -> JSONResponse:
    """`keyword` is aiproxy's name; `search` is FastGPT's branch client's (GET /api/channels/?search=)."""
    keyword = keyword or search
    number, size = _page(page, p, per_page)
    where: list[Any] = []
    for column, value in ((Channel.id, id), (Channel.type, channel_type if channel_type is not None else type),
                          (Channel.status, status), (Channel.name, name), (Channel.key, key),
                          (Channel.base_url, base_url)):
        if value is not None and value != "":
            where.append(column == value)
    if keyword:
        match = [contains(Channel.name, keyword), contains(Channel.key, keyword), contains(Channel.base_url, keyword),
                 contains(sa.cast(Channel.models, sa.Text), keyword)]
        if keyword.isdigit() and int(keyword) <= INT64_MAX:
            match.append(Channel.id == int(keyword))
        where.append(sa.or_(*match))
    channels, total = select_channels(state.engine, where, _order(order, _CHANNEL_ORDER, Channel, Channel.id.desc()),
                                      size, (number - 1) * size)
    return api_ok({"channels": with_health(state, channels), "total": total})


admin_router.add_api_route("/channels/search", api_channels_list, methods=["GET"])


@admin_router.get("/channels/all")
def api_channels_all(state: AppState = Depends(require_admin)) -> JSONResponse:
    return api_ok(with_health(state, select_channels(state.engine)[0]))


@admin_router.get("/channels/type_metas")
def api_type_metas(state: AppState = Depends(require_admin)) -> JSONResponse:
    return api_ok(type_metas(state))


@admin_router.post("/channels")
def api_channels_create(items: Annotated[list[ChannelIn], pydantic.Field(max_length=ITEMS_MAX)],
                        state: AppState = Depends(require_admin)) -> JSONResponse:
    return api_ok({"ids": create_channels(state, items)})


Ids = Annotated[list[Id], pydantic.Field(max_length=ITEMS_MAX)]


class IdsIn(ApiInput):
    ids: Ids


@admin_router.post("/channels/batch_delete")
def api_channels_batch_delete(ids: Annotated[Ids | IdsIn, Body()],
                              state: AppState = Depends(require_admin)) -> JSONResponse:
    """A bare array (aiproxy, FastGPT's later branch client) or {"ids": [...]} (its first version)."""
    return api_ok(delete_channels(state, ids.ids if isinstance(ids, IdsIn) else ids))


class BatchIn(ApiInput):
    ids: Ids
    status: Status | None = None
    priority: _int_in(PRIORITY_MIN, PRIORITY_MAX) | None = None


@admin_router.post("/channels/batch_status")
def api_channels_batch_status(body: BatchIn, state: AppState = Depends(require_admin)) -> JSONResponse:
    return api_ok(set_channels_status(state, body.ids, body.status or 0))


@admin_router.post("/channels/batch_priority")
def api_channels_batch_priority(body: BatchIn, state: AppState = Depends(require_admin)) -> JSONResponse:
    if body.priority is None:
        raise ApiError("priority is required")
    return api_ok(set_channels_priority(state, body.ids, body.priority))


@admin_router.post("/channel")
def api_channel_create(item: ChannelIn, state: AppState = Depends(require_admin)) -> JSONResponse:
    ids = create_channels(state, [item])
    return api_ok({"id": ids[0], "ids": ids})


@admin_router.get("/channel/{channel_id}")
def api_channel_get(channel_id: Id, state: AppState = Depends(require_admin)) -> JSONResponse:
    return api_ok(get_channel(state, channel_id))


@admin_router.put("/channel/{channel_id}")
def api_channel_update(channel_id: Id, item: ChannelIn, state: AppState = Depends(require_admin)) -> JSONResponse:
    return api_ok(update_channel(state, channel_id, item))


class StatusIn(ApiInput):
    status: Status


@admin_router.post("/channel/{channel_id}/status")
def api_channel_status(channel_id: Id, body: StatusIn, state: AppState = Depends(require_admin)) -> JSONResponse:
    if not set_channels_status(state, [channel_id], body.status):
        raise ApiError(f"channel {channel_id} not found", 404)
    return api_ok()


@admin_router.delete("/channel/{channel_id}")
def api_channel_delete(channel_id: Id, state: AppState = Depends(require_admin)) -> JSONResponse:
    if not delete_channels(state, [channel_id]):
        raise ApiError(f"channel {channel_id} not found", 404)
    return api_ok()


# ---- channel tests ----

def route_for_channel(state: AppState, channel_id: int) -> ChannelRoute:
    route = state.routes.channels.get(channel_id)
    if route is None:
        raise ApiError(f"channel {channel_id} not found", 404)
    return route


def _sse_results(results: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    async def events() -> AsyncIterator[bytes]:
        async for result in results:
            yield b"data: " + orjson.dumps({"success": True, "data": result}) + b"\n\n"
    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _test_results(state: AppState, targets: list[tuple[ChannelRoute, list[str]]],
                        save: bool = True) -> AsyncIterator[dict[str, Any]]:
    for route, models in targets:
        async for result in run_model_tests(state, route, models, save):
            yield result


async def _answer_tests(state: AppState, targets: list[tuple[ChannelRoute, list[str]]], stream: bool,
                        save: bool = True) -> Response:
    if stream:
        return _sse_results(_test_results(state, targets, save))
    return api_ok([{"success": True, "data": r} async for r in _test_results(state, targets, save)])


@admin_router.get("/channel/{channel_id}/test")
async def api_channel_test_all(channel_id: Id, stream: bool = False,
                               state: AppState = Depends(require_admin)) -> Response:
    route = route_for_channel(state, channel_id)
    return await _answer_tests(state, [(route, route.offered)], stream)


@admin_router.get("/channel/{channel_id}/test/{model:path}")
async def api_channel_test_one(channel_id: Id, model: ModelName,
                               state: AppState = Depends(require_admin)) -> JSONResponse:
    route = route_for_channel(state, channel_id)
    if not route.serves(model):
        raise ApiError(f"channel {channel_id} does not offer the model '{model}'")
    return api_ok(await run_model_test(state, route, model))


@admin_router.get("/channels/test")
async def api_channels_test(stream: bool = False, test_disabled: bool = False,
                            state: AppState = Depends(require_admin)) -> Response:
    targets = [(r, r.offered) for r in state.routes.channels.values()
               if r.enabled or test_disabled]
    return await _answer_tests(state, targets, stream)


@admin_router.post("/channel/{channel_id}/retest")
async def api_channel_retest(channel_id: Id, state: AppState = Depends(require_admin)) -> JSONResponse:
    """Retest an auto-disabled channel now, as the schedule would: it is enabled again if it passes."""
    route = route_for_channel(state, channel_id)
    if route.status != STATUS_AUTO_DISABLED:
        raise ApiError(f"channel {channel_id} is not auto-disabled (status {route.status}); to test it, use "
                       f"GET /api/channel/{channel_id}/test")
    if not route.test_model:
        raise ApiError(f"channel {channel_id} has no model to test")
    return api_ok((await retest_auto_disabled(state, [channel_id]))[0])


@admin_router.post("/channels/retest")
async def api_channels_retest(state: AppState = Depends(require_admin)) -> JSONResponse:
    """Retest every auto-disabled channel now; `[{channel_id, enabled, test}]`."""
    return api_ok(await retest_auto_disabled(state))


class PreviewIn(ChannelIn):
    model: Annotated[str, pydantic.Field(max_length=MODEL_NAME_MAX)] = ""


def preview_route(state: AppState, data: ChannelIn) -> ChannelRoute:
    """An unsaved channel, for 'test before saving'."""
    cols = _validate_channel(state, data)
    return channel_route(dict(cols, id=0, key=cols["key"].splitlines()[0]), state.catalog)


@admin_router.post("/channel/test-preview")
async def api_channel_test_preview(body: PreviewIn, state: AppState = Depends(require_admin)) -> JSONResponse:
    if not body.model:
        raise ApiError("model is required")
    return api_ok(await run_model_test(state, preview_route(state, body), body.model, save=False))


@admin_router.post("/channel/test-preview-all")
async def api_channel_test_preview_all(body: ChannelIn, stream: bool = False,
                                       state: AppState = Depends(require_admin)) -> Response:
    route = preview_route(state, body)
    models = route.offered
    if not models:
        raise ApiError("no models to test")
    return await _answer_tests(state, [(route, models)], stream, save=False)


# ---- models ----

def list_models(state: AppState) -> list[dict[str, Any]]:
    """Every model some channel offers, with its kind, switch, channels and last tests."""
    routes = state.routes
    with state.engine.connect() as conn:
        tests = collections.defaultdict(list)
        for r in conn.execute(sa.select(*ChannelTest.__table__.columns)):
            tests[r.model].append(channel_test_to_api(dict(r._mapping)))
    names = routes.known_models | routes.model_configs.keys()
    out = []
    for model in sorted(names):
        serving = [c for c in routes.channels.values() if c.serves(model)]
        cfg = routes.model_configs.get(model) or {}
        info = model_data().info(model, serving[0].type if serving else None)
        price = {name: cfg.get(name) or (getattr(info, name) if info is not None else None) for name in PRICE_FIELDS}
        out.append({
            "model": model, "kind": routes.kind_of(model), "type": kind_mode(routes.kind_of(model)),
            "owner": state.catalog[serving[0].type].name if serving and serving[0].type in state.catalog else "",
            "enabled": routes.model_enabled(model),
            # aiproxy's shape: the price applied (the config's where set, else the snapshot's; null: unknown)
            "price": price, **price,
            "price_source": {name: "config" if cfg.get(name) else "builtin" if price[name] is not None else None
                             for name in PRICE_FIELDS},
            "context": info.context if info else None, "max_output": info.max_output if info else None,
            "retired": (info.retired or None) if info else None, "status": info.status() if info else "unknown",
            "channels": [{"id": c.id, "name": c.name, "type": c.type, "priority": c.priority, "enabled": c.enabled,
                          "upstream_model": c.upstream_model(model)} for c in sorted(serving, key=lambda c: -c.priority)],
            "tests": sorted(tests.get(model, []), key=lambda t: -t["test_at"]),
        })
    return out


class PriceIn(ApiInput):
    """aiproxy's `price` object: USD per 1K tokens (its default unit); 0 unsets a price (the snapshot's applies)."""

    input_price: Price | None = None
    output_price: Price | None = None
    cached_price: Price | None = None
    cache_creation_price: Price | None = None
    input_price_unit: Literal[0, 1000] | None = None  # aiproxy's unit fields: only its default, per 1K tokens
    output_price_unit: Literal[0, 1000] | None = None
    cached_price_unit: Literal[0, 1000] | None = None
    cache_creation_price_unit: Literal[0, 1000] | None = None


class ModelConfigIn(ApiInput):
    enabled: bool | None = None
    kind: Literal[MODEL_KINDS + ("",)] | None = None
    input_price: Price | None = None  # USD per 1K tokens (also accepted inside `price`, aiproxy's shape)
    output_price: Price | None = None
    cached_price: Price | None = None
    cache_creation_price: Price | None = None
    price: PriceIn | None = None


_CONFIG_COLUMNS = ("enabled", "kind", *PRICE_FIELDS, "updated_at")


def save_model_config(state: AppState, model: str, data: ModelConfigIn) -> dict[str, Any]:
    if not 0 < len(model) <= MODEL_NAME_MAX:
        raise ApiError(f"a model name has 1 to {MODEL_NAME_MAX} characters")
    current = dict(state.routes.model_configs.get(model) or {"model": model, "enabled": True, "kind": "",
                                                               **dict.fromkeys(PRICE_FIELDS, 0.0)})
    given = {k: v for k, v in data.model_dump(exclude={"price"}).items() if v is not None}
    if data.price is not None:  # aiproxy's nested shape; a flat field given too wins
        given = {**{k: v for k, v in data.price.model_dump().items() if k in PRICE_FIELDS and v is not None},
                 **given}
    current.update(given, updated_at=now_ms())
    with state.engine.begin() as conn:
        values = {k: current.get(k) or (0.0 if k in PRICE_FIELDS else current.get(k)) for k in _CONFIG_COLUMNS}
        upsert(conn, ModelConfig.__table__, [{"model": model, **values}], ("model",))
    reload_routes(state)
    return current


@admin_router.get("/models/enabled")
def api_models_enabled(state: AppState = Depends(require_admin)) -> JSONResponse:
    return api_ok({"default": [m for m in list_models(state) if m["enabled"] and any(
        c["enabled"] for c in m["channels"])]})


@admin_router.get("/models/builtin")
def api_models_builtin(state: AppState = Depends(require_admin)) -> JSONResponse:
    return api_ok([builtin_model(p, m, k) for p in state.catalog.values() for m, k in p.models])


def builtin_model(provider: Provider, model: str, kind: str) -> dict[str, Any]:
    """A built-in model with what the snapshot knows of it: limits, prices, retirement (status: current,
    deprecated, retiring or retired)."""
    info = model_data().info(model, provider.id)
    out = info.to_api() if info is not None else {"model": model, "context": None, "max_output": None,
                                                  "price": dict.fromkeys(PRICE_FIELDS), "retired": None,
                                                  "status": "current", "hand_written": True}
    return {**out, "model": model, "kind": kind, "type": kind_mode(kind), "owner": provider.name,
            "channel_type": provider.id}


@admin_router.get("/model_configs")
def api_model_configs(page: QueryPage = None, p: QueryPage = None, per_page: QueryPage = None, model: str = "",
                      keyword: str = "", state: AppState = Depends(require_admin)) -> JSONResponse:
    configs = [m for m in list_models(state) if (not model or m["model"] == model)
               and (not keyword or keyword.lower() in m["model"].lower())]
    number, size = _page(page, p, per_page or PER_PAGE_MAX)
    return api_ok({"configs": configs[(number - 1) * size: number * size], "total": len(configs)})


admin_router.add_api_route("/model_configs/search", api_model_configs, methods=["GET"])


@admin_router.get("/model_configs/all")
def api_model_configs_all(state: AppState = Depends(require_admin)) -> JSONResponse:
    return api_ok(list_models(state))


@admin_router.get("/model_config/{model:path}")
def api_model_config_get(model: ModelName, state: AppState = Depends(require_admin)) -> JSONResponse:
    found = [m for m in list_models(state) if m["model"] == model]
    if not found:
        raise ApiError(f"model '{model}' is not offered by any channel", 404)
    return api_ok(found[0])


@admin_router.post("/model_config/{model:path}")
def api_model_config_save(model: ModelName, body: ModelConfigIn,
                          state: AppState = Depends(require_admin)) -> JSONResponse:
    return api_ok(save_model_config(state, model, body))


admin_router.add_api_route("/model_config/{model:path}", api_model_config_save, methods=["PUT"])


# ---- API keys (tokens) ----

class TokenIn(ApiInput):
    name: Annotated[str, pydantic.Field(min_length=1, max_length=NAME_MAX)] | None = None
    models: Annotated[list[ModelName], pydantic.Field(max_length=MODELS_MAX)] | None = None
    quota: Annotated[float, pydantic.Field(ge=0, le=QUOTA_MAX)] | None = None  # USD; 0 = unlimited
    expired_at: _int_in(0, MS_MAX) | None = None  # Unix ms; 0 = never
    status: Status | None = None


def create_token(state: AppState, data: TokenIn, key: str | None = None) -> dict[str, Any]:
    name = (data.name or "").strip()
    if not name:
        raise ApiError("name is required")
    row = {"name": name, "key": key or generate_key(), "models": clean_models(data.models),
           "quota": data.quota or 0.0, "expired_at": data.expired_at or 0, "status": data.status or 1,
           "created_at": now_ms()}
    with state.engine.begin() as conn:
        row["id"] = conn.execute(sa.insert(Token).values(**row)).inserted_primary_key[0]
    reload_routes(state)
    return token_to_api(dict(row, used_amount=0.0, request_count=0))


def list_tokens(state: AppState, keyword: str = "", status: int | None = None) -> list[dict[str, Any]]:
    stmt = sa.select(*Token.__table__.columns).order_by(Token.id.desc())
    if keyword:
        stmt = stmt.where(contains(Token.name, keyword))
    if status is not None:
        stmt = stmt.where(Token.status == status)
    with state.engine.connect() as conn:
        return [token_to_api(dict(r._mapping)) for r in conn.execute(stmt)]


def get_token(state: AppState, token_id: int) -> dict[str, Any]:
    with state.engine.connect() as conn:
        row = conn.execute(sa.select(*Token.__table__.columns).where(Token.id == token_id)).first()
    if row is None:
        raise ApiError(f"API key {token_id} not found", 404)
    return token_to_api(dict(row._mapping))


def update_token(state: AppState, token_id: int, data: TokenIn) -> dict[str, Any]:
    get_token(state, token_id)
    values = {k: v for k, v in data.model_dump().items() if v is not None}
    if "models" in values:
        values["models"] = clean_models(values["models"])
    if values:
        with state.engine.begin() as conn:
            conn.execute(sa.update(Token).where(Token.id == token_id).values(**values))
        reload_routes(state)
    return get_token(state, token_id)


def delete_tokens(state: AppState, ids: list[int]) -> int:
    _check_ids(ids)
    with state.engine.begin() as conn:
        n = conn.execute(sa.delete(Token).where(Token.id.in_(ids))).rowcount
    reload_routes(state)
    return n


@admin_router.get("/tokens")
def api_tokens_list(page: QueryPage = None, p: QueryPage = None, per_page: QueryPage = None, keyword: str = "",
                    status: QueryId = None, state: AppState = Depends(require_admin)) -> JSONResponse:
    tokens = list_tokens(state, keyword, status)
    number, size = _page(page, p, per_page)
    return api_ok({"tokens": tokens[(number - 1) * size: number * size], "total": len(tokens)})


admin_router.add_api_route("/tokens/search", api_tokens_list, methods=["GET"])


@admin_router.post("/tokens")
def api_tokens_create(body: TokenIn, state: AppState = Depends(require_admin)) -> JSONResponse:
    return api_ok(create_token(state, body))


@admin_router.post("/tokens/batch_delete")
def api_tokens_batch_delete(ids: Ids, state: AppState = Depends(require_admin)) -> JSONResponse:
    return api_ok(delete_tokens(state, ids))


@admin_router.get("/tokens/{token_id}")
def api_token_get(token_id: Id, state: AppState = Depends(require_admin)) -> JSONResponse:
    return api_ok(get_token(state, token_id))


@admin_router.put("/tokens/{token_id}")
def api_token_update(token_id: Id, body: TokenIn, state: AppState = Depends(require_admin)) -> JSONResponse:
    return api_ok(update_token(state, token_id, body))


@admin_router.post("/tokens/{token_id}/status")
def api_token_status(token_id: Id, body: StatusIn, state: AppState = Depends(require_admin)) -> JSONResponse:
    return api_ok(update_token(state, token_id, TokenIn(status=body.status)))


@admin_router.delete("/tokens/{token_id}")
def api_token_delete(token_id: Id, state: AppState = Depends(require_admin)) -> JSONResponse:
    if not delete_tokens(state, [token_id]):
        raise ApiError(f"API key {token_id} not found", 404)
    return api_ok()


# ---- logs ----

def make_log_filter(start_timestamp: QueryTimestamp = None, end_timestamp: QueryTimestamp = None,
                    model_name: str = "", channel: QueryId = None, token_name: str = "", request_id: str = "",
                    code_type: Literal["", "all", "success", "error"] = "all", keyword: str = "",
                    is_test: bool | None = None) -> LogFilter:
    return LogFilter(_timestamp(start_timestamp, "start_timestamp"), _timestamp(end_timestamp, "end_timestamp"),
                     model_name.strip(), channel, token_name.strip(), request_id.strip(), code_type or "all",
                     keyword.strip(), is_test)


@admin_router.get("/logs")
def api_logs(page: QueryPage = None, p: QueryPage = None, per_page: QueryPage = None,
             flt: LogFilter = Depends(make_log_filter), state: AppState = Depends(require_admin)) -> JSONResponse:
    number, size = _page(page, p, per_page)
    logs, total = query_logs(state.engine, flt, number, size)
    return api_ok({"logs": logs, "total": total})


admin_router.add_api_route("/logs/search", api_logs, methods=["GET"])


@admin_router.get("/logs/detail/{log_id}")
def api_log_detail(log_id: Id, state: AppState = Depends(require_admin)) -> JSONResponse:
    return api_ok(log_detail(state, log_id))


def log_detail(state: AppState, log_id: int) -> dict[str, Any]:
    with state.engine.connect() as conn:
        row = conn.execute(sa.select(*LogRow.__table__.columns).where(LogRow.id == log_id)).first()
        if row is None:
            raise ApiError(f"log {log_id} not found", 404)
        detail = conn.execute(sa.select(*LogDetail.__table__.columns).where(
            LogDetail.request_id == row.request_id)).first()
    body = dict(detail._mapping) if detail else {"request_body": "", "response_body": "",
                                                  "request_body_truncated": False, "response_body_truncated": False}
    api = log_to_api(dict(row._mapping))
    return dict(body, id=log_id, log_id=log_id, attempts=api["attempts"], retry_times=row.retry_times,
                used_amount=api["used_amount"], usage=api["usage"], model=row.model)


@admin_router.delete("/logs")
def api_logs_delete(timestamp: QueryTimestamp = None, state: AppState = Depends(require_admin)) -> JSONResponse:
    before = _timestamp(timestamp, "timestamp")
    if before is None:
        raise ApiError("timestamp is required")
    return api_ok(delete_logs_before(state.engine, before))


LOG_CSV_COLUMNS = ("id", "request_id", "request_at", "created_at", "ttfb_milliseconds", "model", "actual_model",
                   "channel", "channel_id", "code", "endpoint", "prompt_tokens", "completion_tokens", "cached_tokens",
                   "cache_creation_tokens", "used_amount",
                   "token_name", "ip", "retry_times", "content")
_CSV_TIMES = ("request_at", "created_at")
_FORMULA_START = "=+-@\t\r"  # OWASP's CSV injection rule: a spreadsheet runs a cell that starts with one of these


def csv_cell(value: Any) -> Any:
    """A cell a spreadsheet shows as text: one that would start a formula gets a leading apostrophe."""
    return "'" + value if isinstance(value, str) and value and value[0] in _FORMULA_START else value


def _local_time(ms: int, tz: ZoneInfo) -> str:
    try:
        return datetime.fromtimestamp(ms / 1000, tz).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    except (ValueError, OverflowError, OSError):  # a time no calendar shows: keep the number
        return str(ms)


def local_times(tz: ZoneInfo) -> Callable[[int], str]:
    """_local_time for many times: each minute's date and clock are formatted once (an export formats millions of
    times, many calls to a minute), the seconds appended. A zone whose offset then had seconds (LMT) takes the
    long way."""
    @functools.lru_cache(maxsize=4096)
    def minute_text(minute: int) -> str | None:
        try:
            local = datetime.fromtimestamp(minute * 60, tz)
        except (ValueError, OverflowError, OSError):
            return None
        return local.strftime("%Y-%m-%d %H:%M:") if local.second == 0 else None

    def text(ms: int) -> str:
        minute, rest = divmod(ms, 60_000)
        head = minute_text(minute)
        return _local_time(ms, tz) if head is None else f"{head}{rest // 1000:02d}.{rest % 1000:03d}"
    return text


# what the CSV reads of a row, in the order _csv_cells takes them (the id first, for iter_log_pages)
_CSV_READ = tuple(getattr(LogRow, name) for name in (
    "id", "request_id", "request_at", "created_at", "ttfb_milliseconds", "model", "actual_model", "channel_name",
    "channel", "code", "endpoint", "input_tokens", "output_tokens", "cached_tokens", "cache_creation_tokens",
    "cost_unknown", "used_amount", "token_name", "ip", "retry_times", "content"))


def _csv_cells(row: Sequence[Any], local_time: Callable[[int], str], channel_names: dict[int, str]) -> list[Any]:
    """A stored log row (read as _CSV_READ) as its CSV line, in LOG_CSV_COLUMNS' order (built straight from the
    tuple: an export formats millions; only text cells can start a formula)."""
    (id_, request_id, request_at, created_at, ttfb, model, actual_model, channel_name, channel, code, endpoint,
     input_tokens, output_tokens, cached_tokens, cache_creation_tokens, cost_unknown, used_amount, token_name, ip,
     retry_times, content) = row
    return [id_, csv_cell(request_id), local_time(request_at), local_time(created_at), ttfb, csv_cell(model),
            csv_cell(actual_model), csv_cell(channel_name or channel_names.get(channel, "") if channel else ""),
            channel, code, csv_cell(endpoint), input_tokens, output_tokens, cached_tokens, cache_creation_tokens or 0,
            None if cost_unknown else used_amount, csv_cell(token_name), csv_cell(ip), retry_times, csv_cell(content)]


def csv_header(tz: ZoneInfo) -> list[str]:
    return [f"{c} ({tz.key})" if c in _CSV_TIMES else c for c in LOG_CSV_COLUMNS]


def iter_logs_csv(state: AppState, flt: LogFilter, tz: ZoneInfo = ZoneInfo("UTC"),
                  limit: int | None = None) -> Iterator[str]:
    """Logs as CSV for a spreadsheet, a page of text at a time (times in `tz`, channels by name; rows keep the
    name of a deleted channel). Every matching row, unless `limit` is given: then a last line says it was
    reached."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(csv_header(tz))
    yield out.getvalue()
    names = {c.id: c.name for c in state.routes.channels.values()}
    local_time = local_times(tz)
    written = 0
    for page in iter_log_pages(state.engine, flt, _CSV_READ, None if limit is None else limit + 1):
        stopped = limit is not None and written + len(page) > limit
        if stopped:
            page = page[:limit - written]
        out.seek(0)
        out.truncate()
        writer.writerows(_csv_cells(r, local_time, names) for r in page)
        written += len(page)
        if stopped:
            writer.writerow([f"# stopped at max_entries={limit}: more rows match; export again with a narrower "
                             "range or a larger max_entries"])
        yield out.getvalue()
        if stopped:
            return


def logs_csv(state: AppState, flt: LogFilter, limit: int | None = None, tz: ZoneInfo = ZoneInfo("UTC")) -> str:
    return "".join(iter_logs_csv(state, flt, tz, limit))


def export_logs_file(state: AppState, flt: LogFilter, tz: ZoneInfo) -> Path:
    """The CSV of `flt` (times as the page shows them) in <data-dir>/exports, replacing the previous one."""
    folder = state.settings.data_path / "exports"
    folder.mkdir(mode=0o700, exist_ok=True)
    for old in folder.glob("logs-*.csv"):
        old.unlink(missing_ok=True)
    path = folder / f"logs-{secrets.token_hex(8)}.csv"
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="utf-8-sig",
              newline="") as f:
        for text in iter_logs_csv(state, flt, tz):
            f.write(text)
    return path


async def _in_thread(rows: Iterator[str]) -> AsyncIterator[bytes]:
    """Each next() of a blocking iterator in a worker thread: the event loop serves calls meanwhile."""
    done = object()
    while (text := await asyncio.to_thread(next, rows, done)) is not done:
        yield text.encode("utf-8")


@admin_router.get("/logs/export")
def api_logs_export(flt: LogFilter = Depends(make_log_filter), timezone: Timezone = "UTC",
                    max_entries: Annotated[int, pydantic.Field(ge=0, le=INT64_MAX)] = 0,
                    state: AppState = Depends(require_admin)) -> Response:
    """Streamed: the first rows leave while the rest are read, and memory stays flat for any number of them.
    Every matching row (aiproxy's `max_entries`: 0 or absent, no limit)."""
    rows = iter_logs_csv(state, flt, parse_timezone(timezone), max_entries or None)
    return StreamingResponse(_in_thread(rows), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": 'attachment; filename="aiproxy-logs.csv"'})


# ---- dashboard ----

TIMESPANS = ("minute", "hour", "day")
TIMESPAN_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


def bucket_start(ts: int, timespan: str, tz: ZoneInfo) -> int:
    """The start, in Unix seconds, of the minute/hour/day holding `ts`, with hours and days in `tz`."""
    if timespan == "minute":
        return ts - ts % 60
    local = datetime.fromtimestamp(ts, tz)
    local = local.replace(minute=0, second=0, microsecond=0)
    if timespan == "day":
        local = local.replace(hour=0)
    return int(local.timestamp())


@dataclass
class DashboardAnswer:
    series: list[dict[str, Any]]  # FastGPT's dashboardv2 shape: [{timestamp, summary: [...]}]
    timespan: str  # the buckets answered, which may be coarser than those asked for
    note: str = ""  # why they are coarser


def dashboard_answer(engine: sa.Engine, start_ms: int | None, end_ms: int | None, timezone_name: str = "UTC",
                     timespan: str = "hour", channel: int | None = None, model: str = "") -> DashboardAnswer:
    """The dashboard's series, summed in SQL from the coarsest summaries that answer: the hourly rollup for
    whole hours, the per-minute summaries for minute buckets and for the part hours at either end of a range
    (while they are kept). Without a channel, `request_count` counts calls, so the totals equal the logs' rows;
    with `channel`, that channel's tries, failed ones included (its error rate, its latency)."""
    if timespan not in TIMESPANS:
        raise ApiError("timespan must be minute, hour or day")
    tz = parse_timezone(timezone_name)
    end_s = (end_ms or now_ms()) // 1000
    start_s = (start_ms // 1000) if start_ms is not None else end_s - 7 * 86400
    first, last = start_s - start_s % 60, end_s - end_s % 60 + 60  # whole minutes, as the summaries count
    kept_from = minute_cutoff_s()
    note = ""
    if timespan == "minute" and last - first > MINUTE_RANGE_MAX_S + 60:
        timespan, note = "hour", (f"minute buckets cover at most {MINUTE_RANGE_MAX_S // 86400} days; "
                                  "this range is answered by the hour")
    elif timespan == "minute" and first < kept_from:
        timespan, note = "hour", (f"per-minute summaries are kept {SUMMARY_MINUTE_DAYS} days; "
                                  "this range is answered by the hour")
    step = TIMESPAN_SECONDS[timespan]
    stretches = utc_offsets(tz, first, last)
    whole_hours = all(offset % 3600 == 0 for _, offset in stretches)
    parts: list[tuple[str, int, int]] = []  # (read from, from, to)
    if step == 60 or (not whole_hours and first >= kept_from):
        parts.append(("minutes", first, last))
    else:
        if not whole_hours:
            note = note or "hours of this time zone are read from whole UTC hours (its offset is not whole hours)"
        head, tail = -(-first // 3600) * 3600, last // 3600 * 3600  # the whole hours: [head, tail)
        if tail < head:  # within one hour
            parts.append(("minutes" if first >= kept_from else "logs", first, last))
        else:  # the part hours at either end: their minutes while kept, else their logs
            if first < head:
                parts.append(("minutes" if first >= kept_from else "logs", first, head))
            if head < tail:
                parts.append(("hours", head, tail))
            if tail < last:
                parts.append(("minutes" if tail >= kept_from else "logs", tail, last))
    sums: dict[tuple[int, int, str], list[Any]] = {}
    with engine.connect() as conn:
        for source, lo, hi in parts:
            read = (_log_sums(conn, lo, hi, stretches, step, channel, model) if source == "logs" else
                    _summary_sums(conn, source == "hours", lo, hi, stretches, step, channel, model))
            for k, ch, mdl, *values in read:
                k = int(k)  # MySQL's FLOOR() gives a decimal
                acc = sums.get((k, ch, mdl))
                if acc is None:
                    sums[(k, ch, mdl)] = list(values)
                else:
                    n = len(SUMMARY_COUNTERS)
                    acc[:n] = [a + (b or 0) for a, b in zip(acc[:n], values[:n])]
                    acc[n:] = [max(a or 0, b or 0) for a, b in zip(acc[n:], values[n:])]
    buckets: dict[int, list[dict[str, Any]]] = collections.defaultdict(list)
    starts: dict[int, int] = {}
    for (k, ch, mdl), values in sums.items():
        c = dict(zip(SUMMARY_COUNTERS, values))
        item = {"channel_id": ch, "model": mdl, **{n: int(c[n] or 0) for n in _SUMMED},
                "used_amount": float(c["used_amount"] or 0), "max_rpm": int(values[-2] or 0),
                "max_tpm": int(values[-1] or 0), "failed_attempts": int(c["failed_attempts"] or 0)}
        if channel is not None:  # the channel's own figures: every try it made
            item["request_count"] += item["failed_attempts"]
            item["exception_count"] += item["failed_attempts"]
            item["total_time_milliseconds"] += int(c["failed_attempt_ms"] or 0)
        elif not item["request_count"]:
            continue  # only failed tries here, no calls
        if k not in starts:
            starts[k] = k * 60 if step == 60 else _local_number_start(k, step, tz)
        buckets[starts[k]].append(item)
    series = [{"timestamp": ts, "summary": sorted(buckets[ts], key=lambda i: (i["channel_id"], i["model"]))}
              for ts in sorted(buckets)]
    return DashboardAnswer(series, timespan, note)


def dashboard_series(state: AppState, start_ms: int | None, end_ms: int | None, timezone: str = "UTC",
                     timespan: str = "hour", channel: int | None = None, model: str = "") -> list[dict[str, Any]]:
    return dashboard_answer(state.engine, start_ms, end_ms, timezone, timespan, channel, model).series


@admin_router.get("/dashboardv2")
def api_dashboard_v2(channel: QueryId = None, model: str = "", start_timestamp: QueryTimestamp = None,
                     end_timestamp: QueryTimestamp = None, timezone: Timezone = "UTC", timespan: str = "hour",
                     state: AppState = Depends(require_admin)) -> JSONResponse:
    answer = dashboard_answer(state.engine, _timestamp(start_timestamp, "start_timestamp"),
                              _timestamp(end_timestamp, "end_timestamp"), timezone, timespan or "hour", channel,
                              model.strip())
    body: dict[str, Any] = {"success": True, "data": answer.series}
    if answer.note:  # FastGPT reads only `data`; the note says why the buckets are coarser than asked
        body["message"] = answer.note
    return _OrjsonResponse(body, headers={"X-Dashboard-Timespan": answer.timespan})


# ---- options ----


def set_option(state: AppState, key: str, value: Any) -> Any:
    try:
        value = option_value(key, value)
    except ValueError as exc:
        raise ApiError(str(exc)) from None
    save_option(state.engine, key, value)
    state.options[key] = value
    return value


def current_options(state: AppState) -> dict[str, Any]:
    return {"retry_times": state.retry_times, "log_retention_days": state.log_retention_days,
            "auto_disable_after": state.auto_disable_after, "channel_retest_interval": state.channel_retest_interval}


class OptionIn(ApiInput):
    key: Literal[tuple(OPTION_BOUNDS)]
    value: Any = None  # a whole number within the option's OPTION_BOUNDS


@admin_router.get("/option")
def api_options(state: AppState = Depends(require_admin)) -> JSONResponse:
    return api_ok(current_options(state))


@admin_router.put("/option")
def api_option_set(body: OptionIn, state: AppState = Depends(require_admin)) -> JSONResponse:
    return api_ok({body.key: set_option(state, body.key, body.value)})


admin_router.add_api_route("/option", api_option_set, methods=["POST"])


# ---- admin key ----

def rotate_admin_key(state: AppState) -> str:
    """A new admin key, in force at once and saved to <data-dir>/admin_key. Every client of the old one (FastGPT's
    AIPROXY_API_TOKEN, other UI sessions) needs the new one. An ADMIN_KEY from the environment wins again at the
    next start."""
    key = generate_key()
    write_secret_file(state.settings.data_path / "admin_key", key)
    state.admin_key = key
    return key


@admin_router.post("/admin_key/rotate")
def api_admin_key_rotate(state: AppState = Depends(require_admin)) -> JSONResponse:
    key = rotate_admin_key(state)
    return api_ok({"key": key, "kept_after_restart": not state.settings.admin_key})


# ---- fetch models from upstream (the channel dialog diffs them against the channel's list) ----

UPSTREAM_MODELS_TIMEOUT_S = 20


async def fetch_upstream_models(state: AppState, data: ChannelIn) -> list[str]:
    """The model ids a channel's provider lists (`GET <base_url>/models` for OpenAI's format)."""
    route = preview_route(state, data)
    session, options = channel_http(state, route)
    try:
        await route.adaptor.authorize(state, route)
        url, headers = route.adaptor.models_request(route)
        target = await route.adaptor.sign(state, route, "GET", url, headers, b"")
        async with session.get(target, headers=headers, **options,
                               timeout=aiohttp.ClientTimeout(total=UPSTREAM_MODELS_TIMEOUT_S)) as resp:
            status, body = resp.status, await resp.read()
    except RelayError as exc:
        raise ApiError(route.scrub_text(exc.message), exc.status if exc.status < 500 else 502) from None
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        raise ApiError(route.scrub_text(f"cannot reach {route.base_url or 'the provider'}: {type(exc).__name__} "
                                        f"{exc}".strip()), 502) from None
    if status != 200:  # the provider may quote the key back: scrubbed, like every upstream answer
        raise ApiError(f"the provider answered HTTP {status} to its model list: "
                       f"{route.scrub_text(body.decode('utf-8', 'replace'))[:300]}", 502)
    try:
        return sorted(set(route.adaptor.models_from(orjson.loads(body))))
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise ApiError(f"the provider's model list is not in {route.adaptor.title}'s shape", 502) from None


@admin_router.post("/channel/upstream-models")
async def api_channel_upstream_models(body: ChannelIn, state: AppState = Depends(require_admin)) -> JSONResponse:
    return api_ok(await fetch_upstream_models(state, body))


# ---- the admin API's OpenAPI schema, with its bounds (schemathesis tests the app against it) ----

@functools.cache
def admin_openapi() -> dict[str, Any]:
    from fastapi.openapi.utils import get_openapi

    schema = get_openapi(title="aiproxy-local admin API", version=__version__, routes=[
        *public_router.routes, *admin_router.routes],
        description="labring/aiproxy's /api contract. Send the admin key as `Authorization: Bearer <key>`. "
                    "Every answer is {success, message?, data?}; a bad input is a 400 with a message.")
    public = {route.path for route in public_router.routes}
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            operation["responses"].pop("422", None)  # FastAPI's own shape; ours is the 400 envelope ("default")
            operation["security"] = [] if path in public else [{"adminKey": []}]
    schema.setdefault("components", {})["securitySchemes"] = {"adminKey": {"type": "http", "scheme": "bearer"}}
    schema["components"]["schemas"].pop("HTTPValidationError", None)
    schema["components"]["schemas"].pop("ValidationError", None)
    return schema


@admin_router.get("/openapi.json", include_in_schema=False)
def api_openapi() -> JSONResponse:
    return _OrjsonResponse(admin_openapi())


# ==== 16. Import: OneAPI, new-api, labring/aiproxy ==========================================================
# Copies channels (and, on request, tokens) out of a one-api, new-api or labring/aiproxy database, or aiproxy's
# config.yaml; aiproxy sources bring their model prices too. The row mapping is pure (data in, data out);
# read_source() is the only code that talks to the source, import_source() the only one that writes. Type
# numbers, default hosts and aiproxy's type names are data: assets/oneapi_types.json.

IMPORT_CONNECT_TIMEOUT = 5  # seconds; a wrong host must fail the admin call fast instead of hanging it
IMPORT_QUOTA_PER_UNIT = 500_000.0  # one-api/new-api quota units per USD (their QuotaPerUnit default)
_NEWAPI_COLUMNS = frozenset({"tag", "setting", "auto_ban", "other_info", "param_override", "status_code_mapping"})
#: (table, column) pairs only labring/aiproxy's GORM schema has; column None = the table itself. Half of them
#: is enough, so an older aiproxy (before proxy_url, say) is still recognised.
_AIPROXY_MARKERS = (("channels", "configs"), ("channels", "sets"), ("channels", "proxy_url"),
                    ("channels", "deleted_at"), ("groups", None), ("model_configs", None), ("tokens", "group_id"),
                    ("tokens", "subnets"))
AIPROXY_DEFAULT_PRIORITY, AIPROXY_MAX_PRIORITY = 10, 1_000_000  # aiproxy reads priority 0 as 10, caps it
AIPROXY_PRICE_UNIT = 1000  # tokens per price when *_price_unit is 0 (aiproxy's PriceUnit); ours are per 1K
_YAML_SUFFIXES = (".yaml", ".yml")
#: the keys aiproxy reads from a config.yaml channel (its Channel struct's yaml tags, plus type_name)
_AIPROXY_YAML_CHANNEL_KEYS = frozenset({
    "id", "name", "type", "type_name", "key", "base_url", "proxy_url", "models", "model_mapping", "status",
    "priority", "balance", "balance_threshold", "enabled_auto_balance_check", "skip_tls_verify",
    "enabled_no_permission_ban", "warn_error_rate", "max_error_rate", "configs", "sets"})
_CF_GATEWAY = "https://gateway.ai.cloudflare.com"  # one-api uses these base URLs as they are (no /v1 added)
#: go-sql-driver DSNs: `user:pass@tcp(host:port)/db?params`, and `user:pass@/db` (local default)
_GO_DSN = re.compile(r"(?:(?P<cred>.*)@)?(?P<proto>tcp|unix)?\((?P<addr>[^)]*)\)/(?P<db>[^?]*)(?:\?(?P<q>.*))?", re.S)
_GO_DSN_LOCAL = re.compile(r"(?:(?P<cred>.*)@)?(?P<proto>)(?P<addr>)/(?P<db>[^?/]*)(?:\?(?P<q>.*))?", re.S)
_UNREACHABLE = ("refused", "timed out", "timeout", "resolve", "translate host", "not known", "unreachable")


@dataclass(frozen=True)
class SourceDsn:
    """A parsed source DSN. `safe` and `source` never contain the password."""

    kind: str  # mysql | postgres | sqlite | yaml
    url: sa.URL = field(repr=False)
    safe: str  # e.g. mysql://root@127.0.0.1:3306/oneapi
    source: str  # where, e.g. 127.0.0.1:3306/oneapi, sqlite:/path/one-api.db, yaml:/path/config.yaml
    password: str = field(default="", repr=False)

    def tag(self, flavour: str) -> str:
        """Channel.source / Token.source, e.g. oneapi:127.0.0.1:3306/oneapi or aiproxy:db:5432/aiproxy."""
        return f"{'aiproxy' if flavour == 'aiproxy' else 'oneapi'}:{self.source}"


@dataclass(frozen=True)
class SourceData:
    flavour: str  # oneapi | newapi | aiproxy
    channels: list[dict[str, Any]]
    tokens: list[dict[str, Any]]
    quota_per_unit: float  # source quota units per USD; 1 for aiproxy, whose quotas are amounts already
    model_configs: list[dict[str, Any]] = field(default_factory=list)  # aiproxy only
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)  # aiproxy only, by group id


@dataclass
class ImportedChannel:
    """One channel to create; the fields are Channel's."""

    type: int
    name: str
    key: str
    base_url: str
    models: list[str]
    model_mapping: dict[str, str]
    config: dict[str, Any]
    status: int
    status_reason: str
    priority: int
    weight: int
    source_id: str
    created_at: int = 0  # 0 = now
    proxy_url: str = ""
    skip_tls_verify: bool = False


@dataclass
class RowImport:
    """What one source row becomes: channels, tokens or a model config, or a skip `reason`; `warnings` list any
    change."""

    source_id: str
    name: str
    source_type: int | None = None
    type: int | None = None
    items: list[Any] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    reason: str = ""


@functools.cache
def load_oneapi_types() -> dict[str, Any]:
    with (ASSETS_DIR / "oneapi_types.json").open(encoding="utf-8") as f:
        return json.load(f)


def _go_mysql_dsn(text: str) -> dict[str, Any] | None:
    """`user:pass@tcp(host:port)/db?params` (go-sql-driver form) -> URL parts; None if not that form."""
    m = _GO_DSN.fullmatch(text) or _GO_DSN_LOCAL.fullmatch(text)
    if not m:
        return None
    user, _, password = (m["cred"] or "").partition(":")
    parts: dict[str, Any] = {"username": user or None, "password": password or None, "database": m["db"] or None}
    query = dict(urllib.parse.parse_qsl(m["q"] or ""))
    if m["proto"] == "unix":
        parts["query"] = {"unix_socket": m["addr"]}
    else:
        addr = m["addr"] or "127.0.0.1"
        host, _, port = addr.rpartition(":") if ":" in addr else (addr, "", "")
        parts.update(host=host.strip("[]"), port=int(port) if port.isdigit() else 3306, query={})
    if query.get("charset"):  # the only go-sql-driver parameter pymysql understands
        parts["query"]["charset"] = query["charset"].split(",")[0]
    return parts


def parse_source_dsn(dsn: str) -> SourceDsn:
    """Accept what users have at hand: their SQL_DSN (Go or URL form), a postgres URL, one-api.db / aiproxy.db, or
    aiproxy's config.yaml."""
    text = (dsn or "").strip()
    if not text:
        raise ApiError("dsn is required")
    scheme, sep, rest = text.partition("://")
    scheme = scheme.lower() if sep else ""
    if not sep and text.lower().endswith(_YAML_SUFFIXES):
        path = Path(text).expanduser()
        if not path.is_file():
            raise ApiError(f"config file not found: {path}")
        path = path.resolve()
        return SourceDsn("yaml", sa.URL.create("file", database=str(path)), str(path), f"yaml:{path}")
    if scheme.startswith("sqlite") or (not sep and "@" not in text and "(" not in text):  # a one-api.db path
        path = Path(rest.removeprefix("/") if sep else text).expanduser()
        if not path.is_file():
            if sep or path.suffix in (".db", ".sqlite", ".sqlite3"):
                raise ApiError(f"SQLite file not found: {path}")
            raise ApiError("unrecognised dsn: use user:pass@tcp(host:port)/db, mysql://…, postgres://…, "
                           "a path to one-api.db / aiproxy.db or to aiproxy's config.yaml")
        path = path.resolve()
        return SourceDsn("sqlite", sa.URL.create("sqlite", database=str(path)), f"sqlite:///{path}", f"sqlite:{path}")
    if scheme in ("postgres", "postgresql", "postgresql+psycopg", "postgresql+psycopg2"):
        kind, drivername, default_port = "postgres", _postgres_driver(), 5432
    elif scheme in ("", "mysql", "mysql+pymysql", "mariadb", "mariadb+pymysql"):
        kind, drivername, default_port = "mysql", "mysql+pymysql", 3306
    else:
        raise ApiError(f"unsupported dsn scheme '{scheme}': use mysql, postgres or a SQLite file")
    parts = _go_mysql_dsn(rest if sep else text) if kind == "mysql" else None
    if parts is None:
        u = urllib.parse.urlsplit(f"x://{rest}")
        try:
            port = u.port or default_port
        except ValueError:
            raise ApiError("invalid port in dsn") from None
        parts = {"username": urllib.parse.unquote(u.username or "") or None,
                 "password": urllib.parse.unquote(u.password or "") or None,
                 "host": u.hostname or "127.0.0.1", "port": port, "database": u.path.lstrip("/") or None,
                 "query": dict(urllib.parse.parse_qsl(u.query))}
        if kind == "mysql":
            parts["query"] = {k: v for k, v in parts["query"].items() if k in ("charset", "unix_socket")}
    if not parts.get("database"):
        raise ApiError("the dsn names no database")
    if kind == "mysql":
        parts["query"].setdefault("charset", "utf8mb4")
    url = sa.URL.create(drivername, **parts)
    where = parts["query"].get("unix_socket") or f"{parts.get('host')}:{parts.get('port')}"
    user = f"{parts['username']}@" if parts.get("username") else ""
    return SourceDsn(kind, url, f"{kind}://{user}{where}/{parts['database']}", f"{where}/{parts['database']}",
                     parts.get("password") or "")


def _postgres_driver() -> str:
    for module, driver in (("psycopg", "postgresql+psycopg"), ("psycopg2", "postgresql+psycopg2")):
        if importlib.util.find_spec(module):
            return driver
    raise ApiError("a PostgreSQL source needs the optional driver psycopg: pip install 'psycopg[binary]'")


def detect_flavour(schema: dict[str, Iterable[str]]) -> str:
    """The source's flavour from its tables and their columns. aiproxy has groups, model_configs and channels with
    configs/sets; new-api adds tag/setting/auto_ban/… to channels and has no `config`; one-api is the reverse."""
    tables = {t.lower(): {c.lower() for c in cols} for t, cols in schema.items()}
    found = sum(t in tables and (c is None or c in tables[t]) for t, c in _AIPROXY_MARKERS)
    if found * 2 >= len(_AIPROXY_MARKERS):
        return "aiproxy"
    cols = tables.get("channels", set())
    markers = len(_NEWAPI_COLUMNS & cols)
    return "newapi" if markers >= 2 or (markers and "config" not in cols) else "oneapi"


def split_models(text: Any) -> list[str]:
    """Comma list -> trimmed names, no empties, no duplicates (first spelling wins)."""
    return _names(str(text or "").split(","))


def _names(values: list[Any]) -> list[str]:
    """Trimmed, non-empty, de-duplicated strings (first spelling wins)."""
    return list(dict.fromkeys(str(v).strip() for v in values if str(v).strip()))


def _json_object(text: Any) -> dict[str, Any] | None:
    """Parse a JSON object column; "" -> {}; anything unparsable or not an object -> None."""
    if isinstance(text, dict):
        return text
    if text is None or not str(text).strip():
        return {}
    return loads_object(text if isinstance(text, (bytes, str)) else str(text))


def _split_keys(key: str) -> list[str]:
    """One channel per key line; a JSON object is one key (a Vertex ADC), a JSON array is several (new-api)."""
    text = key.strip()
    if text[:1] in "{[":
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if isinstance(value, dict):
            return [json.dumps(value, separators=(",", ":"))]
        if isinstance(value, list):
            return [v if isinstance(v, str) else json.dumps(v, separators=(",", ":")) for v in value if v]
    return [line.strip() for line in text.splitlines() if line.strip()]


def _with_path(base: str, path: str) -> str:
    """Append our adaptor's version path to a host root, unless the URL already ends with it."""
    return base if not path or base.endswith(path) else base + path


def oneapi_base_url(stored: Any, entry: dict[str, Any], version_path: str) -> str | None:
    """Our base_url for a source row: "" = our provider's default, None = the row has no usable URL."""
    base, host = str(stored or "").strip().rstrip("/"), entry.get("host", "").rstrip("/")
    if base.startswith(_CF_GATEWAY):
        return base
    if entry.get("compat"):  # resellers/custom: keep the concrete upstream, never fall back to api.openai.com
        base = base or host
        if not base:
            return None
        return base if entry.get("as_is") else _with_path(base, version_path)
    if not base or base == host:
        base = entry.get("default_base", "")
        if not base:
            return ""
    return base if entry.get("as_is") else _with_path(base, version_path)


#: where one-api's channel config holds a key part under another name than ours
_CONFIG_KEY_PARTS = {"adc": "vertex_ai_adc"}


def _credentials(provider: Provider, entry: dict[str, Any], key: str, cfg: dict[str, Any],
                 warnings: list[str]) -> list[str]:
    """Keys in our provider's keyFormat (split_key), one per channel: the config's parts when it holds a whole
    key; else each key line, read by the source's own layout (the type's keyLayouts) when it fits none of ours,
    and completed with the parts the config holds by name (an api_version, a user_id, a region). A key that
    still fits no form gets a warning naming what is missing."""
    forms, layouts = provider.key_format, entry.get("keyLayouts", ())
    whole = _join_key({n: str(cfg[c]) for n in _part_names(forms) if cfg.get(c := _CONFIG_KEY_PARTS.get(n, n))},
                      forms, complete=True)
    from_config = [cfg[c] for n in _part_names(forms) if n in _CONFIG_KEY_PARTS and cfg.get(c := _CONFIG_KEY_PARTS[n])]
    lines = [whole] if whole else (_split_keys(key) or from_config)
    keys = []
    for line in lines:
        source = _fit_key(line, layouts)
        if source is not None and (not forms or _fit_key(line, forms) is None):
            line = entry["keyTemplate"].format(**source) if entry.get("keyTemplate") else _join_key(source, forms)
        keys.append(_complete_key(line, forms, cfg) or line)
    missing = list(dict.fromkeys(part for k in keys for part in missing_key_parts(k, forms)))
    if missing:
        title = ADAPTORS[provider.adaptor].title if provider.adaptor != "openai" else provider.name
        warnings.append(f"{title} {' and '.join(m.replace('_', ' ') for m in missing)} missing in the source; "
                        "complete the key before use")
    return keys


def _part_names(forms: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(name.rstrip("?") for form in forms for name in form.split("|")))


def _join_key(parts: dict[str, str], forms: Iterable[str], complete: bool = False) -> str:
    """Named parts as a key of the first form whose required parts they all hold (with its optional ones where
    given); else, unless `complete` is asked for ("" then), the parts as they come."""
    for form in forms:
        names = form.split("|")
        if all(name.rstrip("?") in parts for name in names if not name.endswith("?")):
            return "|".join(parts[name.rstrip("?")] for name in names if name.rstrip("?") in parts)
    return "" if complete else "|".join(parts.values())


def _complete_key(key: str, forms: Iterable[str], cfg: dict[str, Any]) -> str:
    """`key` with the parts of a form it lacks taken from the config by name, the key being that form's first
    or last parts; "" when no form can be completed so."""
    have = [part for part in key.split("|") if part]
    fits = bool(key) and _fit_key(key, forms) is not None  # then only its optional last parts may be added
    for form in forms:
        names = form.split("|")
        for lacking, last in ((names[len(have):], True), (names[:len(names) - len(have)], False)):
            if fits and not (last and all(name.endswith("?") for name in lacking)):
                continue
            given = [str(cfg.get(_CONFIG_KEY_PARTS.get(n.rstrip("?"), n.rstrip("?")), "")) for n in lacking]
            given = [g for g in given if g] if last else given  # trailing optional parts may stay away
            candidate = "|".join(have + given if last else given + have)
            if all(given) and candidate != key and _fit_key(candidate, [form]) is not None:
                return candidate
    return ""


def unsupported_warning(provider: Provider) -> str:
    """What the import report says of a row whose type the gateway cannot serve yet (issue 17)."""
    return (f"{provider.unsupported} The channel is imported as it is, but its calls answer 501 until "
            f"this type ({provider.id}, {provider.name}) is supported.")


def map_oneapi_channel(row: dict[str, Any], flavour: str, types: dict[str, Any],
                       catalog: dict[int, Provider]) -> RowImport:
    """One source `channels` row -> the channels to create (one per key line), or a skip with a reason."""
    source_type = int(row.get("type") or 0)
    entry = types[flavour].get(str(source_type), {})
    label = "OneAPI" if flavour == "oneapi" else "new-api"
    out = RowImport(str(row.get("id", "")), str(row.get("name") or "").strip()[:128], source_type)
    if not entry:
        out.reason = f"unknown {label} channel type {source_type}"
    elif entry.get("skip"):
        out.reason = f"{entry['name']}: {entry['skip']}"
    if out.reason:
        return out
    key = str(row.get("key") or "")
    to = entry.get("pipe_to", entry["to"]) if "|" in key else entry["to"]
    out.type, out.name = to, out.name or f"{entry['name']} #{out.source_id}"
    provider = catalog.get(to)
    if provider is None:
        out.reason = f"provider type {to} is not available here"
        return out
    warnings = out.warnings
    if provider.unsupported:
        warnings.append(unsupported_warning(provider))
    if entry.get("note"):
        warnings.append(entry["note"])
    groups = [g for g in re.split(r"[,\s]+", str(row.get("group") or "")) if g and g != "default"]
    if groups:
        warnings.append(f"group {','.join(groups)} not imported: there are no groups here, every API key may use "
                        "every channel")

    # credentials: config JSON first, then the legacy `other` column (same precedence as one-api itself)
    cfg = _json_object(row.get("config"))
    if cfg is None:
        warnings.append("config is not valid JSON; kept as text under config.raw")
        cfg = {"raw": str(row.get("config"))}
    cfg = {k: v for k, v in cfg.items() if v not in ("", None)}
    other = str(row.get("other") or "").strip()
    if other:
        other_key = entry.get("other", "other")
        region_map = _json_object(other) if other_key == "region" and other.startswith("{") else None
        if region_map:  # new-api Vertex: {"default": region, model: region}
            cfg.setdefault("region", region_map.get("default", ""))
            cfg["regions"] = region_map
            warnings.append("per-model Vertex regions kept in config.regions; the key uses the default region")
        else:
            cfg.setdefault(other_key, other)
    for column in ("openai_organization", "system_prompt"):
        if str(row.get(column) or "").strip():
            cfg[column] = row[column]
            warnings.append(f"{column} kept in config; check that this channel applies it")
    for column in ("param_override", "header_override", "status_code_mapping"):
        if str(row.get(column) or "").strip() not in ("", "{}"):
            warnings.append(f"{column} was not imported (not supported)")
    keys = _credentials(provider, entry, key, cfg, warnings)
    if not keys:
        out.reason = "the channel has no key"
        return out

    base = oneapi_base_url(row.get("base_url"), entry, load_oneapi_types()["version_path"].get(str(to), ""))
    if base is None:
        out.reason = f"{entry['name']} channel without a base URL"
        return out
    default = provider.default_base_url
    if "{account_id}" in (base or default):  # cloudflare: the account id lives in the URL
        base = (base or default).replace("{account_id}", str(cfg.get("user_id") or "{account_id}"))
        if "{account_id}" in base:
            warnings.append("Cloudflare account id missing in the source; set it in the base URL")
    elif not base and "{" in default:
        out.reason = f"{entry['name']} channel without its endpoint (base_url)"
        return out

    models = split_models(row.get("models"))
    if not models:
        warnings.append("no models in the source row; add models before this channel can serve requests")
    mapping = _json_object(row.get("model_mapping"))
    if mapping is None:
        warnings.append("model_mapping is not valid JSON; imported without a mapping")
        mapping = {}
    elif any(not isinstance(v, str) or not v for v in mapping.values()):
        warnings.append("model_mapping entries without a string target were dropped")
    mapping = {str(k): v for k, v in mapping.items() if isinstance(v, str) and v}

    status, reason = {1: (1, ""), 0: (1, ""), 2: (2, ""), 3: (2, f"auto-disabled in {label}")}.get(
        int(row.get("status") or 0), (2, f"status {row.get('status')} in {label}"))
    if status == 2 and reason:
        info = _json_object(row.get("other_info")) or {}
        if info.get("status_reason"):
            reason += f": {info['status_reason']}"
    weight = int(row.get("weight") or 0) or 1  # one-api ignores weight and stores 0; ours shares by weight
    out.items = [ImportedChannel(to, out.name, k, base, models, mapping, cfg, status, reason[:255],
                                 int(row.get("priority") or 0), weight, out.source_id) for k in keys]
    return out


def map_oneapi_token(row: dict[str, Any], flavour: str, quota_per_unit: float) -> RowImport:
    """One source `tokens` row -> Token fields (same key, so clients' sk-<key> keeps working), or a skip."""
    out = RowImport(str(row.get("id", "")), str(row.get("name") or "").strip())
    key = str(row.get("key") or "").strip().removeprefix("sk-")
    if row.get("deleted_at"):
        out.reason = "deleted in the source"
    elif not key:
        out.reason = "the token has no key"
    if out.reason:
        return out
    out.name = out.name or f"token #{out.source_id}"
    if flavour == "newapi":
        models = split_models(row.get("model_limits")) if row.get("model_limits_enabled") else []
    else:
        models = split_models(row.get("models"))
    status = 1 if int(row.get("status") or 1) == 1 else 2
    if int(row.get("status") or 1) in (3, 4):
        why = "expired" if int(row["status"]) == 3 else "quota exhausted"
        out.warnings.append(f"{why} in the source; imported disabled")
    used = max(int(row.get("used_quota") or 0), 0) / quota_per_unit
    quota = 0.0  # 0 = unlimited
    if not row.get("unlimited_quota"):
        quota = used + max(int(row.get("remain_quota") or 0), 0) / quota_per_unit
        if quota <= 0:  # ours reads 0 as unlimited: a token with nothing left must not become unlimited
            status = 2
            out.warnings.append("no quota left in the source; imported disabled")
    for column in ("subnet", "allow_ips"):
        if str(row.get(column) or "").strip():
            out.warnings.append(f"IP allow-list ({column}) was not imported")
    expired = int(row.get("expired_time") or -1)
    out.items = [dict(name=out.name, key=key, status=status, models=models, quota=round(quota, 6),
                      used_amount=round(used, 6), expired_at=expired * 1000 if expired > 0 else 0,
                      created_at=int(row.get("created_time") or 0) * 1000 or now_ms(), source_id=out.source_id)]
    return out


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _float(value: Any) -> float:
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 0.0


def _json_field(value: Any, kind: type, column: str, warnings: list[str]) -> Any:
    """An aiproxy JSON text column (or a config.yaml value) -> list/dict; "", NULL and JSON `null` are empty."""
    if isinstance(value, (str, bytes)):
        try:
            value = json.loads(value) if value.strip() else None
        except ValueError:
            warnings.append(f"{column} is not valid JSON; imported empty")
            return kind()
    if value is None:
        return kind()
    if not isinstance(value, kind):
        warnings.append(f"{column} is not a JSON {'list' if kind is list else 'object'}; imported empty")
        return kind()
    return value


def _time_ms(value: Any) -> int:
    """A GORM time column (a datetime, or text in SQLite) -> Unix ms; NULL and Go's zero time (year 1) -> 0."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            return 0
    if not isinstance(value, datetime) or value.year <= 1:
        return 0
    return int((value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp() * 1000)


def _aiproxy_channel_warnings(row: dict[str, Any], sets: list[str]) -> list[str]:
    """aiproxy channel settings this app has no feature for: each named, so nobody relies on them silently."""
    out = []
    if not proxy_url_ok(str(row.get("proxy_url") or "")):  # not repeated: the URL may hold proxy credentials
        out.append("proxy_url was not imported: it is not an http(s):// or socks5:// URL with host:port")
    if [s for s in sets if s != "default"]:
        out.append(f"sets {', '.join(sets)} were not imported: every API key here may use every channel")
    bans = [c for c in ("enabled_no_permission_ban", "max_error_rate", "warn_error_rate") if row.get(c)]
    if bans:
        out.append(f"{', '.join(bans)} not imported: no per-channel ban rules here (a failing call still moves "
                   "on to the next channel)")
    balance = [c for c in ("enabled_auto_balance_check", "balance_threshold") if row.get(c)]
    if balance:
        out.append(f"{', '.join(balance)} not imported: balances are not checked here")
    return out


def map_aiproxy_channel(row: dict[str, Any], catalog: dict[int, Provider], from_yaml: bool = False) -> RowImport:
    """One labring/aiproxy `channels` row (or config.yaml entry) -> one channel. aiproxy's type ids, key formats
    (`key|api-version`, …) and base URLs are ours, so type, key and base_url are kept as they are."""
    source_type = _int(row.get("type"))
    out = RowImport(str(row.get("id", "")), str(row.get("name") or "").strip()[:128], source_type, source_type)
    type_name = str(row.get("type_name") or "").strip()
    if from_yaml and not source_type and type_name:
        out.source_type = out.type = source_type = load_oneapi_types()["aiproxy_type_names"].get(type_name.lower(), 0)
    provider = catalog.get(source_type)
    if row.get("deleted_at"):
        out.reason = "deleted in aiproxy"
    elif provider is None and from_yaml and type_name and not source_type:
        out.reason = f"unknown type_name '{type_name}'"
    elif provider is None:
        out.reason = f"unknown aiproxy channel type {source_type}"
    if out.reason:
        return out
    out.name = out.name or f"{provider.name} #{out.source_id}"
    warnings = out.warnings
    if provider.unsupported:
        warnings.append(unsupported_warning(provider))
    models = _names(_json_field(row.get("models"), list, "models", warnings))
    if not models:
        warnings.append("no models in the source row; add models before this channel can serve requests")
    mapping = _json_field(row.get("model_mapping"), dict, "model_mapping", warnings)
    if any(not isinstance(v, str) or not v for v in mapping.values()):
        warnings.append("model_mapping entries without a string target were dropped")
    mapping = {str(k): v for k, v in mapping.items() if isinstance(v, str) and v}
    configs = _json_field(row.get("configs"), dict, "configs", warnings)
    warnings += _aiproxy_channel_warnings(row, _names(_json_field(row.get("sets"), list, "sets", warnings)))
    unknown = sorted(set(row) - _AIPROXY_YAML_CHANNEL_KEYS) if from_yaml else []
    if unknown:
        warnings.append(f"unknown keys ignored, as aiproxy ignores them: {', '.join(map(str, unknown))}")

    status, reason = _int(row.get("status")), ""
    if from_yaml and status not in (STATUS_ENABLED, STATUS_DISABLED):  # aiproxy serves only `status: 1` entries
        status, reason = STATUS_DISABLED, "no status: 1 in config.yaml, so aiproxy did not serve it"
        warnings.append(f"{reason}; imported disabled")
    elif status not in (0, STATUS_ENABLED, STATUS_DISABLED):
        status, reason = STATUS_DISABLED, f"status {status} in aiproxy"
    priority = _int(row.get("priority"))
    priority = AIPROXY_DEFAULT_PRIORITY if priority == 0 else min(priority, AIPROXY_MAX_PRIORITY)
    proxy = str(row.get("proxy_url") or "").strip()
    proxy = proxy if proxy_url_ok(proxy) else ""  # aiproxy's own proxy_url, as it is (a bad one is warned above)
    out.items = [ImportedChannel(source_type, out.name, str(row.get("key") or "").strip(),
                                 str(row.get("base_url") or "").strip(), models, mapping, configs,
                                 status or STATUS_ENABLED, reason, priority, 1, out.source_id,
                                 _time_ms(row.get("created_at")), proxy, bool(row.get("skip_tls_verify")))]
    return out


def map_aiproxy_token(row: dict[str, Any], groups: dict[str, dict[str, Any]]) -> RowImport:
    """One aiproxy `tokens` row -> Token fields: the same 48-char key (so `sk-<key>` keeps working), its model
    allow-list and its quota, which is an amount like ours (0 = no cap in both)."""
    out = RowImport(str(row.get("id", "")), str(row.get("name") or "").strip())
    key = str(row.get("key") or "").strip().removeprefix("sk-")
    if not key:
        out.reason = "the token has no key"
        return out
    out.name = out.name or f"token #{out.source_id}"
    warnings = out.warnings
    models = _names(_json_field(row.get("models"), list, "models", warnings))
    status = STATUS_DISABLED if _int(row.get("status")) == STATUS_DISABLED else STATUS_ENABLED
    group = str(row.get("group_id") or "")
    if _int(groups.get(group, {}).get("status")) == STATUS_DISABLED and status == STATUS_ENABLED:
        status = STATUS_DISABLED
        warnings.append(f"its group '{group}' is disabled in aiproxy; imported disabled")
    subnets = _names(_json_field(row.get("subnets"), list, "subnets", warnings))
    if subnets:
        warnings.append(f"subnets {', '.join(subnets)} were not imported: the key works from any address here")
    if _float(row.get("period_quota")) > 0:
        warnings.append(f"period_quota {_float(row['period_quota']):g} ({row.get('period_type') or 'monthly'}) "
                        "was not imported: only the total quota is enforced here")
    expired_at = _time_ms(row.get("expired_at"))  # aiproxy before v0.3 had token expiry; the column stays
    if 0 < expired_at < now_ms():
        warnings.append("expired_at has passed, so the key is refused here; clear its expiry to use it")
    out.items = [dict(name=out.name, key=key, status=status, models=models, quota=max(_float(row.get("quota")), 0),
                      used_amount=_float(row.get("used_amount")), request_count=_int(row.get("request_count")),
                      expired_at=expired_at, created_at=_time_ms(row.get("created_at")) or now_ms(),
                      source_id=out.source_id)]
    return out


#: aiproxy model-config prices this app has no place for (ours: input and output per 1K tokens)
_AIPROXY_OTHER_PRICES = ("per_request_price", "image_input_price", "audio_input_price", "video_input_price",
                         "image_output_price", "audio_output_price", "thinking_mode_output_price", "cached_price",
                         "cache_creation_price", "web_search_price")


def _aiproxy_price(price: dict[str, Any], name: str) -> float:
    """`<name>_price` per `<name>_price_unit` tokens -> per 1K tokens. config.yaml spells them `<name>price` (Go's
    YAML decoder lower-cases the field names), and aiproxy's example file plain `<name>`."""
    value = _float(price.get(f"{name}_price", price.get(f"{name}price", price.get(name))))
    unit = _int(price.get(f"{name}_price_unit", price.get(f"{name}priceunit"))) or AIPROXY_PRICE_UNIT
    return round(value * 1000 / unit, 12)


def map_aiproxy_model_config(row: dict[str, Any]) -> RowImport:
    """One aiproxy `model_configs` row (or config.yaml `modelconfigs:` entry) -> our ModelConfig: its kind and
    per-1K input/output prices; limits, retries and timeouts have no per-model place here and are reported."""
    model = str(row.get("model") or "").strip()
    out = RowImport(model, model)
    if not model:
        out.reason = "the model config has no model name"
        return out
    warnings = out.warnings
    price = row["price"] if isinstance(row.get("price"), dict) else row  # config.yaml nests it, the table doesn't
    mode = _int(row.get("type")) or load_oneapi_types()["aiproxy_model_type_names"].get(
        str(row.get("type_name") or "").strip().lower(), 0)
    kind = load_oneapi_types()["aiproxy_mode_kinds"].get(str(mode), "")
    inputs, outputs = _aiproxy_price(price, "input"), _aiproxy_price(price, "output")
    if price is not row and {"input", "output"} & price.keys():
        warnings.append("price.input/price.output (the spelling of aiproxy's example config) imported as input and "
                        "output prices, though aiproxy itself reads only inputprice/outputprice")
    dropped = [p for p in _AIPROXY_OTHER_PRICES if _float(price.get(p, price.get(p.replace("_", ""))))]
    if _json_field(price.get("conditional_prices"), list, "conditional_prices", warnings):
        dropped.append("conditional_prices")
    if dropped:
        warnings.append(f"{', '.join(dropped)} not imported: only input and output prices per token are kept here")
    limits = [f"{c}={_int(row[c])}" for c in ("rpm", "tpm") if _int(row.get(c))]
    if limits:
        warnings.append(f"{', '.join(limits)} not imported: no per-model rate limits here")
    if _int(row.get("retry_times")):
        warnings.append(f"retry_times={_int(row['retry_times'])} not imported: the app-wide retry count applies")
    timeouts = row["timeout_config"] if isinstance(row.get("timeout_config"), dict) else row
    timeouts = [f"{c}={_int(timeouts[c])}s" for c in ("request_timeout", "stream_request_timeout")
                if _int(timeouts.get(c))]
    if timeouts:
        warnings.append(f"timeout_config ({', '.join(timeouts)}) not imported: no per-model timeouts here")
    if _json_field(row.get("plugin"), dict, "plugin", warnings):
        warnings.append("plugin settings (cache, web search, …) not imported: no plugins here")
    if not (kind or inputs or outputs):
        out.reason = "nothing to import: no type we know and no input or output price"
        return out
    out.items = [dict(model=model, enabled=True, kind=kind, input_price=inputs, output_price=outputs,
                      updated_at=now_ms())]
    return out


def _db_error_message(exc: sa.exc.SQLAlchemyError, src: SourceDsn) -> str:
    """A driver error -> a short message naming the source, never the password."""
    orig = getattr(exc, "orig", None) or exc
    args = getattr(orig, "args", ())
    code = args[0] if len(args) > 1 and isinstance(args[0], int) else None
    detail = (str(args[1] if code is not None else (args[0] if args else orig)).strip().splitlines()
              or [type(orig).__name__])[0]
    text = detail.lower()
    if code == 1045 or "password authentication failed" in text or "access denied" in text:
        msg = f"cannot log in to {src.safe} (check the user and password): {detail}"
    elif code == 1049 or ("database" in text and "does not exist" in text):
        msg = f"database not found: {src.safe}"
    elif code in (2002, 2003, 2005, 2006, 2013) or any(s in text for s in _UNREACHABLE):
        msg = f"cannot reach {src.safe}: {detail}"
    else:
        msg = f"cannot read {src.safe}: {detail}"
    return scrub_secret(msg, src.password)


def scrub_secret(text: str, secret: str) -> str:
    """Remove a secret (raw or URL-encoded) from a message."""
    for form in {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)} if secret else ():
        text = text.replace(form, "***")
    return text


def read_aiproxy_yaml(path: Path) -> SourceData:
    """aiproxy's config.yaml (CONFIG_FILE_PATH): its `channels:` and `modelconfigs:` lists. Channels get the ids
    aiproxy gives them in memory, -1, -2, … in file order, so a second import recognises them."""
    import yaml  # only the importer reads YAML: not loaded at start

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ApiError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:  # the message, not the snippet: it may quote a key
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ApiError(f"{path} is not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    doc = doc if isinstance(doc, dict) else {}
    sections = {name: doc.get(name) or [] for name in ("channels", "modelconfigs")}
    for name, items in sections.items():
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise ApiError(f"{path}: `{name}:` must be a list of mappings, as in aiproxy's config.example.yaml")
    if not any(sections.values()):
        raise ApiError(f"no channels: or modelconfigs: in {path}: is this aiproxy's config.yaml?")
    channels = [dict(item, id=-1 - i) for i, item in enumerate(sections["channels"])]
    return SourceData("aiproxy", channels, [], 1.0, model_configs=sections["modelconfigs"])


def read_source(src: SourceDsn, with_tokens: bool = False) -> SourceData:
    """Read channels (and tokens, QuotaPerUnit; for aiproxy model configs and groups) from the source; every
    failure becomes a clean ApiError."""
    if src.kind == "yaml":
        return read_aiproxy_yaml(Path(src.url.database))
    if src.kind == "sqlite":  # read-only, so a mistyped path can never create or change a file
        uri = Path(src.url.database).as_uri() + "?mode=ro"
        engine = sa.create_engine("sqlite://", creator=lambda: sqlite3.connect(uri, uri=True),
                                  poolclass=sa.pool.NullPool)
    else:
        timeouts = {"connect_timeout": IMPORT_CONNECT_TIMEOUT}
        if src.kind == "mysql":  # pymysql waits for the server greeting under read_timeout, not connect_timeout
            timeouts |= {"read_timeout": IMPORT_CONNECT_TIMEOUT, "write_timeout": IMPORT_CONNECT_TIMEOUT}
        engine = sa.create_engine(src.url, connect_args=timeouts, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            tables = set(inspector.get_table_names())
            if "channels" not in tables:
                raise ApiError(f"no channels table in {src.safe}: is this a one-api, new-api or aiproxy database?")
            flavour = detect_flavour({t: [c["name"] for c in inspector.get_columns(t)]
                                      for t in ("channels", "tokens", "groups", "model_configs") if t in tables})
            quote = conn.dialect.identifier_preparer.quote  # `key`, `group` and `groups` are reserved words

            def rows(table: str, order: str = "id") -> list[dict[str, Any]]:
                if table not in tables:
                    return []
                return [dict(r) for r in conn.execute(sa.text(f"SELECT * FROM {quote(table)} ORDER BY {order}"))
                        .mappings()]

            tokens = rows("tokens") if with_tokens else []
            if flavour == "aiproxy":
                groups = {str(g["id"]): g for g in rows("groups")} if with_tokens else {}
                return SourceData(flavour, rows("channels"), tokens, 1.0, rows("model_configs", "model"), groups)
            options = {}
            if with_tokens and "options" in tables:
                options = {str(r["key"]): r["value"] for r in conn.execute(sa.text("SELECT * FROM options")).mappings()}
            try:
                qpu = float(options.get("QuotaPerUnit") or IMPORT_QUOTA_PER_UNIT)
            except ValueError:
                qpu = IMPORT_QUOTA_PER_UNIT
            return SourceData(flavour, rows("channels"), tokens, qpu if qpu > 0 else IMPORT_QUOTA_PER_UNIT)
    except sa.exc.SQLAlchemyError as exc:
        message = _db_error_message(exc, src)
        logger.warning("import: %s", message)
        raise ApiError(message) from None
    finally:
        engine.dispose()


def _report_row(r: RowImport, status: str, ids: list[Any], ids_field: str) -> dict[str, Any]:
    row = {"source_id": r.source_id, "name": r.name, "status": status, "warnings": r.warnings}
    if r.source_type is not None:  # a channel row (token and model-config rows have no type)
        row |= {"source_type": r.source_type, "type": r.type}
    if ids_field:
        row[ids_field] = ids
    return row | ({"reason": r.reason} if r.reason else {})


#: said once per aiproxy import, above the rows (issue 12): what changes in meaning, and what FastGPT needs
AIPROXY_NOTES = (
    "Priorities: aiproxy shares a model's calls among its channels at random, weighted by priority (0 counts as "
    "10). Here priority levels are strict: the highest level takes every call and a lower one serves only when "
    "the higher ones fail. Priorities were kept (0 became 10), so the preferred channel is still tried first; "
    "give channels the same priority to share calls by weight.",
    "FastGPT: set AIPROXY_API_ENDPOINT to this app's address and AIPROXY_API_TOKEN to this app's admin key (or "
    "start this app with ADMIN_KEY set to aiproxy's ADMIN_KEY, so FastGPT needs no change but the endpoint).",
)


def plan_import(src: SourceDsn, data: SourceData, catalog: dict[int, Provider]
                ) -> tuple[list[RowImport], list[RowImport], list[RowImport]]:
    """Map every source row: (channel rows, token rows, model-config rows). Pure."""
    if data.flavour == "aiproxy":
        return ([map_aiproxy_channel(r, catalog, src.kind == "yaml") for r in data.channels],
                [map_aiproxy_token(r, data.groups) for r in data.tokens],
                [map_aiproxy_model_config(r) for r in data.model_configs])
    types = load_oneapi_types()
    return ([map_oneapi_channel(r, data.flavour, types, catalog) for r in data.channels],
            [map_oneapi_token(r, data.flavour, data.quota_per_unit) for r in data.tokens], [])


def import_source(state: AppState, dsn: str, dry_run: bool = False, import_tokens: bool = False) -> dict[str, Any]:
    """Import a one-api / new-api / aiproxy database or aiproxy's config.yaml. Rows imported before from the same
    source are reported as `exists` (model configs and tokens: when one with that model name or key is here), so
    a second run changes nothing; `dry_run` answers the same report and writes nothing."""
    src = parse_source_dsn(dsn)
    data = read_source(src, with_tokens=import_tokens)
    source = src.tag(data.flavour)
    channel_rows, token_rows, config_rows = plan_import(src, data, state.catalog)
    report: list[dict[str, Any]] = []
    token_report: list[dict[str, Any]] = []
    config_report: list[dict[str, Any]] = []
    with state.engine.begin() as conn:  # one transaction: a failing write leaves no half import
        def insert(table: Any, values: dict[str, Any]) -> list[Any]:
            return [] if dry_run else [conn.execute(sa.insert(table).values(**values)).inserted_primary_key[0]]

        seen: dict[str, list[int]] = collections.defaultdict(list)
        for sid, cid in conn.execute(sa.select(Channel.source_id, Channel.id).where(Channel.source == source)):
            seen[sid].append(cid)
        for r in channel_rows:
            if r.reason:
                report.append(_report_row(r, "skipped", [], "channel_ids"))
            elif r.source_id in seen:
                report.append(_report_row(r, "exists", sorted(seen[r.source_id]), "channel_ids"))
            else:
                ids = [i for c in r.items for i in insert(Channel, dict(dataclasses.asdict(c), source=source,
                                                                          created_at=c.created_at or now_ms()))]
                report.append(_report_row(r, "imported", ids, "channel_ids"))
        keys = dict(conn.execute(sa.select(Token.key, Token.id)).all()) if token_rows else {}
        for r in token_rows:
            if r.reason:
                token_report.append(_report_row(r, "skipped", [], "token_ids"))
            elif r.items[0]["key"] in keys:
                token_report.append(_report_row(r, "exists", [keys[r.items[0]["key"]]], "token_ids"))
            else:
                ids = insert(Token, dict(r.items[0], source=source))
                keys[r.items[0]["key"]] = ids[0] if ids else 0
                token_report.append(_report_row(r, "imported", ids, "token_ids"))
        models = set(conn.execute(sa.select(ModelConfig.model)).scalars()) if config_rows else set()
        for r in config_rows:  # a model's settings made here are never overwritten
            status = "skipped" if r.reason else "exists" if r.source_id in models else "imported"
            if status == "imported":
                insert(ModelConfig, r.items[0])
                models.add(r.source_id)
            config_report.append(_report_row(r, status, [], ""))
    if not dry_run and any(r["status"] == "imported" for r in report + token_report + config_report):
        reload_routes(state)

    def counts(rows: list[dict[str, Any]]) -> dict[str, int]:
        return {s: sum(r["status"] == s for r in rows) for s in ("imported", "exists", "skipped")}

    result = {"source": src.safe, "flavour": data.flavour, "dry_run": dry_run, "rows": report, **counts(report),
              "notes": list(AIPROXY_NOTES) if data.flavour == "aiproxy" else []}
    if import_tokens:
        result["tokens"] = {"rows": token_report, **counts(token_report), "quota_per_unit": data.quota_per_unit}
    if data.flavour == "aiproxy":
        result["model_configs"] = {"rows": config_report, **counts(config_report)}
    return result


class ImportRequest(BaseModel):
    dsn: str  # a database DSN or file path, or (aiproxy) the path of its config.yaml
    dry_run: bool = False
    import_tokens: bool = False


@admin_router.post("/channels/import/oneapi")
def api_channels_import(body: ImportRequest, state: AppState = Depends(require_admin)) -> JSONResponse:
    # a plain `def` route runs in the threadpool: the source connection (up to 5 s) never blocks the event loop
    return api_ok(import_source(state, body.dsn, body.dry_run, body.import_tokens))


admin_router.add_api_route("/channels/import/aiproxy", api_channels_import, methods=["POST"])  # same detection


# ==== 17. UI kit: strings, session, layout, login, time ranges, table columns ===============================
# What every page is built from. Pages call the admin API's functions (sections 15 and 16) directly, never this
# app's own HTTP. nicegui is imported only by mount_ui(), so `--no-ui` runs without it (bench/ measures the
# API-only memory). Strings: assets/i18n.json.

ui: Any = None  # nicegui.ui, bound by mount_ui()
ng: Any = None  # nicegui.app (per-browser storage), bound by mount_ui()

PageBuilder = Callable[["AppState", Request], Any]  # builds a page's content inside the frame
LANGUAGES = {"en": "English", "zh": "简体中文"}
TIME_PRESETS = {"15m": 900, "1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}  # seconds
PRESET_TIMESPAN = {"yesterday": "hour", "15m": "minute", "1h": "minute", "24h": "hour", "7d": "hour", "30d": "day"}
_TOGGLE_PROPS = "dense no-caps unelevated rounded color=grey-3 text-color=grey-9 toggle-color=primary"
SLOW_CALL_SECONDS = 10  # the log list marks slower calls in red
CHANNEL_CHIPS = 4  # models shown per channel row; the rest is a "+N" chip
LOG_PAGE_SIZES = (20, 50, 100)
MAX_CHART_POINTS = 2000  # above this, empty buckets are not filled in (a 30-day range by minute)
_CHART_FIELDS = ("request_count", "exception_count", "input_tokens", "output_tokens", "total_time_milliseconds",
                 "total_ttfb_milliseconds", "used_amount")
_STRINGS: dict[str, dict[str, str]] = {}  # assets/i18n.json, read once by load_strings()

# ---- strings, time and formatting: plain functions, no widgets (t() reads the session's language) ----


def load_strings() -> dict[str, dict[str, str]]:
    if not _STRINGS:
        _STRINGS.update(json.loads((ASSETS_DIR / "i18n.json").read_text(encoding="utf-8")))
    return _STRINGS


def pick_language(accept_language: str) -> str:
    """`zh-CN,zh;q=0.9,en;q=0.8` → `zh`: the first language the browser lists that we have."""
    for part in accept_language.split(","):
        code = part.split(";")[0].strip().lower()[:2]
        if code in LANGUAGES:
            return code
    return "en"


def translate(lang: str, key: str, **values: Any) -> str:
    strings = load_strings()
    text = strings.get(lang, {}).get(key) or strings["en"].get(key) or key
    return text.format(**values) if values else text


def preset_range(preset: str, now: int, tz: ZoneInfo) -> tuple[int, int | None]:
    """(start ms, end ms or None for "now") of a time preset; "yesterday" starts at yesterday's 00:00 in `tz`."""
    if preset == "yesterday":
        day = datetime.fromtimestamp(now / 1000 - 86400, tz).replace(hour=0, minute=0, second=0, microsecond=0)
        return int(day.timestamp() * 1000), None
    return now - TIME_PRESETS[preset] * 1000, None


def format_ms(ms: int, tz: ZoneInfo, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    return datetime.fromtimestamp(ms / 1000, tz).strftime(fmt) if ms else ""


def local_input_to_ms(text: str | None, tz: ZoneInfo) -> int | None:
    """The value of an `<input type=datetime-local>` (or a date), read in the display timezone."""
    if not text:
        return None
    try:
        return int(datetime.fromisoformat(text).replace(tzinfo=tz).timestamp() * 1000)
    except ValueError:
        return None


def fmt_seconds(ms: float) -> str:
    return f"{ms / 1000:.2f} s" if ms >= 100 else f"{ms / 1000:.3f} s"  # a fast local call is not "0.00 s"


def fmt_count(n: float) -> str:
    """1234567 → 1.23M: cards stay short; the exact number is in the logs."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:g}"


def summarize_series(series: list[dict[str, Any]]) -> dict[str, float]:
    """Totals of dashboard_series() for the summary cards."""
    total = collections.Counter()
    for bucket in series:
        for item in bucket["summary"]:
            total.update({name: item[name] for name in _CHART_FIELDS})
    calls = total["request_count"]
    return {"calls": calls, "errors": total["exception_count"],
            "error_rate": total["exception_count"] / calls if calls else 0.0,
            "input_tokens": total["input_tokens"], "output_tokens": total["output_tokens"],
            "avg_latency_ms": total["total_time_milliseconds"] / calls if calls else 0.0,
            "avg_ttfb_ms": total["total_ttfb_milliseconds"] / calls if calls else 0.0,
            "spend": total["used_amount"]}


def fmt_cost(amount: float | None) -> str:
    """A call's or a sum's cost in USD: `$0.00042`, `$12.35`; "–" where a price it needs is unknown."""
    if amount is None:
        return "–"
    if not amount or abs(amount) >= 1:
        return f"${amount:.2f}" if amount else "$0"
    decimals = min(8, 2 - math.floor(math.log10(abs(amount))))  # three significant digits, never 1e-05
    return f"${amount:.{decimals}f}"


def spend_ranking(series: list[dict[str, Any]], key: str, top: int = 8) -> list[tuple[Any, float]]:
    """The highest spenders in dashboard_series() by `key` (channel_id or model), largest first."""
    total: collections.Counter = collections.Counter()
    for bucket in series:
        for item in bucket["summary"]:
            total[item[key]] += item["used_amount"] or 0
    return [(k, v) for k, v in total.most_common(top) if v > 0]


def chart_buckets(series: list[dict[str, Any]], start_ms: int, end_ms: int, timespan: str,
                  tz: ZoneInfo) -> list[tuple[int, dict[str, float]]]:
    """One (bucket start, sums) per minute/hour/day of the range, empty buckets included, so lines drop to zero
    instead of jumping over quiet hours."""
    sums: dict[int, dict[str, float]] = {}
    for bucket in series:
        acc = sums.setdefault(bucket["timestamp"], collections.Counter())
        for item in bucket["summary"]:
            acc.update({name: item[name] for name in _CHART_FIELDS})
    step = {"minute": 60, "hour": 3600, "day": 86400}[timespan]
    if (end_ms - start_ms) // 1000 // step <= MAX_CHART_POINTS:
        ts = bucket_start(start_ms // 1000, timespan, tz)
        while ts <= end_ms // 1000:
            sums.setdefault(ts, collections.Counter())
            ts = bucket_start(ts + step + (3 * 3600 if timespan == "day" else 0), timespan, tz)  # +3 h: DST days
    return sorted(sums.items())


def _line_chart(series: list[str], dark: bool) -> dict[str, Any]:
    text = "#b4b9c2" if dark else "#4b5260"  # canvas text: AA on the card in its theme (no grey fits both)
    axis = {"axisLabel": {"color": text}, "axisLine": {"lineStyle": {"color": "#8884"}}}
    return {
        "backgroundColor": "transparent", "tooltip": {"trigger": "axis"},
        "legend": {"data": series, "top": 0, "textStyle": {"color": text}},
        "grid": {"left": 48, "right": 16, "top": 36, "bottom": 28},
        "xAxis": {"type": "category", "data": [], **axis},
        "yAxis": {"type": "value", "splitLine": {"lineStyle": {"color": "#8882"}}, **axis},
        "series": [{"name": name, "type": "line", "smooth": True, "showSymbol": False, "data": [],
                    "areaStyle": {"opacity": 0.08}} for name in series],
    }


def chart_values(buckets: list[tuple[int, dict[str, float]]]) -> dict[str, tuple[list[float], list[float]]]:
    """The two lines of each dashboard chart: calls and errors, input and output tokens, latency and TTFB (s)."""

    def avg(total: str, s: dict[str, float]) -> float:
        return round(s[total] / s["request_count"] / 1000, 3) if s["request_count"] else 0

    return {
        "calls": ([s["request_count"] for _, s in buckets], [s["exception_count"] for _, s in buckets]),
        "tokens": ([s["input_tokens"] for _, s in buckets], [s["output_tokens"] for _, s in buckets]),
        "latency": ([avg("total_time_milliseconds", s) for _, s in buckets],
                    [avg("total_ttfb_milliseconds", s) for _, s in buckets]),
        "spend": ([round(s["used_amount"], 6) for _, s in buckets],),
    }


def channel_row(ch: dict[str, Any], catalog: dict[int, Provider], lang: str) -> dict[str, Any]:
    """A channel for the channels table. Cells hold no lists (Quasar tables choke on them): models are joined."""
    tests = sorted(ch["channel_tests"], key=lambda x: -x["test_at"])
    provider = catalog.get(ch["type"])
    shown = ch["models"][:CHANNEL_CHIPS]
    mapped = [f"{src} → {dst}" for src, dst in list(ch["model_mapping"].items())[:CHANNEL_CHIPS - len(shown)]]
    return {
        "id": ch["id"], "name": ch["name"], "key": mask_key(ch["key"]), "reason": status_reason_text(ch["status_reason"]),
        "provider": provider_name(provider, lang) if provider else f"#{ch['type']}",
        "models": "\n".join(shown), "mapped": "\n".join(mapped),  # a mapped name shows where it goes
        "more": len(ch["models"]) + len(ch["model_mapping"]) - len(shown) - len(mapped),
        "priority": ch["priority"], "enabled": ch["status"] == 1, "requests": ch["request_count"],
        "test": "" if not tests else f"{'✓' if all(x['success'] for x in tests) else '✗'} {tests[0]['took']:.2f} s",
        "test_ok": bool(tests) and all(x["success"] for x in tests),
        "test_tip": " · ".join(f"{'✓' if x['success'] else '✗'} {x['model']} {x['took']:.2f} s" for x in tests[:6]),
        "retired": t("ch.serves_retired", models=", ".join(retired_models(ch))) if retired_models(ch) else "",
        **channel_health_cells(ch),
    }


def status_reason_text(reason: str) -> str:
    """An auto-disable reason in the session's language: the relay stores "401 from upstream: <the provider's
    words>" (section 5); the provider's own words stay as they are."""
    m = re.match(r"(\d{3}) from upstream: (.*)", reason or "", re.S)
    return t("ch.reason_upstream", code=m.group(1), message=m.group(2)) if m else reason or ""


def channel_health_cells(ch: dict[str, Any]) -> dict[str, Any]:
    """An auto-disabled channel's badge and time, and the cool-downs under way, as table cells (strings)."""
    auto = ch["status"] == STATUS_AUTO_DISABLED
    return {
        "auto_disabled": auto,
        "since": t("ch.auto_disabled_since", time=format_ms(ch.get("status_time") or 0, display_tz(),
                                                             "%Y-%m-%d %H:%M")) if auto and ch.get("status_time") else "",
        "cooling": " · ".join(t("ch.cooling", model=c["model"], s=f"{c['seconds_left']:.0f}", code=c["code"])
                              for c in ch.get("cooldowns") or []),
    }


def whole_number(value: Any) -> int | None:
    """7, 7.0 and "7" → 7; 2.5, "", None and words → None."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number.is_integer() else None


def provider_name(p: Provider, lang: str) -> str:
    return p.display.get(lang) or p.display.get("en") or p.name


def provider_help(p: Provider, lang: str, topic: str) -> str:
    """The provider's help for users on `topic` (key, base_url, models) in `lang`, else in English, else ""."""
    return p.help.get(lang, {}).get(topic) or p.help.get("en", {}).get(topic, "")


_PICKER_SEP = "\u2063"  # invisible: splits a provider option into what is shown and what is only searched


def provider_options(catalog: dict[int, Provider], lang: str) -> dict[int, str]:
    """The provider picker's options: "name⁣detail⁣search terms". Quasar's input filter matches the whole string,
    so typing 阿里, 通义, qwen or alibaba finds 阿里云百炼; only the name (and, in the list, the detail) is shown."""
    other = "zh" if lang == "en" else "en"
    order = sorted(catalog.values(), key=lambda p: (p.name.startswith("fake"), bool(p.unsupported),
                                                    provider_name(p, "en").casefold()))
    out = {}
    for p in order:
        name, alt = provider_name(p, lang), provider_name(p, other)
        if p.unsupported:  # listed, so an imported channel of it can be shown, but said plainly (issue 17)
            name = f"{name} ({translate(lang, 'ch.not_supported')})"
        models = [m for m, _ in p.models]
        detail = " · ".join(filter(None, (alt if alt != name else "", ", ".join(models[:3]), f"#{p.id}")))
        out[p.id] = _PICKER_SEP.join((name, detail, " ".join([p.name, *models])))
    return out


_CONNECT_REASONS = (  # words of an OS or client error → the reason we name, first match wins
    (("refused",), "refused"), (("name or service", "nodename", "getaddrinfo", "name resolution", "no address",
                                 "not known"), "no_host"),
    (("timed out", "timeout"), "timeout"), (("certificate", "ssl", "tls"), "tls"), (("reset",), "reset"),
    (("unreachable",), "unreachable"),
)


def error_message(body: str) -> str:
    """The provider's own words from an error body (OpenAI, Anthropic, Gemini or aiproxy shape), else the body."""
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip()
    error = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(error, dict):
        return str(error.get("message") or data.get("message") or body).strip()
    return str(error).strip()


def _host_port(base_url: str) -> str:
    parts = urllib.parse.urlsplit(base_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname}:{port}" if parts.hostname else base_url


def _lacks_version_path(base_url: str, default_base_url: str) -> bool:
    """A base URL without /v1 (or /v4, /v1beta …) where the provider's own address has one: a common 404."""
    def versioned(url: str) -> bool:
        return bool(re.search(r"/v\d[\w.]*(/|$)", urllib.parse.urlsplit(url).path))
    return bool(base_url) and not versioned(base_url) and (not default_base_url or versioned(default_base_url))


def describe_test_failure(result: dict[str, Any], base_url: str, default_base_url: str) -> tuple[str, str]:
    """A failed model test in words for the user: (what happened, what to check). The raw body stays a detail."""
    raw = result.get("response") or ""
    code, message = result["code"], error_message(raw)
    lower = message.lower()
    said = f": {message[:200]}" if message else ""
    if code == 0 or (code == 502 and "connect" in raw.lower()):  # our relay's word for "no answer at all"
        reason = next((name for words, name in _CONNECT_REASONS if any(w in lower for w in words)), "")
        where = _host_port(base_url)
        return (t("test.err_connect", where=where, reason=t(f"test.reason_{reason}")) if reason
                else t("test.err_connect_plain", where=where)), t("test.check_base_url")
    if code == 504:
        return t("test.err_timeout"), t("test.check_base_url")
    if code in (401, 403):
        return t("test.err_key", code=code) + said, t("test.check_key")
    if code == 404:
        return t("test.err_404") + said, t("test.hint_v1") if _lacks_version_path(base_url, default_base_url) else (
            t("test.check_model"))
    if code == 429:
        return t("test.err_429") + said, ""
    if code >= 500:
        return t("test.err_5xx", code=code) + said, ""
    return t("test.err_other", code=code) + said, ""


def diff_models(current: list[str], upstream: list[str]) -> tuple[list[str], list[str]]:
    """(new at the provider, no longer listed by it) for "fetch models from upstream"."""
    have, listed = set(current), set(upstream)
    return sorted(listed - have), [m for m in current if m not in listed]


def parse_mapping_json(text: str) -> dict[str, str]:
    """A pasted model mapping; raises ApiError with a message for the user."""
    try:
        data = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise ApiError(t("v.json", line=exc.lineno, column=exc.colno)) from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ApiError(t("v.json_object"))
    return clean_mapping(data)


def _key_fingerprint(admin_key: str) -> str:
    """What a session remembers of the admin key: enough to notice that the key changed, useless to an attacker."""
    return hashlib.sha256(b"aiproxy-local ui session\0" + admin_key.encode()).hexdigest()[:32]


def _tpl(template: str, **values: str) -> str:
    """Fill [[name]] placeholders of a Vue slot template (Vue owns {{ }} and $)."""
    for name, value in values.items():
        template = template.replace(f"[[{name}]]", value.replace('"', "&quot;"))
    return template


# ---- session: language, theme, timezone, login ----


def session_language() -> str:
    try:
        return ng.storage.user.get("lang", "en")
    except (RuntimeError, AttributeError):  # outside a page (no session): English
        return "en"


def t(key: str, **values: Any) -> str:
    """The UI string `key` in the session's language."""
    return translate(session_language(), key, **values)


def display_tz() -> ZoneInfo:
    """The settings' choice, else the browser's timezone (learnt after login), else UTC."""
    user = ng.storage.user
    try:
        return ZoneInfo(user.get("tz") or user.get("browser_tz") or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


async def _learn_browser_timezone() -> None:
    """Python learns the browser's timezone only from a connected page."""
    try:
        tz = await ui.run_javascript("Intl.DateTimeFormat().resolvedOptions().timeZone", timeout=3)
        ZoneInfo(tz)
    except (TimeoutError, ZoneInfoNotFoundError, ValueError, TypeError):
        return
    ng.storage.user["browser_tz"] = tz


async def _learn_system_theme() -> None:
    """The first visit follows the system's light or dark theme; the header's switch overrides it for good."""
    try:
        dark = await ui.run_javascript("aiproxyPrefersDark()", timeout=3)
    except TimeoutError:
        return
    ng.storage.user.setdefault("dark", bool(dark))


def _start_session(request: Request) -> None:
    user = ng.storage.user
    if "lang" not in user:
        user["lang"] = pick_language(request.headers.get("accept-language", ""))


def is_signed_in(state: AppState) -> bool:
    return ng.storage.user.get("auth") == _key_fingerprint(state.admin_key)


def _guarded(builder: PageBuilder, title_key: str) -> Callable[[Request], Response | None]:
    """A page in the shared frame that shows nothing without a session for the current admin key (a changed
    key ends all sessions). NiceGUI registers pages globally: this is where they get the state."""

    def page(request: Request) -> Response | None:
        state = get_state()
        _start_session(request)
        if not is_signed_in(state):
            return Response(status_code=303, headers={"location": f"/login?redirect_to={request.url.path}"})
        with frame(t(title_key)):
            builder(state, request)
        return None

    page.__name__ = page.__qualname__ = f"page_{title_key.rpartition('.')[2]}"
    return page


def _delete_on_close(dialog: Any, busy: Callable[[], bool] = lambda: False) -> Any:
    """Closed dialogs go away (unless still busy): the page stays light, and only the open one can be found."""
    dialog.on_value_change(lambda e: None if e.value or busy() else dialog.delete())
    return dialog


def table_column(name: str, label: str, field: str = "", sortable: bool = False,
                 align: str = "left") -> dict[str, Any]:
    """One q-table column; its row field is its name unless told (Quasar's own default alignment is right)."""
    return {"name": name, "label": label, "field": field or name, "align": align,
            "style": f"--lbl: {json.dumps(label, ensure_ascii=False)}" if label else "--lbl: none",  # phone rows
            **({"sortable": True} if sortable else {})}


def notify_error(exc: ApiError) -> None:
    ui.notify(exc.message, type="negative", multi_line=True)


def load_in_background(element: Any, load: Callable[[], Awaitable[None]]) -> None:
    """Run `load()` as a task in `element`'s context (it may show a notification there): a page builds at once
    and shows its progress state, while the query behind it runs in a thread."""
    from nicegui import background_tasks
    background_tasks.create(load(), name="ui-load", context=element)


class shown_errors(contextlib.AbstractContextManager):
    """`with shown_errors() as refused:` shows an ApiError raised in the block to the user and swallows it, and
    `refused` is true afterwards if one was: the UI's one way to report an action the admin API refused."""

    def __init__(self) -> None:
        self.error: ApiError | None = None

    def __bool__(self) -> bool:
        return self.error is not None

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> bool:
        if isinstance(exc, ApiError):
            self.error = exc
            notify_error(exc)
            return True
        return False


_COPY_JS = """<script>
window.aiproxyCopy = async (text) => {  // navigator.clipboard exists only on https and localhost
  if (navigator.clipboard && window.isSecureContext) {
    try { await navigator.clipboard.writeText(text); return true; } catch (e) {}
  }
  const area = document.createElement('textarea');
  area.value = text; area.setAttribute('readonly', ''); area.style.position = 'fixed'; area.style.opacity = '0';
  document.body.appendChild(area); area.select();
  let ok = false;
  try { ok = document.execCommand('copy'); } catch (e) {}
  area.remove();
  return ok;
};
// A select that takes typed values: Enter adds what was typed, unless the arrow keys picked an option. Quasar
// toggles its highlighted option instead, and the pointer resting where the list opens highlights one (issue 19).
window.aiproxyTypedEnter = (e, id) => {
  const box = e.target;
  if (['ArrowDown', 'ArrowUp', 'PageDown', 'PageUp'].includes(e.key)) { box.dataset.picked = '1'; return; }
  if (e.key === 'Enter' || e.key === 'Tab') {
    if (box.dataset.picked !== '1' && box.value && box.value.trim()) getElement(id).$refs.qRef.setOptionIndex(-1);
    delete box.dataset.picked;
  } else if (e.key.length === 1 || e.key === 'Backspace') delete box.dataset.picked;
};
// The provider picker lists an exact name first, then names that start with the text, then the other matches.
window.aiproxyRankOptions = (id) => {
  const c = getElement(id);
  if (c.aiproxyRanked) return;
  c.aiproxyRanked = true;
  c.findFilteredOptions = function () {
    const needle = (this.$el.querySelector('input[type=search]')?.value || '').toLocaleLowerCase().trim();
    if (!needle) return this.initialOptions;
    const rank = (o) => { const label = String(o.label).toLocaleLowerCase(), name = label.split('\u2063')[0];
      return name === needle ? 0 : name.startsWith(needle) ? 1 : name.includes(needle) ? 2 : 3; };
    return this.initialOptions.filter((o) => String(o.label).toLocaleLowerCase().includes(needle))
      .map((o, i) => [rank(o), i, o]).sort((a, b) => a[0] - b[0] || a[1] - b[1]).map((x) => x[2]);
  };
};
// The first visit follows the system's theme: remembered (and applied) once the page is connected.
window.aiproxyPrefersDark = () => window.matchMedia('(prefers-color-scheme: dark)').matches;
</script>"""


#: Quasar's brand colours, each AA (4.5:1) under the text Quasar puts on them: white, but dark on warning
#: (its warning toasts). _THEME_CSS sets the text in these colours per theme where the fill would not do.
BRAND_COLORS = {"primary": "#4f46e5", "secondary": "#0f766e", "accent": "#9333ea", "positive": "#15803d",
                "negative": "#c10015", "warning": "#f59e0b"}
_THEME_CSS = """
@layer quasar_importants {  /* Quasar's !important colours live in this layer: beating them means joining it */
  .body--dark .text-primary { color: #a5b4fc !important; }
  .body--dark .text-positive { color: #4ade80 !important; }
  .body--dark .text-negative { color: #f87171 !important; }
  .body--dark .q-field--highlighted .q-field__label { color: #a5b4fc !important; }  /* a focused field's label */
  .body--light .text-warning { color: #b45309 !important; }
  .body--dark .text-warning { color: #fbbf24 !important; }
  .model-chip { background: #e6e8ec !important; color: #1f2430 !important; }
  .body--dark .model-chip { background: #3a3f4a !important; color: #f1f3f6 !important; }
  .model-chip.chip-off, .model-chip.chip-mapped { background: transparent !important; }
  .body--dark .q-btn-toggle .bg-grey-3 { background: #2f3440 !important; }  /* time presets, status filters */
  .body--dark .q-btn-toggle .text-grey-9 { color: #e5e7eb !important; }
  @media (max-width: 639.98px) {
    .icon-only-on-phone .block { display: none !important; }  /* the header fits one line */
    .phone-rows tbody td { text-align: left !important; }
  }
}
.q-chip__icon--remove { opacity: 1; }  /* Quasar fades it to 2.2:1 */
.q-tooltip { background: #3f4654; }  /* Quasar's grey-7 under white text is 4.4:1 once faded in over a dark page */
.q-stepper__tab { color: #586070; }
.body--dark .q-stepper__tab { color: #a8adb7; }
.code-block { background: rgba(127, 127, 127, .12); }
.text-muted { color: #586070; }
.body--dark .text-muted { color: #a8adb7; }
.model-chip { max-width: 100%; height: auto; min-height: 1.5em; }
.model-chip .q-chip__content { white-space: normal; overflow-wrap: anywhere; }  /* long names wrap in the chip */
.model-chip.chip-off { border: 1px dashed currentColor; }
.model-chip.chip-mapped { border: 1px solid currentColor; }
.wrap-anywhere { white-space: normal; overflow-wrap: anywhere; }
.fit-columns .q-table th, .fit-columns .q-table td { padding-left: 8px; padding-right: 8px; }
.q-table td.cell-wrap { white-space: normal; min-width: 6rem; max-width: 10rem; }
.clamp-3 { display: -webkit-box; -webkit-line-clamp: 3; -webkit-box-orient: vertical; overflow: hidden; }
/* The phone layout every list shares (data_table): below 640 px a row is a block and its cells flow in it as
   "column value" pairs (the name from --lbl, set by table_column) that wrap as words do, so nothing needs a
   sideways scroll and no column is squeezed to a letter a line. */
@media (max-width: 639.98px) {
  .phone-rows thead { display: none; }
  .phone-rows table, .phone-rows tbody, .phone-rows tbody tr { display: block; width: 100%; }
  .phone-rows tbody tr { height: auto; padding: 8px 4px; border-bottom: 1px solid rgba(128, 128, 128, .3); }
  .phone-rows tbody td { display: inline-flex; flex-wrap: wrap; align-items: center; gap: 2px 6px; max-width: 100%;
    height: auto; min-height: 28px; padding: 2px 8px; border: 0; white-space: normal; overflow-wrap: anywhere; }
  .phone-rows tbody td::before { content: var(--lbl, none); position: static; flex: none; background: none;
    font-size: 12px; color: #586070; }
  .body--dark .phone-rows tbody td::before { color: #a8adb7; }
  .phone-rows tbody td > * { min-width: 0; }
  .phone-rows .q-table__middle { overflow-x: hidden; }
}
"""


async def copy_text(text: str) -> None:
    """Copy, also on plain http://ip:port: the clipboard API, else execCommand, else a selected field for Ctrl+C."""
    try:
        copied = await ui.run_javascript(f"aiproxyCopy({json.dumps(text)})", timeout=2)
    except TimeoutError:
        copied = False
    if copied:
        ui.notify(t("copy.done"), type="positive")
        return
    with _delete_on_close(ui.dialog()) as dialog, ui.card().classes("w-[36rem] max-w-full"):
        ui.label(t("copy.manual")).classes("font-medium")
        field = ui.textarea(value=text).props("readonly outlined autogrow autofocus").classes("w-full font-mono")
        field.on("focus", js_handler="(e) => e.target.select()")
        with ui.row().classes("w-full justify-end"):
            ui.button(t("common.close"), on_click=dialog.close).props("flat")
    dialog.open()


def copy_button(get_text: Callable[[], str], label: str | None = None) -> Any:
    async def do_copy() -> None:
        await copy_text(get_text())

    return ui.button(label or t("copy.button"), icon="content_copy", on_click=do_copy).props("flat dense")


async def confirm(message: str, ok_label: str, danger: bool = False, details: str = "") -> bool:
    with ui.dialog() as dialog, ui.card().classes("w-[28rem] max-w-full"):
        ui.label(message).classes("text-base font-medium")
        if details:
            ui.label(details).classes("text-sm opacity-70 break-all")
        with ui.row().classes("w-full justify-end"):
            ui.button(t("common.cancel"), on_click=lambda: dialog.submit(False)).props("flat")
            ui.button(ok_label, on_click=lambda: dialog.submit(True)).props(
                f"color={'negative' if danger else 'primary'}").mark("confirm")
    result = await dialog
    dialog.delete()
    return bool(result)


# ---- layout ----


def frame(title: str) -> Any:
    """The shared layout: header (language, dark mode, log-out) and the left navigation. Returns the content
    column: `with frame(t("nav.logs")): ...`."""
    user = ng.storage.user
    ui.page_title(f"{title} · aiproxy-local")
    ui.colors(**BRAND_COLORS)
    ui.dark_mode(user.get("dark"))  # None (never chosen): the system's theme, learnt below
    if "browser_tz" not in user:
        ui.timer(0.1, _learn_browser_timezone, once=True)
    if "dark" not in user:
        ui.timer(0.1, _learn_system_theme, once=True)

    def switch_language() -> None:
        user["lang"] = "en" if user.get("lang") == "zh" else "zh"
        ui.navigate.reload()

    def switch_dark() -> None:
        user["dark"] = not user.get("dark", False)
        ui.navigate.reload()  # charts and every colour are chosen for one theme when the page is built

    def log_out() -> None:
        user.pop("auth", None)
        ui.navigate.to("/login")

    with ui.header(elevated=True).classes("items-center gap-1 px-3 py-1 bg-primary no-wrap"):
        ui.button(icon="menu", on_click=lambda: drawer.run_method("toggle")).props("flat round dense color=white")
        ui.icon("alt_route", size="sm").classes("ml-1 max-sm:hidden")
        ui.label("aiproxy-local").classes("text-lg font-semibold tracking-tight max-sm:hidden")
        ui.icon("chevron_right").classes("max-sm:hidden")
        ui.label(title).classes("text-lg truncate")
        ui.space()
        ui.button("中文" if user.get("lang") != "zh" else "English", icon="translate",
                  on_click=switch_language).props("flat dense color=white").tooltip(t("header.language"))
        ui.button(icon="dark_mode" if not user.get("dark") else "light_mode", on_click=switch_dark).props(
            "flat round dense color=white").tooltip(t("header.dark"))
        ui.button(t("header.logout"), icon="logout", on_click=log_out).props("flat dense color=white").classes(
            "icon-only-on-phone").tooltip(t("header.logout"))
    here = ui.context.client.page.path
    on_connect = ui.context.client.connect_handlers
    asks_before = len(on_connect)
    drawer = ui.left_drawer(bordered=True).props("width=210 breakpoint=800").classes("px-0 py-3")
    # NiceGUI asks the browser on connect whether the drawer is open, with a fixed 1 s timeout that a busy
    # machine misses (a traceback in the log). The menu button toggles it in the browser, so no one needs the answer.
    del on_connect[asks_before:]
    with drawer:
        for path, _, icon, key in PAGES:
            active = here == path or (path == PAGES[0][0] and here == "/")
            with ui.link(target=path).classes("no-underline text-inherit block self-stretch"):
                with ui.row().classes("items-center gap-3 mx-2 px-3 py-2 rounded-lg no-wrap " + (
                        "bg-primary text-white" if active else "hover:bg-gray-500/10")):
                    ui.icon(icon, size="sm")
                    ui.label(t(key)).classes("text-[15px]")
    return ui.column().classes("w-full max-w-[1400px] mx-auto p-4 gap-4")


class TimeRange:
    """Preset chips (15 min … 30 d) plus From/To fields in the display timezone. A preset is a rolling window:
    it is re-read at every refresh, so "1 h" keeps meaning the last hour under auto-refresh."""

    def __init__(self, default: str, on_change: Callable[[], Any]) -> None:
        self.tz, self.on_change, self._quiet = display_tz(), on_change, False
        options = {k: t(f"range.{k}") for k in (["yesterday"] if default == "yesterday" else []) + list(TIME_PRESETS)}
        with ui.row().classes("items-center gap-2"):
            self.preset = ui.toggle(options, value=default, on_change=self._preset_changed).props(
                _TOGGLE_PROPS).mark("range-preset")
            self.start = ui.input(t("range.from"), on_change=self._edited).props(
                "type=datetime-local dense outlined stack-label").classes("w-48")
            self.end = ui.input(t("range.to"), on_change=self._edited).props(
                "type=datetime-local dense outlined stack-label clearable").classes("w-48")
        self._fill()

    def _fill(self) -> None:
        start, _ = preset_range(self.preset.value, now_ms(), self.tz)
        self._quiet = True
        self.start.value, self.end.value = format_ms(start, self.tz, "%Y-%m-%dT%H:%M"), ""
        self._quiet = False

    def _preset_changed(self) -> None:
        if self.preset.value:
            self._fill()
            self.on_change()

    def _edited(self) -> None:
        if not self._quiet:
            self.preset.value = None  # hand-picked bounds replace the preset
            self.on_change()

    def bounds(self) -> tuple[int, int | None]:
        if self.preset.value:
            return preset_range(self.preset.value, now_ms(), self.tz)
        start = local_input_to_ms(self.start.value, self.tz)
        return start if start is not None else now_ms() - 86_400_000, local_input_to_ms(self.end.value, self.tz)


def data_table(columns: list[dict[str, Any]], row_key: str, marker: str, **kw: Any) -> Any:
    """A ui.table with the house look and Quasar's own labels translated. On a phone each row is a block of
    "column: value" lines (the phone-rows CSS), unless the page turns it into cards (Quasar's grid mode)."""
    table = ui.table(columns=columns, rows=[], row_key=row_key, **kw).classes("w-full phone-rows").props(
        "flat bordered").mark(marker)
    table.props["rows-per-page-label"] = t("table.per_page")
    table.props["rows-per-page-options"] = [10, 20, 50, 100]  # Quasar's own list ends in an untranslated "All"
    table.props["no-data-label"] = t("table.no_data")
    table.props[":pagination-label"] = (  # Quasar's "1-3 of 3" is English in every language
        f"(start, end, total) => {json.dumps(t('table.range'), ensure_ascii=False)}"
        ".replace('{start}', start).replace('{end}', end).replace('{total}', total)")
    return table


def priority_field(value: int) -> Any:
    """A priority: a whole number, refused (not rounded) otherwise."""
    return ui.number(t("ch.priority"), value=value, validation=lambda v: None if whole_number(v) is not None else t(
        "ch.priority_invalid")).props("outlined hide-bottom-space")


def field_help(text: str = "", classes: str = "text-muted") -> Any:
    """A hint under a form field. Quasar's own hint overlays what follows once it wraps to two lines."""
    label = ui.label(text).classes(f"text-xs {classes} -mt-1 mb-1 w-full")
    label.bind_visibility_from(label, "text")
    return label


def takes_typed_values(select: Any) -> Any:
    """A select with new_value_mode: Enter adds the typed text, and keeps what was chosen (see aiproxyTypedEnter)."""
    select.on("keydown", js_handler=f"(e) => aiproxyTypedEnter(e, {select.id})")
    return select


def proxy_fields(proxy_url: str, skip_tls_verify: bool) -> tuple[Any, Any]:
    """A channel's own proxy (its password shown masked, as a key is) and its skip-TLS switch, with their help."""
    with ui.row().classes("w-full items-center gap-3 max-sm:flex-col max-sm:items-start"):
        url = ui.input(t("ch.proxy_url"), value=mask_proxy_url(proxy_url),
                       validation=lambda v: None if proxy_url_ok(v) else t("v.proxy_url")).props(
            "outlined stack-label input-class=font-mono placeholder=socks5://127.0.0.1:1080").classes(
            "grow").mark("ch-proxy-url")
        skip = ui.checkbox(t("ch.skip_tls"), value=skip_tls_verify).tooltip(t("ch.skip_tls_hint")).mark(
            "ch-skip-tls")
    field_help(t("ch.proxy_url_hint"))
    return url, skip


def _json_object_text(text: str | None) -> bool:
    try:
        return not (text or "").strip() or isinstance(json.loads(text), dict)
    except ValueError:
        return False


class RequestSettings:
    """A channel's request settings, kept in its config: the upstream model's output limit (max_output_tokens)
    and the JSON merged into every upstream body (param_override, null deleting a field)."""

    def __init__(self, config: dict[str, Any]) -> None:
        limit, override = config.get(CONFIG_MAX_OUTPUT_TOKENS), config.get(CONFIG_PARAM_OVERRIDE)
        with ui.expansion(t("ch.request"), icon="tune", value=bool(limit or override)).classes(
                "w-full rounded-borders").style("border: 1px solid rgba(128,128,128,.35)").props("dense"):
            ui.label(t("ch.request_hint")).classes("text-xs opacity-70")
            self.limit = ui.number(t("ch.max_output"), value=limit if isinstance(limit, int) else None, min=1,
                                   precision=0).props("outlined dense clearable").classes("w-full").mark(
                "ch-max-output")
            self.override = ui.textarea(t("ch.override"), value=json.dumps(override, ensure_ascii=False) if isinstance(
                override, dict) and override else "", validation=lambda v: None if _json_object_text(v) else t(
                "v.override")).props("outlined autogrow input-class=font-mono").classes(
                "w-full").mark("ch-override")

    def config(self, stored: dict[str, Any]) -> dict[str, Any] | None:
        """`stored` with the two settings as typed; None while the JSON is not an object."""
        if not self.override.validate():
            return None
        config = dict(stored)
        limit, text = whole_number(self.limit.value), (self.override.value or "").strip()
        if limit:
            config[CONFIG_MAX_OUTPUT_TOKENS] = limit
        elif not isinstance(config.get(CONFIG_MAX_OUTPUT_TOKENS), dict):  # a per-model table stays (API only)
            config.pop(CONFIG_MAX_OUTPUT_TOKENS, None)
        if text:
            config[CONFIG_PARAM_OVERRIDE] = json.loads(text)
        else:
            config.pop(CONFIG_PARAM_OVERRIDE, None)
        return config


def unmasked(typed: str | None, stored: str, mask: Callable[[str], str]) -> str:
    """What a field showing a secret masked means: the stored value while its mask is left as it is."""
    value = (typed or "").strip()
    return stored if stored and value == mask(stored) else value


_PICKER_OPTION = """<q-item v-bind="props.itemProps"><q-item-section>
    <q-item-label>{{ props.opt.label.split('\\u2063')[0] }}</q-item-label>
    <q-item-label caption>{{ props.opt.label.split('\\u2063')[1] }}</q-item-label></q-item-section></q-item>"""


def provider_select(catalog: dict[int, Provider], value: int, on_change: Callable[[], None]) -> Any:
    """The provider picker: names in the session's language, searched by both names and the models."""
    select = ui.select(provider_options(catalog, session_language()), value=value,
                       label=t("ch.provider"), with_input=True, on_change=on_change).props(
        "outlined").classes("w-full").mark("ch-provider")
    select.props[":option-label"] = "(o) => String(o.label).split('\\u2063')[0]"
    select.on("focus", js_handler=f"() => aiproxyRankOptions({select.id})")  # an exact name first
    select.add_slot("option", _PICKER_OPTION)
    select.add_slot("no-option", f'<q-item><q-item-section class="text-muted">{t("ch.no_match")}</q-item-section>'
                                 '</q-item>')
    return select


def _channel_options(state: AppState, all_label: str) -> dict[Any, str]:
    return {0: all_label, **{c.id: f"{c.name} (#{c.id})" for c in sorted(state.routes.channels.values(),
                                                                          key=lambda c: c.name.lower())}}


def _model_options(state: AppState, all_label: str) -> dict[str, str]:
    return {"": all_label, **{m: m for m in sorted(state.routes.known_models)}}


# ---- login ----


def page_login(request: Request, redirect_to: str = "/dashboard", token: str = "") -> Response | None:
    state = get_state()
    _start_session(request)
    home = PAGES[0][0]
    target = redirect_to if redirect_to == "/" or redirect_to in {p[0] for p in PAGES} else home  # never off-site
    link_spent = False
    if token:  # a one-time link (the browser the app opened itself): spent now, whatever happens next
        client = request.client.host if request.client else ""
        if spend_login_token(state, token) and is_loopback(client):
            ng.storage.user["auth"] = _key_fingerprint(state.admin_key)
        link_spent = not is_signed_in(state)
    if is_signed_in(state):
        return Response(status_code=303, headers={"location": target})  # the token leaves the address bar
    ui.page_title("aiproxy-local")
    ui.colors(**BRAND_COLORS)
    ui.dark_mode(ng.storage.user.get("dark"))  # None: the system's theme

    address = request.client.host if request.client else ""

    async def log_in() -> None:
        waiting = state.throttle.wait(address, time.time())
        if waiting:  # the same wait as /api and /v1 (AuthThrottle): a right key must not confirm a guess
            ui.notify(t("login.wait", seconds=math.ceil(waiting)), type="negative")
            return
        if secrets.compare_digest((key.value or "").strip().encode(), state.admin_key.encode()):
            state.throttle.succeeded(address)
            ng.storage.user["auth"] = _key_fingerprint(state.admin_key)
            await _learn_browser_timezone()  # before the first page that shows times
            await _learn_system_theme()  # and its charts' colours
            ui.navigate.to(target)
            return
        state.throttle.failed(address, time.time(), key.value or "")
        ui.notify(t("login.wrong"), type="negative")
        await asyncio.sleep(0.3)  # slows down guessing a little

    def switch_language() -> None:
        ng.storage.user["lang"] = "en" if ng.storage.user.get("lang") == "zh" else "zh"
        ui.navigate.reload()

    with ui.column().classes("absolute-center items-center gap-4 w-[26rem] max-w-[92vw]"):
        with ui.row().classes("items-center gap-2"):
            ui.icon("alt_route", size="lg", color="primary")
            ui.label("aiproxy-local").classes("text-3xl font-semibold tracking-tight")
        ui.label(t("login.tagline")).classes("text-center opacity-70")
        with ui.card().classes("w-full p-6 gap-3"):
            ui.label(t("login.title")).classes("text-lg font-medium")
            key = ui.input(t("login.key"), password=True, password_toggle_button=True).props(
                "outlined autofocus").classes("w-full").on("keydown.enter", log_in)
            ui.button(t("login.submit"), icon="login", on_click=log_in).classes("w-full")
            where = (t("login.where_env") if state.settings.admin_key
                     else t("login.where_file", path=str(state.settings.data_path / "admin_key")))
            ui.label(where).classes("text-xs opacity-70 break-all")
            if link_spent:
                ui.label(t("login.link_spent")).classes("text-xs text-warning").mark("link-spent")
        ui.button("中文" if ng.storage.user.get("lang") != "zh" else "English", icon="translate",
                  on_click=switch_language).props("flat dense")
    return None


# ---- model data in the channel forms: retired models marked (issue 17) ----

def retired_models(ch: dict[str, Any]) -> list[str]:
    """The models a channel serves that its provider has shut down (the model snapshot's retirement dates)."""
    data = model_data()
    names = [*ch["models"], *ch["model_mapping"].values()]
    return [m for m in dict.fromkeys(names) if (info := data.info(m, ch["type"])) is not None and info.is_retired()]


def model_choices(catalog: dict[int, Provider], type_id: int, chosen: Iterable[str]) -> dict[str, str]:
    """The channel dialog's model options: the provider's built-ins, current ones first and retired ones marked,
    then the channel's own other names."""
    data = model_data()
    provider = catalog.get(type_id)
    current: dict[str, str] = {}
    retired: dict[str, str] = {}
    for model, _ in provider.models if provider else ():
        info = data.info(model, type_id)
        status = info.status() if info is not None else "current"
        if status == "retired":
            retired[model] = f"{model} · {t('ch.model_retired')}"
        else:
            current[model] = f"{model} · {t('ch.model_retiring', date=info.retired)}" if status == "retiring" else model
    ordered = {**current, **retired}
    for model in chosen:
        ordered.setdefault(model, model)
    return ordered


_CHANNEL_SLOTS = {
    "body-cell-name": """<q-td :props="props">
        <div class="font-medium">{{ props.row.name }}</div>
        <div class="text-xs text-muted font-mono">{{ props.row.key }}</div>
        <div v-if="props.row.auto_disabled" class="row items-center" style="gap: 0 4px; max-width: 16rem">
          <q-badge color="grey-7">[[auto_disabled]]</q-badge>
          <span class="text-xs text-muted">{{ props.row.since }}</span>
          <q-btn flat dense no-caps size="sm" color="primary" icon="replay" label="[[retest]]" class="no-wrap"
            @click="() => $parent.$emit('retest', props.row.id)" /></div>
        <div v-if="props.row.reason" class="text-xs text-warning wrap-anywhere clamp-3" style="max-width: 16rem">
          {{ props.row.reason }}<q-tooltip max-width="32rem">{{ props.row.reason }}</q-tooltip></div>
        <div v-if="props.row.cooling" class="text-xs text-warning" style="white-space: normal; max-width: 16rem">
          <q-icon name="ac_unit" size="xs" /> {{ props.row.cooling }}</div>
        <div v-if="props.row.retired" class="text-xs text-warning" style="white-space: normal; max-width: 16rem">
          <q-icon name="event_busy" size="xs" /> {{ props.row.retired }}</div></q-td>""",
    "body-cell-models": """<q-td :props="props" style="white-space: normal; min-width: 12rem">
        <q-chip v-for="m in props.row.models.split('\\n').filter(x => x)" :key="m" dense square size="sm"
          class="model-chip">{{ m }}</q-chip>
        <q-chip v-for="m in (props.row.mapped || '').split('\\n').filter(x => x)" :key="m" dense square size="sm"
          class="model-chip chip-mapped" icon="swap_horiz">{{ m }}<q-tooltip>[[mapped]]</q-tooltip></q-chip>
        <q-chip v-if="props.row.more" dense size="sm" color="primary" text-color="white">+{{ props.row.more }}</q-chip>
        </q-td>""",
    "body-cell-priority": """<q-td :props="props">
        <q-input dense outlined type="number" :model-value="props.row.priority" style="max-width: 5.5rem"
          @change="v => $parent.$emit('priority', {id: props.row.id, value: Number(v)})"
          @keyup.enter="e => e.target.blur()" /></q-td>""",
    "body-cell-enabled": """<q-td :props="props">
        <q-toggle :model-value="props.row.enabled" color="positive"
          @update:model-value="v => $parent.$emit('toggle', {id: props.row.id, value: v})" /></q-td>""",
    "body-cell-test": """<q-td :props="props">
        <span v-if="props.row.test" :class="props.row.test_ok ? 'text-positive' : 'text-negative'"
          class="font-medium">{{ props.row.test }}<q-tooltip>{{ props.row.test_tip }}</q-tooltip></span>
        <span v-else class="text-muted">[[untested]]</span></q-td>""",
    "body-cell-requests": """<q-td :props="props">
        <a :href="'/logs?channel=' + props.row.id" class="text-primary">{{ props.row.requests }}</a></q-td>""",
    "item": """<div class="q-pa-xs col-12"><q-card flat bordered>
        <q-card-section class="row items-center no-wrap q-py-sm q-px-sm">
          <q-checkbox dense v-model="props.selected" />
          <div class="col q-ml-sm" style="min-width: 0">
            <div class="font-medium break-all">{{ props.row.name }}</div>
            <div class="text-xs text-muted">{{ props.row.provider }} · <span class="font-mono">{{ props.row.key }}
              </span></div>
            <div v-if="props.row.auto_disabled" class="text-xs">
              <q-badge color="grey-7">[[auto_disabled]]</q-badge> {{ props.row.since }}
              <q-btn flat dense no-caps size="sm" color="primary" icon="replay" label="[[retest]]"
                @click="() => $parent.$emit('retest', props.row.id)" /></div>
            <div v-if="props.row.reason" class="text-xs text-warning wrap-anywhere">{{ props.row.reason }}</div>
            <div v-if="props.row.cooling" class="text-xs text-warning">{{ props.row.cooling }}</div>
            <div v-if="props.row.retired" class="text-xs text-warning">{{ props.row.retired }}</div></div>
          <q-toggle :model-value="props.row.enabled" color="positive"
            @update:model-value="v => $parent.$emit('toggle', {id: props.row.id, value: v})" /></q-card-section>
        <q-card-section class="q-py-none q-px-sm">
          <q-chip v-for="m in props.row.models.split('\\n').filter(x => x)" :key="m" dense square size="sm"
            class="model-chip">{{ m }}</q-chip>
          <q-chip v-for="m in (props.row.mapped || '').split('\\n').filter(x => x)" :key="m" dense square
            size="sm" class="model-chip chip-mapped" icon="swap_horiz">{{ m }}</q-chip>
          <q-chip v-if="props.row.more" dense size="sm" color="primary" text-color="white">+{{ props.row.more }}
            </q-chip></q-card-section>
        <q-card-section class="row items-center no-wrap q-py-sm q-px-sm" style="gap: 8px">
          <q-input dense outlined type="number" :model-value="props.row.priority" style="width: 5.5rem"
            label="[[priority]]" @change="v => $parent.$emit('priority', {id: props.row.id, value: Number(v)})"
            @keyup.enter="e => e.target.blur()" />
          <span v-if="props.row.test" :class="props.row.test_ok ? 'text-positive' : 'text-negative'"
            class="text-sm font-medium">{{ props.row.test }}</span>
          <span v-else class="text-sm text-muted">[[untested]]</span>
          <q-space />
          <q-btn flat dense round icon="edit" :aria-label="'[[edit]]'"
            @click="() => $parent.$emit('edit', props.row.id)" />
          <q-btn flat dense round icon="speed" color="primary" :aria-label="'[[test]]'"
            @click="() => $parent.$emit('test', props.row.id)" />
          <q-btn flat dense round icon="delete" color="negative" :aria-label="'[[delete]]'"
            @click="() => $parent.$emit('delete', props.row.id)" /></q-card-section>
      </q-card></div>""",
    "body-cell-actions": """<q-td :props="props" class="whitespace-nowrap">
        <q-btn flat dense round icon="edit" @click="() => $parent.$emit('edit', props.row.id)">
          <q-tooltip>[[edit]]</q-tooltip></q-btn>
        <q-btn flat dense round icon="speed" color="primary" @click="() => $parent.$emit('test', props.row.id)">
          <q-tooltip>[[test]]</q-tooltip></q-btn>
        <q-btn flat dense round icon="delete" color="negative" @click="() => $parent.$emit('delete', props.row.id)">
          <q-tooltip>[[delete]]</q-tooltip></q-btn></q-td>""",
}


def channel_slot(name: str) -> str:
    """A cell template of the channel list, in the session's language (the migrate summary reuses them)."""
    return _tpl(_CHANNEL_SLOTS[name], edit=t("common.edit"), test=t("ch.test"), delete=t("common.delete"),
                untested=t("ch.untested"), mapped=t("ch.mapped_tip"), priority=t("ch.priority"),
                auto_disabled=t("ch.auto_disabled"), retest=t("ch.retest"))


_MODEL_SLOTS = {
    "body-cell-served": """<q-td :props="props">
        <span :class="{ok: 'text-positive', none: 'text-warning font-medium', off: 'text-muted'}[props.row.state]">
          <q-icon :name="{ok: 'check_circle', none: 'warning', off: 'block'}[props.row.state]" size="xs" />
          {{ props.row.served }}</span></q-td>""",
    "body-cell-channels": """<q-td :props="props" style="white-space: normal">
        <q-chip v-for="c in props.row.channels.split('\\n').filter(x => x)" :key="c" dense square size="sm"
          class="model-chip" :class="c.split('|')[0] === 'off' ? 'chip-off' : ''">
          <q-icon v-if="c.split('|')[1]" :name="c.split('|')[1] === 'ok' ? 'check' : 'close'" size="xs"
            :class="c.split('|')[1] === 'ok' ? 'text-positive' : 'text-negative'" />
          {{ c.split('|')[2] }}</q-chip></q-td>""",
    "body-cell-enabled": """<q-td :props="props">
        <q-toggle :model-value="props.row.enabled" color="positive"
          @update:model-value="v => $parent.$emit('toggle', {model: props.row.model, value: v})" /></q-td>""",
}


def model_row(m: dict[str, Any]) -> dict[str, Any]:
    """A list_models() entry for the models table: whether an enabled channel really serves the model, and each
    channel's own last test of it (one channel's ✓ says nothing about another's)."""
    tests = {x["channel_id"]: x for x in m["tests"]}
    serving = sum(c["enabled"] for c in m["channels"])
    state = "off" if not m["enabled"] else "ok" if serving else "none"
    chips = []
    for c in m["channels"]:
        test = tests.get(c["id"])
        result = f" · {'✓' if test['success'] else '✗'} {test['took']:.2f} s" if test else ""
        off = "" if c["enabled"] else f" · {t('models.channel_off')}"
        mapped = f" → {c['upstream_model']}" if c["upstream_model"] != m["model"] else ""
        chips.append(f"{'on' if c['enabled'] else 'off'}|{('ok' if test['success'] else 'bad') if test else ''}|"
                     f"{c['name']} · P{c['priority']}{mapped}{off}{result}")
    return {"model": m["model"], "kind": t(f"kind.{m['kind']}"), "enabled": m["enabled"], "state": state,
            "served": {"off": t("models.switched_off"), "none": t("models.no_channel"),
                       "ok": t("models.served_by", n=serving)}[state],
            "channels": "\n".join(chips)}


def format_trail(attempts: list[dict[str, Any]], names: dict[int, str] | None = None) -> str:
    """A routing trail in one line: `cheap (#3) skipped (cooling down) · backup (#4) → 429 (31 ms) · main (#5) →
    200 (12 ms)`; a channel without a name (deleted since) is its number alone."""
    names = names or {}
    parts = []
    for a in attempts:
        who = f"{names[a['channel_id']]} (#{a['channel_id']})" if names.get(a["channel_id"]) else f"#{a['channel_id']}"
        if a.get("skipped"):
            parts.append(f"{who} {t('logs.skipped', why=t('logs.skip_' + a['skipped']))}")
        else:
            parts.append(f"{who} → {a['code']} ({a['ms']} ms)")
    return " · ".join(parts)


def log_channel_name(log: dict[str, Any], route: ChannelRoute | None) -> str:
    """The channel's current name, else the one the log row kept (the channel was deleted), else ""."""
    return route.name if route else log["channel_name"]


# ==== 18. UI pages: dashboard, channels, model tests, models, logs, keys, settings ==========================
# One class per page; PAGES (section 20, where the UI is mounted) lists them for the routes and the navigation.

# ---- dashboard ----


class DashboardPage:
    """Summary cards and charts of the calls in a time range; model tests are not traffic and stay out."""

    CARDS = (("calls", "call_made"), ("error_rate", "error_outline"), ("input_tokens", "input"),
             ("output_tokens", "output"), ("avg_latency_ms", "timer"), ("avg_ttfb_ms", "bolt"), ("spend", "payments"))
    CHARTS = (("calls", ("dash.calls", "dash.errors")), ("tokens", ("dash.input_tokens", "dash.output_tokens")),
              ("latency", ("dash.avg_latency", "dash.avg_ttfb")), ("spend", ("dash.spend",)))

    def __init__(self, state: AppState, request: Request) -> None:
        self.state, self.tz = state, display_tz()
        if not state.routes.channels:
            self._getting_started()
        with ui.row().classes("items-center gap-3 w-full"):
            self.span = TimeRange("24h", self._range_changed)
            self.timespan = ui.select({k: t(f"dash.by_{k}") for k in TIMESPANS}, value="hour",
                                      label=t("dash.timespan"), on_change=self.refresh).props(
                "dense outlined").classes("w-32")
            self.model = ui.select(_model_options(state, t("common.all_models")), value="", label=t("common.model"),
                                   with_input=True, on_change=self.refresh).props("dense outlined").classes("w-52")
            self.channel = ui.select(_channel_options(state, t("common.all_channels")), value=0,
                                     label=t("common.channel"), on_change=self.refresh).props(
                "dense outlined").classes("w-52")
            self.loading = ui.spinner(size="sm").mark("dash-loading")  # while a long range loads
            self.note = ui.label().classes("text-sm text-muted").mark("dash-note")
        self.cards: dict[str, Any] = {}
        self._asked = 0  # the newest refresh: an older one that ends later does not overwrite it
        with ui.grid().classes("w-full gap-3 grid-cols-2 md:grid-cols-4 xl:grid-cols-7"):
            for name, icon in self.CARDS:
                with ui.card().classes("gap-1 p-4"):
                    with ui.row().classes("items-center gap-2 opacity-70"):
                        ui.icon(icon, size="xs")
                        ui.label(t(f"dash.{name}")).classes("text-sm")
                    self.cards[name] = ui.label("–").classes("text-2xl font-semibold").mark(f"card-{name}")
        self.charts: dict[str, Any] = {}
        dark = bool(ng.storage.user.get("dark"))
        with ui.grid().classes("w-full gap-3 grid-cols-1 lg:grid-cols-2"):
            for name, series in self.CHARTS:
                with ui.card().classes("p-3"):
                    ui.label(t(f"dash.chart_{name}")).classes("font-medium")
                    self.charts[name] = ui.echart(_line_chart([t(s) for s in series], dark)).classes("w-full h-64")
        self.rankings: dict[str, Any] = {}
        with ui.grid().classes("w-full gap-3 grid-cols-1 md:grid-cols-2"):
            for key in ("channel_id", "model"):
                with ui.card().classes("p-3 gap-1"):
                    ui.label(t(f"dash.spend_by_{key}")).classes("font-medium")
                    self.rankings[key] = ui.column().classes("w-full gap-1").mark(f"spend-{key}")
        self.refresh()

    def _show_rankings(self, series: list[dict[str, Any]]) -> None:
        """Spend by channel and by model, largest first, each with its share of the largest."""
        for key, box in self.rankings.items():
            box.clear()
            ranking = spend_ranking(series, key)
            with box:
                if not ranking:
                    ui.label(t("dash.no_spend")).classes("text-sm text-muted")
                for who, amount in ranking:
                    route = self.state.routes.channels.get(who) if key == "channel_id" else None
                    name = route.name if route else f"#{who}" if key == "channel_id" else who
                    with ui.row().classes("w-full items-center no-wrap gap-2 text-sm"):
                        ui.label(name).classes("grow wrap-anywhere")
                        ui.label(fmt_cost(amount)).classes("font-mono")
                    ui.linear_progress(amount / ranking[0][1], show_value=False).props("rounded size=6px")

    @staticmethod
    def _getting_started() -> None:
        with ui.card().classes("w-full bg-primary/5"):
            ui.label(t("dash.start_title")).classes("text-lg font-semibold")
            for step, (text, path) in enumerate([("dash.start_1", "/channels"), ("dash.start_2", "/channels"),
                                                 ("dash.start_3", "/settings")], start=1):
                with ui.row().classes("items-center gap-2"):
                    ui.badge(str(step)).props("rounded")
                    ui.link(t(text), path).classes("text-primary")  # AA on the tinted card

    def _range_changed(self) -> None:
        picked = PRESET_TIMESPAN.get(self.span.preset.value or "")  # a preset brings a sensible resolution
        if picked and picked != self.timespan.value:
            self.timespan.value = picked  # its on_change refreshes
        else:
            self.refresh()

    def refresh(self) -> None:
        load_in_background(self.loading, self._load)

    async def _load(self) -> None:
        """The query runs in a thread (the relay's event loop never waits for it), with the spinner shown."""
        start, end = self.span.bounds()
        end = end or now_ms()
        self._asked = asked = self._asked + 1
        self.loading.visible = True
        try:
            with shown_errors() as refused:
                answer = await asyncio.to_thread(dashboard_answer, self.state.engine, start, end, str(self.tz),
                                                 self.timespan.value, self.channel.value or None,
                                                 self.model.value or "")
            if refused:
                return
        finally:
            if asked == self._asked:
                self.loading.visible = False
        if asked != self._asked:
            return
        series, timespan = answer.series, answer.timespan
        self.note.text = answer.note
        totals = summarize_series(series)
        self.cards["calls"].text = fmt_count(totals["calls"])
        self.cards["error_rate"].text = f"{totals['error_rate'] * 100:.1f}% ({fmt_count(totals['errors'])})"
        self.cards["input_tokens"].text = fmt_count(totals["input_tokens"])
        self.cards["output_tokens"].text = fmt_count(totals["output_tokens"])
        self.cards["avg_latency_ms"].text = fmt_seconds(totals["avg_latency_ms"])
        self.cards["avg_ttfb_ms"].text = fmt_seconds(totals["avg_ttfb_ms"])
        self.cards["spend"].text = fmt_cost(totals["spend"])
        self._show_rankings(series)
        buckets = chart_buckets(series, start, end, timespan, self.tz)
        label_fmt = {"minute": "%H:%M", "hour": "%m-%d %H:00", "day": "%Y-%m-%d"}[timespan]
        labels = [format_ms(ts * 1000, self.tz, label_fmt) for ts, _ in buckets]
        for name, values in chart_values(buckets).items():
            chart = self.charts[name]
            chart.options["xAxis"]["data"] = labels
            for serie, data in zip(chart.options["series"], values):
                serie["data"] = data
            chart.update()


# ---- channels ----

class ChannelsTable:
    """The channels page: a toolbar, a bulk bar for the selected rows, and one row per channel whose switch,
    priority field and buttons change the channel in place."""

    def __init__(self, state: AppState, request: Request) -> None:
        self.state = state
        self.order: list[int] = []  # row order, kept across edits so rows never jump away from the pointer
        with ui.row().classes("items-center gap-2 w-full"):
            ui.button(t("ch.add"), icon="add", on_click=lambda: ChannelDialog(state, None, self.refresh)).mark(
                "add-channel")
            ui.button(t("ch.test_all"), icon="speed", on_click=self.test_all).props("outline")
            self.search = ui.input(placeholder=t("ch.search"), on_change=self.refresh).props(
                "dense outlined clearable").classes("w-64")
            ui.space()
            with ui.row().classes("items-center gap-2") as self.bulk:
                self.bulk_label = ui.label().classes("font-medium")
                ui.button(t("bulk.enable"), on_click=lambda: self.bulk_status(STATUS_ENABLED)).props("outline dense")
                ui.button(t("bulk.disable"), on_click=lambda: self.bulk_status(STATUS_DISABLED)).props(
                    "outline dense")
                ui.button(t("bulk.priority"), on_click=self.bulk_priority).props("outline dense")
                ui.button(t("bulk.delete"), on_click=self.bulk_delete).props("outline dense color=negative")
            self.bulk.visible = False
        columns = [
            table_column("id", "ID", sortable=True),
            table_column("name", t("ch.name"), sortable=True),
            dict(table_column("provider", t("ch.provider"), sortable=True), classes="cell-wrap"),
            table_column("models", t("ch.models")),
            table_column("priority", t("ch.priority"), sortable=True),
            table_column("enabled", t("ch.enabled"), sortable=True),
            table_column("test", t("ch.last_test")),
            table_column("requests", t("ch.requests"), sortable=True, align="right"),
            table_column("actions", "", field="id", align="right"),
        ]
        self.table = data_table(columns, "id", "channels", selection="multiple", pagination={"rowsPerPage": 50},
                                on_select=self.selection_changed).props("hide-selected-banner").classes(
            "fit-columns")  # fits a 1440 px window, actions included, whatever the auto-disable reason says
        self.table.props[":grid"] = "window.innerWidth < 640"  # a phone: one card per channel, nothing off-screen
        for slot in _CHANNEL_SLOTS:
            self.table.add_slot(slot, channel_slot(slot))
        self.empty = ui.label(t("ch.empty")).classes("opacity-70")
        for event, handler in (("priority", self.on_priority), ("toggle", self.on_toggle), ("edit", self.on_edit),
                               ("test", self.on_test), ("delete", self.on_delete), ("retest", self.on_retest)):
            self.table.on(event, handler)
        self.refresh()

    def refresh(self) -> None:
        """Fresh rows in the kept order: the first load sorts (enabled first, then by priority), later loads put
        new channels on top and leave the others where they are, until the user sorts a column or reloads."""
        channels = with_health(self.state, select_channels(self.state.engine)[0])
        rows = {c["id"]: channel_row(c, self.state.catalog, session_language()) for c in channels}
        if not self.order:
            self.order = [r["id"] for r in sorted(rows.values(), key=lambda r: (not r["enabled"], -r["priority"],
                                                                                 r["id"]))]
        else:
            self.order = sorted(rows.keys() - set(self.order), reverse=True) + [i for i in self.order if i in rows]
        needle = (self.search.value or "").strip().lower()
        shown = {c["id"] for c in channels if not needle or needle in (
            f"{c['name']} {c['base_url']} {' '.join(c['models'])} {' '.join(c['model_mapping'])}").lower()}
        table = self.table
        table.rows = [rows[i] for i in self.order if i in shown]
        kept = {r["id"] for r in table.rows}
        table.selected = [r for r in table.rows if r["id"] in {s["id"] for s in table.selected} & kept]
        self.empty.visible, table.visible = not channels, bool(channels)
        self.selection_changed()

    def selection_changed(self) -> None:
        self.bulk.visible = bool(self.table.selected)
        self.bulk_label.text = t("bulk.selected", n=len(self.table.selected))

    def _selected(self) -> tuple[list[int], str]:
        selected = self.table.selected
        names = ", ".join(r["name"] for r in selected[:8]) + (" …" if len(selected) > 8 else "")
        return [r["id"] for r in selected], names

    async def bulk_status(self, status: int) -> None:
        ids, names = self._selected()
        on = status == STATUS_ENABLED
        if await confirm(t("bulk.confirm_enable" if on else "bulk.confirm_disable", n=len(ids)),
                         t("bulk.enable" if on else "bulk.disable"), details=names):
            set_channels_status(self.state, ids, status)
            ui.notify(t("bulk.enabled" if on else "bulk.disabled", n=len(ids)), type="positive")
            self.refresh()

    async def bulk_delete(self) -> None:
        ids, names = self._selected()
        if await confirm(t("bulk.confirm_delete", n=len(ids)), t("common.delete"), danger=True, details=names):
            delete_channels(self.state, ids)
            ui.notify(t("bulk.deleted", n=len(ids)), type="positive")
            self.table.selected = []
            self.refresh()

    async def bulk_priority(self) -> None:
        ids, names = self._selected()
        with ui.dialog() as dialog, ui.card().classes("w-[26rem]"):
            ui.label(t("bulk.confirm_priority", n=len(ids))).classes("font-medium")
            ui.label(names).classes("text-sm opacity-70")
            value = priority_field(0).props("autofocus")
            with ui.row().classes("w-full justify-end"):
                ui.button(t("common.cancel"), on_click=lambda: dialog.submit(None)).props("flat")
                ui.button(t("common.apply"), on_click=lambda: value.validate() and dialog.submit(
                    value.value)).mark("confirm")
        priority = await dialog
        dialog.delete()
        if priority is not None:
            set_channels_priority(self.state, ids, int(priority))
            ui.notify(t("bulk.prioritised", n=len(ids), priority=int(priority)), type="positive")
            self.refresh()

    def on_priority(self, e: Any) -> None:
        route = self.state.routes.channels.get(int(e.args["id"]))
        priority = whole_number(e.args["value"])
        if route is None:
            return
        if priority is None:  # 2.5 must not quietly become 2
            ui.notify(t("ch.priority_invalid"), type="warning")
        elif priority != route.priority:
            set_channels_priority(self.state, [route.id], priority)
            ui.notify(t("ch.priority_saved", name=route.name, priority=priority), type="positive")
        self.refresh()

    def on_toggle(self, e: Any) -> None:
        route = self.state.routes.channels.get(int(e.args["id"]))
        set_channels_status(self.state, [int(e.args["id"])], STATUS_ENABLED if e.args["value"] else STATUS_DISABLED)
        ui.notify(t("ch.enabled_now" if e.args["value"] else "ch.disabled_now",
                    name=route.name if route else f"#{e.args['id']}"), type="info")
        self.refresh()

    def on_edit(self, e: Any) -> None:
        with shown_errors():
            ChannelDialog(self.state, get_channel(self.state, int(e.args)), self.refresh)

    def on_test(self, e: Any) -> None:
        with shown_errors() as refused:
            route = route_for_channel(self.state, int(e.args))
        if refused:
            return
        ModelTestPanel(self.state, [(route, route.offered)], t("test.title", name=route.name), self.refresh)

    async def on_retest(self, e: Any) -> None:
        """Retest an auto-disabled channel now: enabled again if it passes."""
        route = self.state.routes.channels.get(int(e.args))
        if route is None or route.status != STATUS_AUTO_DISABLED:
            self.refresh()
            return
        ui.notify(t("ch.retesting", name=route.name))
        results = await retest_auto_disabled(self.state, [route.id])
        if results and results[0]["enabled"]:
            ui.notify(t("ch.retest_passed", name=route.name), type="positive")
        elif results:
            provider = self.state.catalog.get(route.type)
            said = describe_test_failure(results[0]["test"], route.base_url,
                                         provider.default_base_url if provider else "")[0]
            ui.notify(t("ch.retest_failed", name=route.name, why=said), type="warning")
        self.refresh()

    async def on_delete(self, e: Any) -> None:
        route = self.state.routes.channels.get(int(e.args))
        if route and await confirm(t("ch.confirm_delete", name=route.name), t("common.delete"), danger=True):
            delete_channels(self.state, [route.id])
            ui.notify(t("ch.deleted", name=route.name))
            self.refresh()

    def test_all(self) -> None:
        routes = sorted(self.state.routes.channels.values(), key=lambda r: (-r.priority, r.id))
        targets = [(r, r.offered) for r in routes if r.enabled and r.offered]
        if not targets:
            ui.notify(t("test.nothing"), type="warning")
            return
        ModelTestPanel(self.state, targets, t("test.title_all"), self.refresh)


class MappingEditor:
    """Rows of "requested model → upstream model", with a JSON paste box for a mapping copied from elsewhere."""

    def __init__(self, mapping: dict[str, str], on_change: Callable[[], None] = lambda: None) -> None:
        self.on_change = on_change
        self.rows: list[tuple[Any, Any, Any]] = []  # (row, requested, upstream)
        with ui.expansion(t("ch.mapping"), icon="swap_horiz", value=bool(mapping)).classes(
                "w-full rounded-borders").style("border: 1px solid rgba(128,128,128,.35)").props(
                "dense") as self.expansion:
            ui.label(t("ch.mapping_hint")).classes("text-xs opacity-70")
            self.box = ui.column().classes("w-full gap-1")
            with ui.row().classes("gap-1"):
                ui.button(t("ch.mapping_add"), icon="add", on_click=lambda: self.add_row()).props(
                    "flat dense size=sm")
                ui.button(t("ch.mapping_paste"), icon="data_object", on_click=self.paste).props(
                    "flat dense size=sm")
        for src, dst in mapping.items():
            self.add_row(src, dst)

    def add_row(self, src: str = "", dst: str = "") -> None:
        with self.box, ui.row().classes("w-full items-center no-wrap gap-2") as row:
            left = ui.input(t("ch.map_from"), value=src, on_change=self._edited).props(
                "dense outlined hide-bottom-space").classes("grow").mark("map-from")
            ui.icon("arrow_forward").classes("text-muted")
            right = ui.input(t("ch.map_to"), value=dst, on_change=self._edited).props(
                "dense outlined hide-bottom-space").classes("grow").mark("map-to")
            ui.button(icon="delete", on_click=lambda: self.remove_row(row)).props("flat dense round")
        self.rows.append((row, left, right))

    def _edited(self, e: Any) -> None:
        e.sender.error = None
        self.on_change()

    def remove_row(self, row: Any) -> None:
        self.rows = [r for r in self.rows if r[0] is not row]
        row.delete()
        self.on_change()

    def values(self) -> dict[str, str]:
        return {a.value.strip(): b.value.strip() for _, a, b in self.rows if a.value.strip() and b.value.strip()}

    def incomplete(self) -> bool:
        """Whether a row has only one side; the empty side is marked."""
        for _, left, right in self.rows:
            left.error = t("v.required") if right.value.strip() and not left.value.strip() else None
            right.error = t("v.required") if left.value.strip() and not right.value.strip() else None
        if any(left.error or right.error for _, left, right in self.rows):
            self.expansion.open()
            return True
        return False

    def replace(self, mapping: dict[str, str]) -> None:
        for row, _, _ in list(self.rows):
            self.remove_row(row)
        for src, dst in mapping.items():
            self.add_row(src, dst)

    def paste(self) -> None:
        with _delete_on_close(ui.dialog()) as dialog, ui.card().classes("w-[32rem]"):
            ui.label(t("ch.mapping_paste")).classes("font-medium")
            text = ui.textarea(value=json.dumps(self.values(), ensure_ascii=False, indent=1),
                               placeholder='{"gpt-4o": "gpt-4o-2024-08-06"}').props(
                "outlined autogrow input-class=font-mono").classes("w-full").mark("mapping-json")

            def apply() -> None:
                try:
                    parsed = parse_mapping_json(text.value)
                except ApiError as exc:
                    text.error = exc.message
                    return
                self.replace(parsed)
                dialog.close()

            with ui.row().classes("w-full justify-end"):
                ui.button(t("common.cancel"), on_click=dialog.close).props("flat")
                ui.button(t("common.apply"), on_click=apply).mark("apply-json")
        dialog.open()


def choose_model_changes(current: list[str], listed: list[str], on_accept: Callable[[list[str]], None]) -> None:
    """The fetch-models diff: the provider's new models (checked) and the ones it no longer lists (unchecked, as
    removal is opt-in). Accepting hands the channel's new model list to `on_accept`."""
    new, gone = diff_models(current, listed)
    if not new and not gone:
        ui.notify(t("ch.fetch_same", n=len(listed)), type="positive")
        return
    with _delete_on_close(ui.dialog()) as dialog, ui.card().classes("w-[36rem] max-w-[96vw]"):
        ui.label(t("ch.fetch_title", n=len(listed))).classes("text-lg font-medium")
        add_boxes: list[Any] = []
        drop_boxes: list[Any] = []
        if new:
            ui.label(t("ch.fetch_new", n=len(new))).classes("font-medium text-positive")
            with ui.column().classes("gap-0 max-h-64 overflow-auto w-full"):
                add_boxes = [ui.checkbox(m, value=True) for m in new]
        if gone:
            ui.label(t("ch.fetch_gone", n=len(gone))).classes("font-medium text-negative")
            with ui.column().classes("gap-0 max-h-48 overflow-auto w-full"):
                drop_boxes = [ui.checkbox(m, value=False).mark("drop-model") for m in gone]

        def accept() -> None:
            drop = {b.text for b in drop_boxes if b.value}
            on_accept([m for m in current if m not in drop] + [b.text for b in add_boxes if b.value])
            dialog.close()

        with ui.row().classes("w-full justify-end"):
            ui.button(t("common.cancel"), on_click=dialog.close).props("flat")
            ui.button(t("ch.fetch_accept"), on_click=accept).mark("accept-diff")
    dialog.open()


class ChannelDialog:
    """Add (existing=None) or edit a channel. An untouched masked key keeps the stored key."""

    def __init__(self, state: AppState, existing: dict[str, Any] | None, on_saved: Callable[[], None]) -> None:
        self.state, self.existing, self.on_saved = state, existing, on_saved
        ch = self.ch = existing or {"type": 1, "name": "", "key": "", "base_url": "", "models": [],
                                    "model_mapping": {}, "priority": 0}
        self.masked = mask_key(ch["key"]) if existing else ""
        with _delete_on_close(ui.dialog().props("persistent")) as self.dialog, ui.card().classes(
                "w-[52rem] max-w-[96vw] gap-2"):
            with ui.row().classes("w-full items-center"):
                ui.label(t("ch.edit_title", name=ch["name"]) if existing else t("ch.add_title")).classes(
                    "text-xl font-semibold")
                ui.space()
                ui.button(icon="close", on_click=self.dialog.close).props("flat round dense")
            with ui.row().classes("w-full gap-3 items-start max-sm:flex-col"):
                with ui.column().classes("gap-0 grow basis-0 max-sm:w-full"):
                    self.provider = provider_select(state.catalog, ch["type"], self.provider_changed)
                    self.key_help = field_help()
                with ui.column().classes("gap-0 grow basis-0 max-sm:w-full"):
                    self.name = ui.input(t("ch.name"), value=ch["name"], on_change=self.name_changed, validation={
                        t("v.required"): lambda v: bool((v or "").strip())}).props("outlined").classes(
                        "w-full").mark("ch-name")
                    self.duplicate = field_help(classes="text-warning").mark("ch-duplicate")
            self.models = takes_typed_values(ui.select(model_choices(state.catalog, ch["type"], ch["models"]),
                                    value=list(ch["models"]), label=t("ch.models"), multiple=True,
                                    new_value_mode="add-unique", with_input=True,
                                    validation=lambda v: None if v or self.mapping.values() else t("v.models")).props(
                "outlined use-chips").classes("w-full").mark("ch-models"))
            self.models_help = field_help()
            with ui.row().classes("items-center gap-1 -mt-1"):
                ui.button(t("ch.models_all"), icon="playlist_add", on_click=lambda: self.set_models(
                    self.builtin(self.provider.value, current=True) + self.models.value)).props("flat dense size=sm")
                ui.button(t("ch.models_clear"), icon="clear_all", on_click=lambda: self.set_models([])).props(
                    "flat dense size=sm")
                self.fetch_button = ui.button(t("ch.fetch"), icon="cloud_download",
                                              on_click=self.fetch_models).props("flat dense size=sm").mark("fetch")
            self.mapping = MappingEditor(ch["model_mapping"])
            self.base_url = ui.input(t("ch.base_url"), value=ch["base_url"], validation=lambda v: None if not (
                v or "").strip() or re.match(r"^https?://", v.strip()) else t("v.url")).props(
                "outlined stack-label").classes("w-full").mark("ch-base-url")
            self.base_url_help = field_help()
            self.proxy_url, self.skip_tls = proxy_fields(ch.get("proxy_url") or "", bool(ch.get("skip_tls_verify")))
            self.request = RequestSettings(ch.get("config") or {})
            self.key = ui.textarea(t("ch.key"), value=self.masked, validation=lambda v: None if (
                v or "").strip() else t("v.required")).props(
                "outlined autogrow stack-label input-class=font-mono").classes("w-full").mark("ch-key")
            field_help(t("ch.key_edit_hint") if existing else t("ch.key_lines_hint"))
            self.priority = priority_field(ch["priority"]).classes("w-full").mark("ch-priority")
            field_help(t("ch.priority_hint"))
            with ui.row().classes("w-full items-center pt-2"):
                ui.button(t("ch.test_before"), icon="speed", on_click=self.test_before_saving).props("outline")
                ui.space()
                ui.button(t("common.cancel"), on_click=self.dialog.close).props("flat")
                ui.button(t("common.save"), icon="check", on_click=self.save).mark("save-channel")
        self.provider_changed()
        self.dialog.open()

    def name_changed(self) -> None:
        """Same-named channels are allowed (FastGPT does not check either), but rarely meant: say so."""
        name = (self.name.value or "").strip()
        taken = any(r.name == name and r.id != self.ch.get("id") for r in self.state.routes.channels.values())
        self.duplicate.text = t("ch.duplicate", name=name) if taken else ""

    def builtin(self, pid: int, current: bool = False) -> list[str]:
        """The provider's built-in models; `current`: without those already shut down."""
        models = [m for m, _ in self.state.catalog[pid].models] if pid in self.state.catalog else []
        data = model_data()
        return [m for m in models if not current or not ((i := data.info(m, pid)) is not None and i.is_retired())]

    def set_models(self, values: list[str]) -> None:
        values = clean_models(values)
        self.models.options = model_choices(self.state.catalog, self.provider.value, values)
        self.models.value = values
        self.models.update()

    def provider_changed(self) -> None:
        p = self.state.catalog.get(self.provider.value)
        if p is None:
            return
        self.models.options = model_choices(self.state.catalog, p.id, self.models.value or [])
        self.models.update()
        self.base_url.props["placeholder"] = p.default_base_url or t("ch.base_url_none")
        lang = session_language()
        self.base_url_help.text = provider_help(p, lang, "base_url") or (
            t("ch.base_url_hint", url=p.default_base_url) if p.default_base_url else t("ch.base_url_required"))
        self.key_help.text = provider_help(p, lang, "key")
        self.models_help.text = " ".join(filter(None, (provider_help(p, lang, "models"), t("ch.models_hint"))))

    def effective_key(self) -> str:
        value = (self.key.value or "").strip()
        return self.ch["key"] if self.existing and value == self.masked else value

    def collect(self, need_models: bool = True) -> ChannelIn | None:
        checks = [self.name.validate(), self.base_url.validate(), self.key.validate(), self.priority.validate(),
                  self.proxy_url.validate()]
        if need_models:
            checks.append(self.models.validate())
        incomplete = self.mapping.incomplete()
        if incomplete:
            ui.notify(t("v.mapping_row"), type="warning")
        config = self.request.config(self.ch.get("config") or {})
        if not all(checks) or incomplete or config is None:
            return None
        return ChannelIn(type=self.provider.value, name=self.name.value.strip(), key=self.effective_key(), config=config,
                         base_url=(self.base_url.value or "").strip(), models=list(self.models.value or []),
                         model_mapping=self.mapping.values(), priority=whole_number(self.priority.value) or 0,
                         proxy_url=unmasked(self.proxy_url.value, self.ch.get("proxy_url") or "", mask_proxy_url),
                         skip_tls_verify=bool(self.skip_tls.value))

    def save(self) -> None:
        data = self.collect()
        if data is None:
            return
        with shown_errors() as refused:
            if self.existing:
                update_channel(self.state, self.ch["id"], data)
                ui.notify(t("ch.saved", name=data.name), type="positive")
            else:
                ids = create_channels(self.state, [data])
                ui.notify(t("ch.added", name=data.name) if len(ids) == 1 else t(
                    "ch.added_many", n=len(ids), name=data.name), type="positive")
        if refused:
            return
        self.dialog.close()
        self.on_saved()

    def test_before_saving(self) -> None:
        data = self.collect()
        if data is None:
            return
        with shown_errors() as refused:
            route = preview_route(self.state, data)
        if refused:
            return
        ModelTestPanel(self.state, [(route, route.offered)], t("test.title_preview"), None, save=False,
                       autostart=True)

    async def fetch_models(self) -> None:
        data = self.collect(need_models=False)
        if data is None:
            return
        self.fetch_button.props("loading")  # busy for exactly as long as the provider takes
        with shown_errors() as refused:
            try:
                listed = await fetch_upstream_models(self.state, data)
            finally:
                self.fetch_button.props(remove="loading")
        if refused:
            return
        choose_model_changes(list(self.models.value or []), listed, self.set_models)


# ---- model tests: one panel for a channel, all channels, or unsaved settings ----


@dataclass
class _TestRow:
    route: ChannelRoute
    model: str
    box: Any  # the checkbox
    status: Any  # waiting / spinner / ✓ or ✗ with seconds
    detail: Any  # HTTP code, and what went wrong


class ModelTestPanel:
    """Check the models to test, start, and watch each row go waiting → spinner → ✓/✗ with seconds and the
    HTTP code. Runs in the click's own task, so the page stays responsive."""

    def __init__(self, state: AppState, targets: list[tuple[ChannelRoute, list[str]]], title: str,
                 on_done: Callable[[], None] | None, save: bool = True, autostart: bool = False) -> None:
        self.state, self.on_done, self.save = state, on_done, save
        self.running = False
        self.rows: list[_TestRow] = []
        many = len(targets) > 1
        with _delete_on_close(ui.dialog(), lambda: self.running) as self.dialog, ui.card().classes(
                "w-[48rem] max-w-[96vw] gap-2"):
            with ui.row().classes("w-full items-center"):
                ui.label(title).classes("text-lg font-semibold")
                ui.space()
                ui.button(icon="close", on_click=self.dialog.close).props("flat round dense")
            with ui.row().classes("w-full items-center gap-3 no-wrap"):
                self.everything = ui.checkbox(t("test.all"), value=True, on_change=lambda e: [
                    r.box.set_value(e.value) for r in self.rows]).classes("shrink-0 whitespace-nowrap")
                self.progress = ui.linear_progress(0, show_value=False).props("instant-feedback").classes("grow")
                self.counter = ui.label().classes("text-sm whitespace-nowrap")
            with ui.column().classes("w-full gap-0 max-h-[60vh] overflow-auto"):
                for route, models in targets:
                    for model in models:
                        self._add_row(route, model, f"{route.name} · {model}" if many else model)
            with ui.row().classes("w-full justify-end"):
                ui.button(t("common.close"), on_click=self.dialog.close).props("flat")
                self.start = ui.button(t("test.start"), icon="play_arrow", on_click=self.run).mark("start-test")
        self.counter.text = f"0 / {len(self.rows)}"
        self.dialog.open()
        if autostart:
            with self.dialog:
                ui.timer(0.05, self.run, once=True)

    def _add_row(self, route: ChannelRoute, model: str, label: str) -> None:
        with ui.row().classes("w-full items-start no-wrap gap-2 py-1 border-b border-gray-500/20"):
            box = ui.checkbox(value=True).props("dense").classes("pt-1")
            with ui.column().classes("grow min-w-0 gap-0"):
                ui.label(label).classes("font-mono text-sm break-all")  # long names wrap, never cut
                detail = ui.column().classes("w-full gap-0")
            status = ui.row().classes("items-center gap-1 shrink-0 no-wrap pt-1")
            with status:
                ui.icon("schedule").classes("text-muted")
                ui.label(t("test.waiting")).classes("text-xs text-muted")
        self.rows.append(_TestRow(route, model, box, status, detail))

    def show(self, row: _TestRow, result: dict[str, Any] | None) -> None:
        row.status.clear()
        with row.status:
            if result is None:
                ui.spinner(size="sm")
                ui.label(t("test.running")).classes("text-xs")
                return
            ok = result["success"]
            ui.icon("check_circle" if ok else "cancel", color="positive" if ok else "negative")
            ui.label(f"{result['took']:.2f} s").classes("text-sm font-medium").mark("test-took")
            if result.get("timeout"):
                ui.label(t("test.limit", limit=f"{result['timeout']:g}")).classes("text-xs text-muted").mark(
                    "test-limit")
        row.detail.clear()
        with row.detail:
            if ok:
                ui.label(f"HTTP {result['code']}").classes("text-xs text-muted")
                return
            provider = self.state.catalog.get(row.route.type)
            said, check = describe_test_failure(result, row.route.base_url,
                                                provider.default_base_url if provider else "")
            ui.label(said).classes("text-sm text-negative break-words").mark("test-failure")
            if check:
                ui.label(check).classes("text-sm").mark("test-hint")
            if result.get("response"):
                with ui.expansion(t("test.details")).props("dense dense-toggle").classes("text-xs w-full"):
                    ui.label(f"HTTP {result['code']}\n{result['response'][:2000]}").classes(
                        "font-mono text-xs whitespace-pre-wrap break-all").mark("test-raw")

    async def run(self) -> None:
        chosen = [r for r in self.rows if r.box.value]
        if not chosen:
            ui.notify(t("test.none_checked"), type="warning")
            return
        self.start.disable()
        self.everything.disable()
        self.running = True
        done, failed = 0, 0
        self.counter.text = f"0 / {len(chosen)}"
        self.progress.value = 0
        by_route: dict[int, list[_TestRow]] = collections.defaultdict(list)
        for row in chosen:
            self.show(row, None)
            by_route[id(row.route)].append(row)
        for group in by_route.values():
            by_model = {r.model: r for r in group}
            try:
                async for result in run_model_tests(self.state, group[0].route, list(by_model), save=self.save):
                    done += 1
                    failed += not result["success"]
                    if self.dialog.is_deleted:  # the page closed: the tests still finish and are saved
                        continue
                    self.show(by_model[result["model"]], result)
                    self.counter.text = f"{done} / {len(chosen)}"
                    self.progress.value = done / len(chosen)
            except ApiError as exc:
                if not self.dialog.is_deleted:
                    notify_error(exc)
        self.running = False
        if self.dialog.is_deleted:
            return
        ui.notify(t("test.summary", ok=done - failed, failed=failed), type="positive" if not failed else "warning")
        self.start.enable()
        self.everything.enable()
        if not self.dialog.value:  # closed while it ran
            self.dialog.delete()
        if self.on_done:
            self.on_done()


# ---- models ----

class ModelsTable:
    """Every model some channel offers: whether an enabled channel serves it, its switch, and each channel that
    offers it with that channel's last test."""

    def __init__(self, state: AppState, request: Request) -> None:
        self.state = state
        with ui.row().classes("items-center gap-3 w-full"):
            self.search = ui.input(placeholder=t("models.search"), on_change=self.refresh).props(
                "dense outlined clearable").classes("w-72")
            ui.label(t("models.hint")).classes("text-sm opacity-70")
        columns = [
            table_column("model", t("common.model"), sortable=True),
            table_column("kind", t("models.kind"), sortable=True),
            table_column("served", t("models.served"), sortable=True),
            table_column("channels", t("models.channels")),
            table_column("enabled", t("models.switch"), sortable=True),
        ]
        self.table = data_table(columns, "model", "models", pagination={"rowsPerPage": 50})
        for slot, template in _MODEL_SLOTS.items():
            self.table.add_slot(slot, template)
        self.table.on("toggle", self.on_toggle)
        self.refresh()

    def refresh(self) -> None:
        needle = (self.search.value or "").strip().lower()
        self.table.rows = [model_row(m) for m in list_models(self.state)
                           if not needle or needle in m["model"].lower() or needle in m["kind"]]

    def on_toggle(self, e: Any) -> None:
        save_model_config(self.state, e.args["model"], ModelConfigIn(enabled=bool(e.args["value"])))
        ui.notify(t("models.enabled_now" if e.args["value"] else "models.disabled_now", model=e.args["model"]))
        self.refresh()


# ---- logs ----

LOG_KINDS = {"all": None, "calls": False, "tests": True}  # the logs' filter → LogFilter.is_test
_LOG_SLOTS = {
    "body-cell-model": """<q-td :props="props">{{ props.row.model }}
        <q-badge v-if="props.row.is_test" outline color="primary" class="q-ml-xs">[[test]]</q-badge></q-td>""",
    "body-cell-duration": """<q-td :props="props">
        <span :class="props.row.slow ? 'text-negative font-medium' : ''">{{ props.row.duration }}</span></q-td>""",
    "body-cell-code": """<q-td :props="props">
        <q-badge :color="props.row.code === 200 ? 'positive' : 'negative'">{{ props.row.code }}</q-badge></q-td>""",
}


class LogsTable:
    """Call logs, newest first, filtered by time, channel, model, status and request ID; a click opens a row."""

    def __init__(self, state: AppState, request: Request) -> None:
        self.state, self.tz = state, display_tz()
        query = request.query_params
        self.logs_by_id: dict[int, dict[str, Any]] = {}
        with ui.row().classes("items-center gap-3 w-full"):
            self.span = TimeRange("yesterday", self.reset)
            channels = _channel_options(state, t("common.all_channels"))
            asked = int(query["channel"]) if query.get("channel", "").isdigit() else 0
            self.channel = ui.select(channels, value=asked if asked in channels else 0, label=t("common.channel"),
                                     on_change=self.reset).props("dense outlined").classes("w-48").mark(
                "filter-channel")
            model = query.get("model", "")
            self.model = takes_typed_values(ui.select(
                _model_options(state, t("common.all_models")), value=model if model in state.routes.known_models
                else "", label=t("common.model"), with_input=True, new_value_mode="add-unique",  # retired ones too
                on_change=self.reset).props("dense outlined").classes("w-48").mark("filter-model"))
            self.status = ui.toggle({"all": t("logs.all"), "success": t("logs.success"), "error": t("logs.error")},
                                    value="all", on_change=self.reset).props(_TOGGLE_PROPS).mark("filter-status")
            self.kind = ui.toggle({k: t(f"logs.kind_{k}") for k in LOG_KINDS}, value="all",
                                  on_change=self.reset).props(_TOGGLE_PROPS).mark("filter-kind")
            self.request_id = ui.input(t("logs.request_id"), value=query.get("request_id", ""),
                                       on_change=self.reset).props(
                "dense outlined clearable debounce=400").classes("w-56").mark("filter-request-id")
        with ui.row().classes("items-center gap-3 w-full"):
            self.total = ui.label().classes("font-medium").mark("logs-total")
            ui.space()
            ui.switch(t("logs.auto"), on_change=lambda e: setattr(self.timer, "active", e.value))
            ui.button(t("logs.export"), icon="download", on_click=self.export).props("outline dense")
            ui.button(icon="refresh", on_click=self.refresh).props("flat round dense").tooltip(t("logs.refresh"))
        columns = [  # endpoint, IP and the rest are in the row's detail: the list fits a 1440 px window
            table_column("time", t("logs.time")),
            dict(table_column("channel", t("common.channel")), classes="cell-wrap"),
            dict(table_column("model", t("common.model")), classes="cell-wrap"),
            table_column("code", t("logs.code"), align="right"),
            table_column("duration", t("logs.duration"), align="right"),
            table_column("ttfb", t("logs.ttfb"), align="right"),
            table_column("tokens", t("logs.tokens"), align="right"),
            table_column("cost", t("logs.cost"), align="right"),
            table_column("token", t("logs.key")),
            table_column("retries", t("logs.retries"), align="right"),
        ]
        self.table = data_table(columns, "id", "logs", pagination=0).classes("cursor-pointer fit-columns").props(
            "dense hide-bottom")
        for slot, template in _LOG_SLOTS.items():
            self.table.add_slot(slot, _tpl(template, test=t("logs.test_badge")))
        self.table.on("rowClick", self.on_row_click)
        with ui.row().classes("items-center gap-3 w-full justify-end"):
            ui.label(t("logs.per_page"))
            self.per_page = ui.select(list(LOG_PAGE_SIZES), value=LOG_PAGE_SIZES[0], on_change=self.reset).props(
                "dense outlined")
            self.pager = ui.pagination(1, 1, direction_links=True, on_change=self.refresh).props(
                "max-pages=7 boundary-links")
        self.timer = ui.timer(5, self.refresh, active=False)
        self.refresh()

    def current_filter(self) -> LogFilter:
        start, end = self.span.bounds()
        return LogFilter(start_ms=start, end_ms=end, model=self.model.value or "", channel=self.channel.value or None,
                         request_id=(self.request_id.value or "").strip(), code_type=self.status.value or "all",
                         is_test=LOG_KINDS.get(self.kind.value or "all"))

    def reset(self) -> None:
        """A changed filter starts again at page 1."""
        if self.pager.value != 1:
            self.pager.value = 1  # its on_change refreshes
        else:
            self.refresh()

    def refresh(self) -> None:
        load_in_background(self.table, self._load)

    async def _load(self) -> None:
        """The query runs in a thread (the event loop never waits for it), the table's progress bar shown."""
        per_page, self._asked = self.per_page.value, getattr(self, "_asked", 0) + 1
        asked = self._asked
        self.table.props("loading")
        try:
            rows, total = await asyncio.to_thread(query_logs, self.state.engine, self.current_filter(),
                                                  self.pager.value or 1, per_page)
        finally:
            if asked == self._asked:
                self.table.props(remove="loading")
        if asked != self._asked:
            return
        self.pager.max = max(1, -(-total // per_page))
        self.pager.update()
        self.total.text = t("logs.total", n=total)
        self.logs_by_id = {r["id"]: r for r in rows}
        self.table.rows = [self.row(r) for r in rows]

    def row(self, r: dict[str, Any]) -> dict[str, Any]:
        took = max(0, r["created_at"] - r["request_at"])
        mapped = r["actual_model"] and r["actual_model"] != r["model"]
        return {"id": r["id"], "time": format_ms(r["request_at"] or r["created_at"], self.tz),
                "duration": fmt_seconds(took), "slow": took > SLOW_CALL_SECONDS * 1000,
                "ttfb": fmt_seconds(r["ttfb_milliseconds"]) if r["ttfb_milliseconds"] else "–",
                "channel": log_channel_name(r, self.state.routes.channels.get(r["channel"])) or "–",
                "model": f"{r['model']} → {r['actual_model']}" if mapped else r["model"],
                "tokens": f"{r['prompt_tokens']} / {r['completion_tokens']}", "code": r["code"],
                "cost": fmt_cost(r.get("used_amount")),
                "token": r["token_name"], "retries": r["retry_times"], "is_test": r["is_test"]}

    async def export(self) -> None:
        note = ui.notification(t("logs.exporting"), spinner=True, timeout=None)  # every row, to a file in a thread
        try:
            path = await asyncio.to_thread(export_logs_file, self.state, self.current_filter(), self.tz)
        finally:
            note.dismiss()
        url = ng.add_static_file(local_file=path, single_use=True)  # an unguessable URL, served once
        ui.download.from_url(url, "aiproxy-logs.csv", "text/csv")

    def on_row_click(self, e: Any) -> None:
        row = self.logs_by_id.get(e.args[1]["id"]) if isinstance(e.args, list) and len(e.args) > 1 else None
        if row:
            LogDialog(self.state, row, self.tz)


class LogDialog:
    """One call: its timings, tokens, route and, for failed calls, the bodies."""

    def __init__(self, state: AppState, log: dict[str, Any], tz: ZoneInfo) -> None:
        with shown_errors() as refused:
            detail = log_detail(state, log["id"])
        if refused:
            return
        route = state.routes.channels.get(log["channel"])
        took = max(0, log["created_at"] - log["request_at"])
        if not log["channel"]:
            channel = t("logs.no_channel")  # refused or unroutable: no channel took it
        else:
            gone = "" if route else f", {t('logs.deleted')}"
            channel = f"{log_channel_name(log, route) or '?'} (#{log['channel']}{gone})"
        fields = [
            ("logs.request_id", log["request_id"]), ("logs.time", format_ms(log["request_at"], tz)),
            ("logs.done_at", format_ms(log["created_at"], tz)), ("logs.duration", fmt_seconds(took)),
            ("logs.ttfb", fmt_seconds(log["ttfb_milliseconds"]) if log["ttfb_milliseconds"] else ""),
            ("logs.code", str(log["code"])), ("common.channel", channel),
            ("common.model", log["model"]), ("logs.actual_model", log["actual_model"]),
            ("logs.endpoint", log["endpoint"]), ("logs.stream", "✓" if log["stream"] else "–"),
            ("logs.input", str(log["prompt_tokens"])), ("logs.output", str(log["completion_tokens"])),
            ("logs.cached", str(log["usage"]["cached_tokens"])),
            ("logs.cache_written", str(log["usage"].get("cache_creation_tokens") or 0)),
            ("logs.cost", fmt_cost(log["used_amount"]) if log["used_amount"] is not None else t("logs.cost_unknown")),
            ("logs.estimated", "✓" if log["usage_estimated"] else "–"),
            ("logs.key", log["token_name"]), ("IP", log["ip"]), ("logs.retries", str(log["retry_times"])),
        ]
        with _delete_on_close(ui.dialog()) as self.dialog, ui.card().classes("w-[56rem] max-w-[96vw] gap-3"):
            with ui.row().classes("w-full items-center"):
                ui.label(t("logs.detail_title")).classes("text-lg font-semibold")
                ui.badge(str(log["code"]), color="positive" if log["code"] == 200 else "negative")
                if log["is_test"]:
                    ui.badge(t("logs.test_call"), color="primary").props("outline")
                ui.space()
                ui.button(icon="close", on_click=self.dialog.close).props("flat round dense")
            with ui.grid().classes("w-full gap-x-4 gap-y-1 text-sm grid-cols-[auto_1fr] "
                                   "sm:grid-cols-[auto_1fr_auto_1fr]"):  # two columns of pairs, one on a phone
                for label, value in fields:
                    ui.label(t(label) if "." in label else label).classes("text-muted")
                    ui.label(value or "–").classes("break-all font-mono")
            if len(detail["attempts"]) > 1 or log["retry_times"] or any("skipped" in a for a in detail["attempts"]):
                names = {cid: r.name for cid, r in state.routes.channels.items()}
                self._trail(detail["attempts"], {log["channel"]: log["channel_name"], **names})
            if log["content"]:
                ui.label(t("logs.error_text")).classes("font-medium")
                ui.label(log["content"]).classes("text-negative text-sm break-all whitespace-pre-wrap").mark(
                    "log-error")
            self._bodies(detail)
        self.dialog.open()

    @staticmethod
    def _trail(attempts: list[dict[str, Any]], names: dict[int, str]) -> None:
        """The channels tried, in order: `backup (#3) → 429 (31 ms) · main (#5) → 200 (12 ms)`, and what each
        failed one said."""
        ui.label(t("logs.trail")).classes("font-medium")
        ui.label(format_trail(attempts, names)).classes("font-mono text-sm wrap-anywhere").mark("log-trail")
        for a in attempts:
            if a.get("error"):
                who = names.get(a["channel_id"]) or f"#{a['channel_id']}"
                ui.label(f"{who}: {a['error']}").classes("text-xs text-muted wrap-anywhere")

    @staticmethod
    def _bodies(detail: dict[str, Any]) -> None:
        for name in ("request", "response"):
            body = detail[f"{name}_body"]
            if body:
                ui.label(t(f"logs.{name}_body") + (t("logs.truncated") if detail[f"{name}_body_truncated"] else "")
                         ).classes("font-medium")
                try:
                    pretty, language = json.dumps(json.loads(body), indent=2, ensure_ascii=False), "json"
                except ValueError:
                    pretty, language = body, "text"
                ui.code(pretty, language=language).classes("w-full max-h-72 overflow-auto text-xs")
        if not detail["request_body"] and not detail["response_body"]:
            ui.label(t("logs.no_bodies")).classes("text-sm text-muted")


# ---- API keys ----


class TokensTable:
    """API keys for apps: create (the key is shown once), switch off, delete."""

    def __init__(self, state: AppState, request: Request) -> None:
        self.state, self.tz = state, display_tz()
        self.body = ui.context.slot.parent  # a dialog lives as long as the element it is created in
        with ui.row().classes("items-center gap-3"):
            ui.button(t("tok.create"), icon="add", on_click=lambda: TokenDialog(state, None, self.created)).mark(
                "create-token")
            ui.label(t("tok.hint")).classes("text-sm opacity-70")
        columns = [
            table_column("name", t("tok.name"), sortable=True),
            table_column("key", t("tok.key")),
            table_column("models", t("tok.models")),
            table_column("usage", t("tok.usage")),
            table_column("requests", t("ch.requests"), sortable=True, align="right"),
            table_column("expires", t("tok.expires")),
            table_column("enabled", t("ch.enabled")),
            table_column("actions", "", field="id", align="right"),
        ]
        self.table = table = data_table(columns, "id", "tokens", pagination={"rowsPerPage": 50})
        table.add_slot("body-cell-key", """<q-td :props="props"><span class="font-mono">{{ props.row.key }}</span>
            </q-td>""")
        table.add_slot("body-cell-usage", """<q-td :props="props"><div>{{ props.row.usage }}</div>
            <q-linear-progress v-if="props.row.share >= 0" :value="props.row.share" rounded size="6px"
              :color="props.row.share >= 0.9 ? 'negative' : 'primary'" style="min-width: 6rem" /></q-td>""")
        table.add_slot("body-cell-expires", """<q-td :props="props">
            <span :class="props.row.expired ? 'text-negative' : ''">{{ props.row.expires }}</span></q-td>""")
        table.add_slot("body-cell-enabled", """<q-td :props="props">
            <q-toggle :model-value="props.row.enabled" color="positive"
              @update:model-value="v => $parent.$emit('toggle', {id: props.row.id, value: v})" /></q-td>""")
        table.add_slot("body-cell-actions", _tpl("""<q-td :props="props" class="whitespace-nowrap">
            <q-btn flat dense round icon="edit" :aria-label="'[[edit]]'" @click="() => $parent.$emit('edit', props.row.id)">
            <q-tooltip>[[edit]]</q-tooltip></q-btn>
            <q-btn flat dense round icon="delete" color="negative" :aria-label="'[[delete]]'"
              @click="() => $parent.$emit('delete', props.row.id)"><q-tooltip>[[delete]]</q-tooltip></q-btn></q-td>""",
            delete=t("common.delete"), edit=t("common.edit")))
        self.empty = ui.label(t("tok.empty")).classes("opacity-70")
        table.on("edit", lambda e: TokenDialog(state, get_token(state, int(e.args)), lambda _: self.refresh()))
        table.on("toggle", self.on_toggle)
        table.on("delete", self.on_delete)
        self.refresh()

    def refresh(self) -> None:
        tokens = list_tokens(self.state)
        now = now_ms()
        self.table.rows = [{
            "id": k["id"], "name": k["name"], "key": mask_key(k["key"]), "requests": k["request_count"],
            "models": ", ".join(k["models"]) or t("tok.all_models"), "enabled": k["status"] == STATUS_ENABLED,
            "usage": t("tok.spend_of", used=fmt_cost(k["used_amount"]), quota=f"${k['quota']:g}") if k["quota"]
            else t("tok.spend_unlimited", used=fmt_cost(k["used_amount"])),
            "share": min(1.0, k["used_amount"] / k["quota"]) if k["quota"] else -1,
            "expires": format_ms(k["expired_at"], self.tz, "%Y-%m-%d %H:%M") if k["expired_at"] else t("tok.never"),
            "expired": bool(k["expired_at"]) and k["expired_at"] < now,
        } for k in tokens]
        self.empty.visible, self.table.visible = not tokens, bool(tokens)

    def created(self, token: dict[str, Any]) -> None:
        self.refresh()
        with self.body:  # not inside the closing create dialog
            show_new_key(token)

    def on_toggle(self, e: Any) -> None:
        with shown_errors():
            update_token(self.state, int(e.args["id"]),
                         TokenIn(status=STATUS_ENABLED if e.args["value"] else STATUS_DISABLED))
        self.refresh()

    async def on_delete(self, e: Any) -> None:
        token = next((r for r in self.table.rows if r["id"] == int(e.args)), None)
        if token and await confirm(t("tok.confirm_delete", name=token["name"]), t("common.delete"), danger=True,
                                   details=t("tok.delete_details")):
            delete_tokens(self.state, [token["id"]])
            self.refresh()


class TokenDialog:
    """Name, allowed models, quota and expiry of a new API key (existing=None), or of an existing one: saved
    with update_token(), the function behind PUT /api/tokens/{id}. The key itself never changes."""

    def __init__(self, state: AppState, existing: dict[str, Any] | None,
                 on_done: Callable[[dict[str, Any]], None]) -> None:
        self.state, self.existing, self.on_done, self.tz = state, existing, on_done, display_tz()
        tok = existing or {"name": "", "models": [], "quota": 0, "expired_at": 0}
        with _delete_on_close(ui.dialog()) as self.dialog, ui.card().classes("w-[34rem] max-w-[96vw] gap-2"):
            ui.label(t("tok.edit_title", name=tok["name"]) if existing else t("tok.create")).classes(
                "text-xl font-semibold")
            self.name = ui.input(t("tok.name"), value=tok["name"], validation={
                t("v.required"): lambda v: bool((v or "").strip())}).props("outlined autofocus").classes(
                "w-full").mark("tok-name")
            self.models = takes_typed_values(ui.select(
                sorted(set(state.routes.known_models) | set(tok["models"])), label=t("tok.models_allowed"),
                multiple=True, new_value_mode="add-unique", with_input=True, value=list(tok["models"])).props(
                "outlined use-chips").classes("w-full").mark("tok-models"))
            ui.label(t("tok.models_hint")).classes("text-xs opacity-70 -mt-1")
            self.quota = ui.number(t("tok.quota"), value=tok["quota"], min=0, precision=2).props(
                "outlined prefix=$").classes("w-48").mark("tok-quota")
            ui.label(t("tok.quota_hint")).classes("text-xs opacity-70 -mt-1")
            with ui.row().classes("items-center gap-2"):
                self.expires = ui.input(t("tok.expires"), value=format_ms(tok["expired_at"], self.tz, "%Y-%m-%d")
                                        if tok["expired_at"] else "").props(
                    "type=date outlined stack-label clearable").classes("w-48").mark("tok-expires")
                for days in (1, 30, 365):
                    ui.button(t("tok.plus_days", n=days), on_click=lambda d=days: self.expires.set_value(
                        format_ms(now_ms() + d * 86_400_000, self.tz, "%Y-%m-%d"))).props("flat dense size=sm")
                ui.button(t("tok.never"), on_click=lambda: self.expires.set_value("")).props("flat dense size=sm")
            with ui.row().classes("w-full justify-end"):
                ui.button(t("common.cancel"), on_click=self.dialog.close).props("flat")
                ui.button(t("common.save") if existing else t("tok.create_submit"), icon="check",
                          on_click=self.submit).mark("create-token-submit")
        self.dialog.open()

    def submit(self) -> None:
        if not self.name.validate():
            return
        day = local_input_to_ms(self.expires.value, self.tz)
        data = TokenIn(name=self.name.value.strip(), models=self.models.value, quota=self.quota.value or 0,
                       expired_at=day + 86_400_000 - 1 if day else 0)
        with shown_errors() as refused:
            if self.existing:
                token = update_token(self.state, self.existing["id"], data)
                ui.notify(t("tok.saved", name=token["name"]), type="positive")
            else:
                token = create_token(self.state, data)
        if refused:
            return
        self.on_done(token)
        self.dialog.close()


def show_new_key(token: dict[str, Any]) -> None:
    with _delete_on_close(ui.dialog().props("persistent")) as dialog, ui.card().classes(
            "w-[36rem] max-w-[96vw] gap-3"):
        ui.label(t("tok.created", name=token["name"])).classes("text-xl font-semibold")
        with ui.row().classes("items-center gap-2 w-full no-wrap p-3 rounded bg-orange-500/10"):
            ui.icon("warning", color="warning")
            ui.label(t("tok.once")).classes("text-sm")
        ui.input(value=token["key"]).props("readonly outlined input-class=font-mono").classes("w-full").mark(
            "new-key")
        with ui.row().classes("w-full justify-end"):
            copy_button(lambda: token["key"])
            ui.button(t("tok.done"), on_click=dialog.close)
    dialog.open()


# ---- settings ----


def connect_snippet(origin: str, key: str) -> str:
    """What FastGPT's .env and OpenAI-style apps need to reach this gateway."""
    return (f"# FastGPT (.env or docker-compose)\nAIPROXY_API_ENDPOINT={origin}\nAIPROXY_API_TOKEN={key}\n\n"
            f"# OpenAI-compatible apps and SDKs\nOPENAI_BASE_URL={origin}/v1\nOPENAI_API_KEY={key}")


class SettingsPage:
    """How apps connect, the admin key, the gateway's options and the display timezone."""

    def __init__(self, state: AppState, request: Request) -> None:
        self.state, self.user = state, ng.storage.user
        self.origin = str(request.base_url).rstrip("/")  # the address this browser used: it reaches the gateway
        self.revealed = False
        if state.port_moved_from:
            self._port_moved_card()
        self._connect_card()
        self._admin_key_card()
        self._gateway_card()
        self._display_card()

    def snippet(self, real: bool) -> str:
        return connect_snippet(self.origin, self.state.admin_key if real else mask_key(self.state.admin_key))

    def _connect_card(self) -> None:
        with ui.card().classes("w-full gap-2"):
            ui.label(t("set.connect")).classes("text-lg font-semibold")
            with ui.row().classes("items-center gap-2"):
                ui.label(t("set.base_url")).classes("opacity-70")
                ui.label(f"{self.origin}/v1").classes("font-mono font-medium").mark("base-url")
                copy_button(lambda: f"{self.origin}/v1").mark("copy-base-url")
            # shown masked, copied whole: a masked key pasted into FastGPT's .env cannot work (no ui.code, whose
            # own copy button copies what it shows)
            with ui.column().classes("w-full gap-0 rounded code-block"):
                with ui.row().classes("w-full items-center no-wrap px-3 pt-1"):
                    ui.label(t("set.snippet")).classes("text-xs text-muted")
                    ui.space()
                    copy_button(lambda: self.snippet(True)).mark("copy-snippet")
                self.code = ui.label(self.snippet(False)).classes(
                    "w-full font-mono text-sm whitespace-pre-wrap break-all px-3 pb-3").mark("snippet")
            ui.label(t("set.docker_hint")).classes("text-xs opacity-70")

    def _port_moved_card(self) -> None:
        """Said once (this run, the first after the default port moved), dismissed with "Got it"."""
        with ui.card().classes("w-full gap-2").props("flat bordered").mark("port-moved") as card:
            with ui.row().classes("items-center gap-2 no-wrap"):
                ui.icon("info", color="warning")
                ui.label(t("set.port_moved", old=self.state.port_moved_from, new=Settings.port)).classes("text-sm")

            def dismiss() -> None:
                self.state.port_moved_from = 0
                card.delete()

            ui.button(t("set.port_moved_ok"), on_click=dismiss).props("flat dense")

    def _admin_key_card(self) -> None:
        state = self.state
        with ui.card().classes("w-full gap-2"):
            ui.label(t("set.admin_key")).classes("text-lg font-semibold")
            with ui.row().classes("items-center gap-2 w-full"):
                self.key_label = ui.label(mask_key(state.admin_key)).classes("font-mono break-all").mark("admin-key")
                self.reveal = ui.button(t("set.reveal"), icon="visibility", on_click=self.toggle_reveal).props(
                    "flat dense")
                copy_button(lambda: state.admin_key).mark("copy-admin-key")
                ui.button(t("set.regenerate"), icon="autorenew", on_click=self.regenerate).props(
                    "flat dense color=negative")
            source = t("set.key_env") if state.settings.admin_key else t(
                "set.key_file", path=str(state.settings.data_path / "admin_key"))
            ui.label(source).classes("text-xs opacity-70")

    def _gateway_card(self) -> None:
        options, data = current_options(self.state), self.state.settings
        with ui.card().classes("w-full gap-2"):
            ui.label(t("set.gateway")).classes("text-lg font-semibold")
            with ui.row().classes("items-start gap-6"):
                self.retries = ui.number(t("set.retries"), value=options["retry_times"], min=0, max=10,
                                         precision=0).props("outlined").classes("w-56").mark("retries")
                self.retention = ui.number(t("set.retention"), value=options["log_retention_days"], min=0,
                                           precision=0).props("outlined").classes("w-56").mark("retention")
                ui.button(t("common.save"), icon="check", on_click=self.save_options).mark("save-options")
            ui.label(t("set.gateway_hint")).classes("text-xs opacity-70")
            db = str(data.data_path / "aiproxy.db") if not data.sql_dsn else t(
                "set.db_external", scheme=data.sql_dsn.split(":", 1)[0])
            with ui.grid(columns="auto 1fr").classes("gap-x-4 gap-y-1 text-sm"):
                ui.label(t("set.data_dir")).classes("opacity-70")
                ui.label(str(data.data_path)).classes("font-mono break-all")
                ui.label(t("set.database")).classes("opacity-70")
                ui.label(db).classes("font-mono break-all")
                ui.label(t("set.log_file")).classes("opacity-70")
                log = self.state.log_file
                ui.label(str(log) if log else t("set.log_console")).classes(
                    f"{'font-mono ' if log else ''}break-all").mark("log-file")
            if self.state.request_stop is not None:  # a served app (not the test plugin's)
                ui.button(t("set.stop"), icon="power_settings_new", on_click=self.stop).props(
                    "outline color=negative").mark("stop-gateway")

    def _display_card(self) -> None:
        from zoneinfo import available_timezones

        user = self.user
        with ui.card().classes("w-full gap-2"):
            ui.label(t("set.display")).classes("text-lg font-semibold")
            zones = {"": t("set.tz_browser", tz=user.get("browser_tz") or "UTC"),
                     **{z: z for z in sorted(available_timezones()) if "/" in z or z == "UTC"}}
            ui.select(zones, value=user.get("tz", "") if user.get("tz", "") in zones else "", label=t("set.tz"),
                      with_input=True, on_change=lambda e: self.set_tz(e.value)).props("outlined").classes(
                "w-full max-w-80")
            ui.label(t("set.tz_hint")).classes("text-xs opacity-70")

    def set_tz(self, value: str) -> None:
        self.user["tz"] = value or ""
        ui.notify(t("set.saved"), type="positive")

    def toggle_reveal(self) -> None:
        self.revealed = not self.revealed
        key = self.state.admin_key
        self.key_label.text = key if self.revealed else mask_key(key)
        self.code.text = self.snippet(self.revealed)
        self.reveal.text = t("set.hide" if self.revealed else "set.reveal")

    def save_options(self) -> None:
        with shown_errors() as refused:
            set_option(self.state, "retry_times", self.retries.value)
            set_option(self.state, "log_retention_days", self.retention.value)
        if refused:
            return
        ui.notify(t("set.saved"), type="positive")

    async def stop(self) -> None:
        """Ends the process as SIGTERM does: calls under way get the shutdown grace, the log is flushed."""
        details = t("set.stop_details", grace=f"{self.state.settings.shutdown_grace_seconds:g}")
        if not await confirm(t("set.stop_confirm"), t("set.stop"), danger=True, details=details):
            return
        logger.warning("stop requested from the web UI")
        ui.notify(t("set.stopping"), type="warning", multi_line=True, timeout=0)
        self.state.request_stop()

    async def regenerate(self) -> None:
        state = self.state
        details = t("set.regen_details") + (" " + t("set.regen_env") if state.settings.admin_key else "")
        if not await confirm(t("set.regen_confirm"), t("set.regenerate"), danger=True, details=details):
            return
        new_key = rotate_admin_key(state)
        self.user["auth"] = _key_fingerprint(new_key)  # this session stays; every other one has to log in again
        self.revealed = False
        self.toggle_reveal()  # show the new key
        ui.notify(t("set.regenerated"), type="positive", multi_line=True)


# ==== 19. Migrate wizard: the UI of section 16's import =====================================================
# Each source it reads from is one row of MIGRATE_SOURCES; section 16 does the reading and the writing.

MIGRATE_UPLOAD_DIR = "imports"  # uploaded database copies, kept in the data dir beside our own database
_SQLITE_MAGIC = b"SQLite format 3\0"  # the first 16 bytes of every SQLite database file
_SOURCE_STATUS = {0: "enabled", 1: "enabled", 2: "disabled", 3: "auto_disabled"}  # one-api's channels.status
_AIPROXY_STATUS = {1: "enabled", 2: "disabled"}  # aiproxy's; a config.yaml entry without one is not served
_MIGRATE_SLOTS = {
    "body-cell-status": """<q-td :props="props">
        <span :class="props.row.status === 'enabled' ? 'text-positive' : 'text-orange-9'">{{ props.row.status_label }}
        </span></q-td>""",
    "body-cell-action": """<q-td :props="props">
        <q-badge :color="{imported: 'positive', exists: 'blue-grey-5', skipped: 'orange-9'}[props.row.action]">
          {{ props.row.action_label }}</q-badge></q-td>""",
    "body-cell-notes": """<q-td :props="props" style="white-space: normal; min-width: 16rem; max-width: 34rem">
        <div v-if="props.row.reason" class="text-orange-9">{{ props.row.reason }}</div>
        <div v-for="w in props.row.warnings.split('\\n').filter(x => x)" :key="w" class="text-xs opacity-80">⚠ {{ w }}</div>
        </q-td>""",
}


@dataclass(frozen=True)
class MigrateKind:
    """One way to reach a source: an address with a separate password field, or a file (a path or an upload)."""

    label: str  # i18n key
    examples: tuple[str, ...]
    file: bool = False


@dataclass(frozen=True)
class MigrateSource:
    """A tab of the import wizard. Every callable gets the address the fields describe (password included) and
    runs in a thread; each failure is an ApiError whose message the wizard shows without the password."""

    tab: str  # i18n keys, from here to upload_hint
    title: str
    intro: str
    address: str  # the address field's label
    path: str  # the path field's label, for file kinds
    upload: str
    upload_hint: str
    kinds: dict[str, MigrateKind]
    flavours: dict[str, str]  # the report's "flavour" → the name shown
    probe: Callable[[str], tuple[str, str, int, int]]  # connection test: (address shown, flavour, channels, keys)
    preview: Callable[[AppState, str], tuple[dict[str, Any], list[dict[str, Any]]]]  # dry run: (report, rows)
    run: Callable[[AppState, str, bool], dict[str, Any]]  # the import (tokens too when True): its report


def split_dsn_password(text: str) -> tuple[str, str]:
    """`user:pw@…` → (`user@…`, `pw`) in the URL and go-sql-driver forms, so the password can move to its own
    field. Anything else, or a split that would change which database is meant, comes back unchanged."""
    text = (text or "").strip()
    try:
        before = parse_source_dsn(text)
    except ApiError:
        return text, ""
    if not before.password:
        return text, ""
    scheme, sep, rest = text.partition("://")
    head, rest = (scheme + sep, rest) if sep else ("", text)
    creds, _, host = rest.rpartition("@")
    stripped = f"{head}{creds.partition(':')[0]}@{host}"
    try:
        after = parse_source_dsn(stripped)
    except ApiError:
        return text, ""
    same = not after.password and after.url.set(password=before.password) == before.url
    return (stripped, before.password) if same else (text, "")


def dsn_with_password(dsn: str, password: str) -> str:
    """The DSN the importer reads: the password field wins over a password typed into the DSN."""
    dsn, inline = split_dsn_password(dsn)
    password = password or inline
    if not password:
        return dsn
    src = parse_source_dsn(dsn)
    return dsn if src.kind == "sqlite" else src.url.set(password=password).render_as_string(hide_password=False)


def migrate_preview(state: AppState, dsn: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The dry-run report (tokens included, so the tokens checkbox needs no second run) and the source's channel
    rows, for the columns the report leaves out: models and status. Blocking: run it in a thread."""
    report = import_source(state, dsn, dry_run=True, import_tokens=True)
    return report, read_source(parse_source_dsn(dsn)).channels


def migrate_preview_rows(report: dict[str, Any], channels: list[dict[str, Any]],
                         catalog: dict[int, Provider], lang: str) -> list[dict[str, Any]]:
    """One table row per source channel: what it is there, what it becomes here, and what the import does."""
    aiproxy = report["flavour"] == "aiproxy"
    types = {} if aiproxy else load_oneapi_types()[report["flavour"]]
    source = {str(c.get("id", "")): c for c in channels}
    rows = []
    for r in report["rows"]:
        raw = source.get(r["source_id"], {})
        models = _names(_json_field(raw.get("models"), list, "", [])) if aiproxy else split_models(raw.get("models"))
        provider = catalog.get(r["type"]) if r.get("type") is not None else None
        try:
            status = int(raw.get("status") or 0)
        except (TypeError, ValueError):
            status = -1
        if aiproxy:  # aiproxy's type ids are ours; its own name for them, as the source shows it
            type_name = getattr(catalog.get(r["source_type"]), "name", None) or raw.get("type_name") or "?"
        else:
            type_name = types.get(str(r["source_type"]), {}).get("name", "?")
        rows.append({
            "id": r["source_id"], "name": r["name"], "provider": provider_name(provider, lang) if provider else "–",
            "source_type": f"{type_name} · {r['source_type']}",
            "models": "\n".join(models[:4]), "more": max(0, len(models) - 4),
            "status": (_AIPROXY_STATUS if aiproxy else _SOURCE_STATUS).get(status, "other"), "action": r["status"],
            "reason": r.get("reason", ""), "warnings": "\n".join(r["warnings"]),
        })
    return rows


def migrate_test_targets(state: AppState, channels: list[dict[str, Any]]) -> list[tuple[ChannelRoute, list[str]]]:
    """One model per imported channel (its first chat model, as one-api tests the first one): enough to tell
    which channels work, without paying for every model of every channel."""
    targets = []
    for ch in channels:
        route = state.routes.channels.get(ch["id"])
        names = ch["models"] + [m for m in ch["model_mapping"] if m not in ch["models"]]
        if route and names:
            targets.append((route, [next((m for m in names if state.routes.kind_of(m) == "chat"), names[0])]))
    return targets


def _is_sqlite_file(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(len(_SQLITE_MAGIC)) == _SQLITE_MAGIC


def _is_aiproxy_config(path: Path) -> bool:
    try:
        read_aiproxy_yaml(path)
    except ApiError:
        return False
    return True


def _probe_source(dsn: str) -> tuple[str, str, int, int]:
    src = parse_source_dsn(dsn)
    data = read_source(src, with_tokens=True)
    return src.safe, data.flavour, len(data.channels), len(data.tokens)


def _preview_source(state: AppState, dsn: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    report, channels = migrate_preview(state, dsn)
    return report, migrate_preview_rows(report, channels, state.catalog, session_language())


def _report_table_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Report rows of API keys or model configs -> the wizard's small tables (name, action, notes)."""
    return [{"id": r["source_id"], "name": r["name"], "action": r["status"],
             "action_label": t(f"migrate.action_{r['status']}"), "reason": r.get("reason", ""),
             "warnings": "\n".join(r["warnings"])} for r in rows]


def _counts(part: dict[str, Any]) -> dict[str, int]:
    return {k: part[k] for k in ("imported", "exists", "skipped")}


def _run_source(state: AppState, dsn: str, tokens: bool) -> dict[str, Any]:
    return import_source(state, dsn, dry_run=False, import_tokens=tokens)


_FLAVOURS = {"oneapi": "OneAPI", "newapi": "new-api", "aiproxy": "labring/aiproxy"}  # each tab detects them all


MIGRATE_SOURCES: tuple[MigrateSource, ...] = (
    MigrateSource(
        tab="migrate.oneapi_tab", title="migrate.title", intro="migrate.intro", address="migrate.dsn",
        path="migrate.path", upload="migrate.upload", upload_hint="migrate.upload_hint",
        kinds={"mysql": MigrateKind("migrate.kind_mysql", ("root:pw@tcp(127.0.0.1:3306)/oneapi",
                                                           "mysql://user:pass@host:3306/db")),
               "postgres": MigrateKind("migrate.kind_postgres", ("postgres://user:pass@host:5432/db",)),
               "sqlite": MigrateKind("migrate.kind_sqlite", ("/path/to/one-api.db",), file=True)},
        flavours=_FLAVOURS, probe=_probe_source, preview=_preview_source, run=_run_source),
    MigrateSource(  # issue 12: FastGPT's docker-compose runs aiproxy on its own PostgreSQL
        tab="migrate.aiproxy_tab", title="migrate.aiproxy_title", intro="migrate.aiproxy_intro",
        address="migrate.aiproxy_dsn", path="migrate.aiproxy_path", upload="migrate.aiproxy_upload",
        upload_hint="migrate.aiproxy_upload_hint",
        kinds={"postgres": MigrateKind("migrate.kind_postgres", (  # the compose file's SQL_DSN, then from the host
                   "postgres://postgres:aiproxy@fastgpt-aiproxy-pg:5432/aiproxy",
                   "postgres://postgres:aiproxy@127.0.0.1:5433/aiproxy")),
               "file": MigrateKind("migrate.kind_aiproxy_file", ("/path/to/config.yaml", "/path/to/aiproxy.db"),
                                   file=True)},
        flavours=_FLAVOURS, probe=_probe_source, preview=_preview_source, run=_run_source),
)


class MigrateWizard:
    """1 source → 2 preview (a dry run) → 3 import → 4 summary, with a test of the imported channels. Source
    reads run in a thread, so the page stays live. The address with its password lives only in this page's
    memory: never in a URL, a notification or a log."""

    def __init__(self, state: AppState, request: Request) -> None:
        self.state = state
        self.uploads = state.settings.data_path / MIGRATE_UPLOAD_DIR
        self.source = MIGRATE_SOURCES[0]
        self.target, self.report, self.ids, self.busy = "", None, [], False  # the last preview's address/report
        with ui.tabs(value="0", on_change=self._source_changed).props("dense no-caps align=left").classes(
                "w-full") as self.tabs:
            for index, source in enumerate(MIGRATE_SOURCES):
                ui.tab(str(index), t(source.tab))
        with ui.column().classes("w-full gap-0"):
            self.title = ui.label().classes("text-xl font-semibold")
            self.intro = ui.label().classes("text-sm opacity-70")
        with ui.stepper().props("flat bordered").classes("w-full").mark("migrate-stepper") as self.stepper:
            self._source_step()
            self._preview_step()
            self._import_step()
            self._summary_step()
        self._source_changed()

    # ---- the steps ----

    def _source_step(self) -> None:
        with ui.step("source", title=t("migrate.step_source"), icon="storage"):
            self.kind = ui.toggle({}, on_change=self._kind_changed).props(
                "no-caps unelevated toggle-color=primary").mark("migrate-kind")
            with ui.column().classes("w-full max-w-3xl gap-2") as self.server_box:
                self.dsn = ui.input().props("outlined clearable input-class=font-mono").classes("w-full").mark(
                    "migrate-dsn")
                self.dsn.on("blur", self.move_password)
                self.password = ui.input(t("migrate.password"), password=True).props(
                    "outlined autocomplete=new-password").classes("w-80").mark("migrate-password")
                self.examples = ui.label().classes("text-xs opacity-70 font-mono whitespace-pre-line")
            with ui.column().classes("w-full max-w-3xl gap-2") as self.file_box:
                self.path = ui.input().props("outlined clearable input-class=font-mono").classes("w-full").mark(
                    "migrate-path")
                with ui.row().classes("w-full items-start gap-4"):
                    self.upload = ui.upload(auto_upload=True, max_files=1, on_upload=self.uploaded).props(
                        "flat bordered").classes("w-80").mark("migrate-upload")
                    self.picker = ui.select({}, label=t("migrate.pick"), on_change=lambda e: self.path.set_value(
                        e.value) if e.value else None).props("outlined").classes("w-80").mark("migrate-pick")
                self.upload_hint = ui.label().classes("text-xs opacity-70 break-all")
            with ui.row().classes("items-center gap-2"):
                self.test_button = ui.button(t("migrate.test"), icon="cable", on_click=self.test_connection).props(
                    "outline").mark("migrate-test")
                self.preview_button = ui.button(t("migrate.to_preview"), icon="arrow_forward",
                                                on_click=self.preview).mark("migrate-to-preview")
                self.spinner = ui.spinner(size="md")
                self.spinner.visible = False
            self.connection = ui.row().classes("items-center gap-2 p-3 rounded bg-green-500/10").mark(
                "migrate-connection")

    def _preview_step(self) -> None:
        with ui.step("preview", title=t("migrate.step_preview"), icon="fact_check"):
            self.preview_head = ui.label().classes("text-sm").mark("migrate-preview-head")
            self.report_notes = ui.column().classes("w-full gap-1").mark("migrate-notes")
            columns = [
                table_column("id", "#"),
                table_column("name", t("ch.name")),
                table_column("source_type", t("migrate.source_type")),
                table_column("provider", t("migrate.target")),
                table_column("models", t("ch.models")),
                table_column("status", t("migrate.status"), field="status_label"),
                table_column("action", t("migrate.action"), field="action_label"),
                table_column("notes", t("migrate.notes"), field="reason"),
            ]
            self.preview_table = data_table(columns, "id", "migrate-preview", pagination={"rowsPerPage": 20})
            for slot, template in (("body-cell-models", channel_slot("body-cell-models")),
                                   *_MIGRATE_SLOTS.items()):
                self.preview_table.add_slot(slot, template)
            self.with_tokens = ui.checkbox(on_change=self._tokens_changed).mark("migrate-tokens")
            self.token_table = data_table([columns[1], columns[6], columns[7]], "id", "migrate-token-preview",
                                          pagination={"rowsPerPage": 10}).props("dense")
            for slot in ("body-cell-action", "body-cell-notes"):
                self.token_table.add_slot(slot, _MIGRATE_SLOTS[slot])
            self.config_head = ui.label().classes("text-sm font-medium").mark("migrate-config-head")
            self.config_table = ui.table(columns=[columns[1], columns[6], columns[7]], rows=[], row_key="id",
                                         pagination={"rowsPerPage": 10}).classes("w-full").props(
                "flat bordered dense").mark("migrate-config-preview")
            for slot in ("body-cell-action", "body-cell-notes"):
                self.config_table.add_slot(slot, _MIGRATE_SLOTS[slot])
            with ui.row().classes("items-center gap-2"):
                ui.button(t("migrate.back"), icon="arrow_back",
                          on_click=lambda: self.stepper.set_value("source")).props("flat")
                self.import_button = ui.button(t("migrate.do_import"), icon="download",
                                               on_click=self.do_import).mark("migrate-import")
                self.nothing_new = ui.label(t("migrate.nothing_new")).classes("text-sm opacity-70")

    def _import_step(self) -> None:
        with ui.step("import", title=t("migrate.step_import"), icon="downloading"):
            with ui.row().classes("items-center gap-3"):
                ui.spinner(size="lg")
                self.importing = ui.label().classes("text-base")
            ui.linear_progress(show_value=False).props("indeterminate").classes("w-full max-w-xl")
            ui.label(t("migrate.importing_hint")).classes("text-xs opacity-70")

    def _summary_step(self) -> None:
        with ui.step("summary", title=t("migrate.step_summary"), icon="task_alt"):
            self.counts: dict[str, Any] = {}
            with ui.row().classes("gap-3"):
                for name, icon, color in (("imported", "add_circle", "positive"), ("exists", "check_circle", "grey"),
                                          ("skipped", "block", "warning")):
                    with ui.card().classes("gap-1 p-4 min-w-[10rem]"):
                        with ui.row().classes("items-center gap-2"):
                            ui.icon(icon, size="xs", color=color)
                            ui.label(t(f"migrate.count_{name}")).classes("text-sm opacity-70")
                        self.counts[name] = ui.label("0").classes("text-2xl font-semibold").mark(
                            f"migrate-count-{name}")
            self.token_summary = ui.label().classes("text-sm").mark("migrate-token-summary")
            self.config_summary = ui.label().classes("text-sm").mark("migrate-config-summary")
            ui.label(t("migrate.imported_channels")).classes("font-medium")
            self.done_table = data_table([
                table_column("id", "ID"),
                table_column("name", t("ch.name")),
                table_column("provider", t("ch.provider")),
                table_column("models", t("ch.models")),
                table_column("enabled", t("migrate.status"), field="status_label"),
                table_column("test", t("ch.last_test")),
            ], "id", "migrate-imported", pagination={"rowsPerPage": 20})
            for slot in ("body-cell-name", "body-cell-models", "body-cell-test"):
                self.done_table.add_slot(slot, channel_slot(slot))
            self.works = ui.label().classes("font-medium").mark("migrate-works")
            with ui.column().classes("w-full gap-1") as self.skipped_box:
                ui.label(t("migrate.skipped_rows")).classes("font-medium")
                self.skipped_list = ui.column().classes("w-full gap-1").mark("migrate-skipped")
            with ui.row().classes("items-center gap-2"):
                self.test_imported = ui.button(t("migrate.test_imported"), icon="speed",
                                               on_click=self.test_channels).mark("migrate-run-tests")
                ui.button(t("migrate.open_channels"), icon="hub",
                          on_click=lambda: ui.navigate.to("/channels")).props("outline")
                ui.button(t("migrate.again"), icon="restart_alt", on_click=self.restart).props("flat")

    # ---- step 1: the source ----

    def _source_changed(self) -> None:
        self.source = source = MIGRATE_SOURCES[int(self.tabs.value or 0)]
        self.title.text, self.intro.text = t(source.title), t(source.intro)
        self.dsn.props["label"], self.path.props["label"] = t(source.address), t(source.path)
        self.upload.props["label"] = t(source.upload)
        self.upload_hint.text = t(source.upload_hint, dir=str(self.uploads))
        self.kind.options = {k: t(kind.label) for k, kind in source.kinds.items()}
        self.kind.update()
        self.kind.value = next(iter(source.kinds))
        self.restart()
        self._kind_changed()

    def _kind_changed(self) -> None:
        kind = self.source.kinds.get(self.kind.value)
        if kind is None:
            return
        self.server_box.visible, self.file_box.visible, self.connection.visible = not kind.file, kind.file, False
        if kind.file:
            self.path.props["placeholder"] = kind.examples[0]
            self.refresh_picker()
        else:
            self.examples.text = "\n".join((t("migrate.examples"), *kind.examples))
            self.dsn.props["placeholder"] = kind.examples[0]

    def _is_file(self) -> bool:
        return self.source.kinds[self.kind.value].file

    def move_password(self) -> None:
        """A password pasted inside the DSN goes to the password field, out of sight."""
        stripped, inline = split_dsn_password(self.dsn.value or "")
        if inline:
            self.dsn.value, self.password.value = stripped, inline
            ui.notify(t("migrate.password_moved"))

    def scrub(self, message: str) -> str:
        try:
            inline = parse_source_dsn(self.dsn.value or "").password
        except ApiError:
            inline = ""
        for secret in (self.password.value or "", inline):
            message = scrub_secret(message, secret)
        return message

    def resolve(self) -> str | None:
        """The address the fields describe; None after marking an empty field or notifying an unreadable DSN."""
        field = self.path if self._is_file() else self.dsn
        text = (field.value or "").strip()
        field.error = None if text else t("v.required")
        if not text:
            return None
        try:
            return text if self._is_file() else dsn_with_password(text, self.password.value or "")
        except ApiError as exc:
            ui.notify(self.scrub(exc.message), type="negative", multi_line=True)
            return None

    async def work(self, job: Callable[[], Any]) -> Any:
        """Run a blocking source read or import in a thread, with the buttons locked; None if it failed."""
        buttons = (self.test_button, self.preview_button, self.import_button)
        self.busy = True
        for button in buttons:
            button.disable()
        self.spinner.visible = True
        try:
            return await asyncio.to_thread(job)
        except ApiError as exc:
            ui.notify(self.scrub(exc.message), type="negative", multi_line=True)
            return None
        finally:
            self.busy = False
            for button in buttons:
                button.enable()
            self.spinner.visible = False
            self.show_import_button()

    async def test_connection(self) -> None:
        target = None if self.busy else self.resolve()
        if not target:
            return
        found = await self.work(lambda: self.source.probe(target))
        if found is None:
            return
        shown, flavour, channels, tokens = found
        self.connection.clear()
        with self.connection:
            ui.icon("check_circle", color="positive", size="sm")
            ui.label(t("migrate.connected", source=shown, flavour=self.source.flavours.get(flavour, flavour),
                       channels=channels, tokens=tokens)).classes("break-all")
        self.connection.visible = True

    async def uploaded(self, e: Any) -> None:
        name = re.sub(r"[^\w.-]", "_", e.file.name).lstrip(".")[:100] or "upload.db"
        target = self.uploads / name
        part = target.with_name(name + ".part")
        self.uploads.mkdir(mode=0o700, parents=True, exist_ok=True)
        await e.file.save(part)
        self.upload.reset()
        config = name.lower().endswith(_YAML_SUFFIXES)  # aiproxy's config.yaml: read as YAML, by its name
        if not (_is_aiproxy_config(part) if config else _is_sqlite_file(part)):
            part.unlink(missing_ok=True)
            ui.notify(t("migrate.not_config" if config else "migrate.not_sqlite", name=name), type="negative")
            return
        part.chmod(0o600)  # the copy holds the source's API keys
        part.replace(target)
        self.refresh_picker()
        self.picker.value = str(target)
        ui.notify(t("migrate.uploaded", name=name), type="positive")

    def refresh_picker(self) -> None:
        files = sorted((p for p in self.uploads.glob("*") if p.is_file() and p.suffix != ".part"),
                       key=lambda p: -p.stat().st_mtime) if self.uploads.is_dir() else []
        self.picker.options = {str(p): f"{p.name} · {p.stat().st_size / 1024:,.0f} KB" for p in files}
        self.picker.update()

    # ---- step 2: the preview ----

    async def preview(self) -> None:
        target = None if self.busy else self.resolve()
        if not target:
            return
        found = await self.work(lambda: self.source.preview(self.state, target))
        if found is None:
            return
        report, rows = found
        self.target, self.report = target, report
        for row in rows:
            row["status_label"] = t(f"migrate.status_{row['status']}")
            row["action_label"] = t(f"migrate.action_{row['action']}")
        self.preview_table.rows = rows
        self.preview_head.text = t("migrate.preview_head", source=report["source"],
                                   flavour=self.source.flavours.get(report["flavour"], report["flavour"]),
                                   n=len(rows), imported=report["imported"], exists=report["exists"],
                                   skipped=report["skipped"])
        self.token_table.rows = _report_table_rows(report["tokens"]["rows"])
        self.report_notes.clear()
        with self.report_notes:
            for note in report.get("notes", []):
                ui.label(f"ⓘ {note}").classes("text-sm opacity-80")
        configs = report.get("model_configs")
        self.config_table.rows = _report_table_rows(configs["rows"]) if configs else []
        self.config_head.text = t("migrate.config_head", **_counts(configs)) if configs else ""
        self.config_head.visible = self.config_table.visible = bool(self.config_table.rows)
        self.with_tokens.text = t("migrate.with_tokens", n=len(self.token_table.rows))
        self.with_tokens.enabled = bool(self.token_table.rows)
        self.with_tokens.value = False
        self._tokens_changed()
        self.stepper.value = "preview"

    def _tokens_changed(self) -> None:
        self.token_table.visible = bool(self.with_tokens.value)
        self.show_import_button()

    def show_import_button(self) -> None:
        report = self.report
        new = bool(report) and bool(report["imported"] or (self.with_tokens.value and report["tokens"]["imported"])
                                    or report.get("model_configs", {}).get("imported"))
        self.import_button.set_enabled(new and not self.busy)
        self.nothing_new.visible = bool(report) and not new

    # ---- steps 3 and 4: the import and its summary ----

    async def do_import(self) -> None:
        if self.busy or not self.target:
            return
        target, tokens = self.target, bool(self.with_tokens.value)
        self.importing.text = t("migrate.importing", source=self.report["source"])
        self.stepper.value = "import"
        result = await self.work(lambda: self.source.run(self.state, target, tokens))
        if result is None:
            self.stepper.value = "preview"
            return
        self.ids = [i for r in result["rows"] if r["status"] == "imported" for i in r["channel_ids"]]
        self.show_summary(result)
        self.stepper.value = "summary"
        ui.notify(t("migrate.done", n=len(self.ids)), type="positive")

    def show_summary(self, result: dict[str, Any]) -> None:
        for name, label in self.counts.items():
            label.text = str(result[name])
        tokens = result.get("tokens")
        self.token_summary.text = t("migrate.token_counts", **_counts(tokens)) if tokens else t("migrate.no_tokens")
        configs = result.get("model_configs")
        self.config_summary.text = t("migrate.config_counts", **_counts(configs)) if configs else ""
        skipped = [(t("common.channel"), r) for r in result["rows"] if r["status"] == "skipped"]
        skipped += [(t("migrate.token"), r) for r in (tokens or {}).get("rows", []) if r["status"] == "skipped"]
        self.skipped_list.clear()
        with self.skipped_list:
            for what, r in skipped:
                with ui.row().classes("items-baseline gap-2 no-wrap"):
                    ui.label(f"{what} #{r['source_id']} {r['name']}").classes("text-sm font-medium whitespace-nowrap")
                    ui.label(r.get("reason", "")).classes("text-sm text-orange-9")
        self.skipped_box.visible = bool(skipped)
        self.test_imported.set_enabled(bool(self.ids))
        self.refresh_imported()

    def imported_channels(self) -> list[dict[str, Any]]:
        if not self.ids:
            return []
        return select_channels(self.state.engine, [Channel.id.in_(self.ids)], order=Channel.id)[0]

    def refresh_imported(self) -> None:
        rows = [channel_row(ch, self.state.catalog, session_language()) for ch in self.imported_channels()]
        for row in rows:
            row["status_label"] = t("migrate.status_enabled" if row["enabled"] else "migrate.status_disabled")
        self.done_table.rows = rows
        tested = [r for r in rows if r["test"]]
        self.works.text = t("migrate.works", ok=sum(r["test_ok"] for r in tested), n=len(tested)) if tested else ""

    def test_channels(self) -> None:
        targets = migrate_test_targets(self.state, self.imported_channels())
        if not targets:
            ui.notify(t("migrate.nothing_to_test"), type="warning")
            return
        ModelTestPanel(self.state, targets, t("migrate.test_title", n=len(targets)), self.refresh_imported,
                       autostart=True)

    def restart(self) -> None:
        self.target, self.report, self.ids = "", None, []
        self.connection.visible = False
        self.show_import_button()
        self.stepper.value = "source"


# ==== 20. App assembly & CLI ================================================================================


RETENTION_CHECK_SECONDS = 3600
RETEST_OFF_POLL_SECONDS = 60  # with retests off, how often to look whether the option turned them on
SHARED_VERSION_POLL_SECONDS = 1.0  # another instance's change is seen within about a second (issue 10: 2 s)
GC_GEN0_THRESHOLD = 20_000  # CPython's 700 runs a collection every few requests under load


_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})
CORS_MAX_AGE = b"600"  # seconds a browser may reuse a preflight answer


def _csv(text: str) -> list[str]:
    return [part.strip().lower() for part in text.split(",") if part.strip()]


def _host_name(value: bytes) -> str:
    """A Host header without its port: `[::1]:3000` is `[::1]`, `Localhost:3000` is `localhost`."""
    text = value.decode("latin-1").strip().lower()
    return text[:text.find("]") + 1] if text.startswith("[") else text.partition(":")[0]


def _preflight_headers(origin: bytes, methods: bytes, scope: Scope) -> list[tuple[bytes, bytes]]:
    asked = next((v for k, v in scope["headers"] if k == b"access-control-request-headers"), b"")
    headers = [(b"access-control-allow-origin", origin), (b"access-control-allow-methods", methods),
               (b"access-control-max-age", CORS_MAX_AGE), (b"vary", b"Origin")]
    return headers + ([(b"access-control-allow-headers", asked)] if asked else [])


async def _answer_preflight(send: Send, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


def _with_headers(send: Send, extra: list[tuple[bytes, bytes]]) -> Send:
    async def sending(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message = dict(message, headers=[*message.get("headers", ()), *extra])
        await send(message)
    return sending


class Gateway:
    """The ASGI entry: /v1 and /v1beta go straight to the relay (no framework, no middleware), the rest to FastAPI.
    Bound to loopback, it answers only requests for a loopback name (or ALLOWED_HOSTS): a web page whose name
    an attacker points at 127.0.0.1 (DNS rebinding) reaches nothing. Browsers may call /v1 from any origin,
    with a key and no cookie; /api only from the origins in CORS_ORIGINS."""

    def __init__(self, api: FastAPI, state: AppState) -> None:
        self.api, self.state = api, state
        settings = state.settings
        self.hosts = (LOOPBACK_HOSTS | set(_csv(settings.allowed_hosts))) if is_loopback(settings.host) else None
        self.api_origins = frozenset(o.encode() for o in _csv(settings.cors_origins))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            host = origin = None
            for name, value in scope["headers"]:
                if name == b"host":
                    host = value
                elif name == b"origin":
                    origin = value
            if self.hosts is not None and host is not None and _host_name(host) not in self.hosts:
                return await self._refuse_host(scope, receive, send, _host_name(host))
        if scope["type"] == "websocket" and is_relay_path(scope["path"]):
            return await _refuse_websocket(scope, receive, send)
        if scope["type"] == "http":
            path = scope["path"]
            if path == "/" and scope["method"] == "HEAD":  # Claude Code's reachability check, UI or not
                return await send_bytes(send, 200, b"", "text/plain; charset=utf-8", "")
            if path == "/metrics":
                return await serve_metrics(self.state, scope, send)
            if is_relay_path(path):
                if origin is not None:  # a browser: any origin may call with a key (no cookie is ever read)
                    if scope["method"] == "OPTIONS":
                        return await _answer_preflight(send, _preflight_headers(b"*", b"GET, POST, OPTIONS", scope))
                    send = _with_headers(send, [(b"access-control-allow-origin", b"*"),
                                                (b"access-control-expose-headers", b"x-request-id")])
                return await self._relay(scope, receive, send)
            if path.startswith("/api/"):
                if origin is not None and origin.lower() in self.api_origins:
                    if scope["method"] == "OPTIONS":
                        return await _answer_preflight(send, _preflight_headers(
                            origin, b"GET, POST, PUT, PATCH, DELETE, OPTIONS", scope))
                    send = _with_headers(send, [(b"access-control-allow-origin", origin), (b"vary", b"Origin")])
                scope = _normalise_api_scope(scope)
                if scope["method"] in _BODY_METHODS:
                    receive = await self._api_body(scope, receive, send)
                    if receive is None:
                        return
        await self.api(scope, receive, send)

    async def _api_body(self, scope: Scope, receive: Receive, send: Send) -> Receive | None:
        """The admin key, then the size limit, before a byte of the body is read (FastAPI would read it whole
        before any dependency runs): returns a receive that replays the body, or None once refused."""
        try:
            state = require_admin(Request(scope), self.state)
            body = await read_body(receive, state.settings.api_max_body_mib,
                                   dict(scope["headers"]).get(b"content-length"), "API_MAX_BODY_MIB")
        except (ApiError, RelayError) as exc:
            await api_error(exc.message, exc.status, getattr(exc, "retry_after", 0) or 0)(scope, receive, send)
            return None
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return replay

    async def _refuse_host(self, scope: Scope, receive: Receive, send: Send, host: str) -> None:
        message = (f"Host '{host}' is not served here: bound to {self.state.settings.host}, aiproxy-local answers "
                   f"localhost, 127.0.0.1 and [::1]; add other names to ALLOWED_HOSTS.")
        path = scope["path"]
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "host not allowed"})
        elif is_relay_path(path):
            error = RelayError(403, message, "host_not_allowed", "permission_error")
            dialect = dialect_for_path(path, scope.get("method", "GET"))
            await send_bytes(send, 403, dialect.error_body(error), "application/json", "")
        elif path.startswith("/api"):
            await api_error(message, 403)(scope, receive, send)
        else:
            await send_bytes(send, 403, message.encode(), "text/plain; charset=utf-8", "")

    async def _relay(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracked(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await relay(self.state, scope, receive, tracked)
        except Exception:  # a bug must still answer in the client's shape, never as a bare traceback
            logger.exception("relay failed")
            if not started:  # once an answer has started its status is out: the connection just ends
                error = RelayError(500, "Internal error in aiproxy-local; see its log.", "internal_error",
                                   "aiproxy_error")
                await send_bytes(send, 500, dialect_for_path(scope["path"], scope["method"]).error_body(error),
                                 "application/json", "")


async def _refuse_websocket(scope: Scope, receive: Receive, send: Send) -> None:
    """A WebSocket upgrade on a relay path (Codex tries /v1/responses over WebSocket first) gets 426 Upgrade
    Required in the path's error shape, on which Codex falls back to HTTP at once (a 404 or 405 costs it
    retries). A server without ASGI's websocket.http.response extension can only close (403)."""
    await receive()  # websocket.connect
    if "websocket.http.response" not in scope.get("extensions", {}):
        return await send({"type": "websocket.close", "code": 1008})
    error = RelayError(426, "This gateway serves the API over HTTP only: send the request without a WebSocket "
                            "upgrade.", "upgrade_required")
    await send({"type": "websocket.http.response.start", "status": 426,
                "headers": [(b"content-type", b"application/json"), (b"upgrade", b"HTTP/1.1")]})
    await send({"type": "websocket.http.response.body", "body": dialect_for_path(scope["path"]).error_body(error)})


def _normalise_api_scope(scope: dict) -> dict:
    """aiproxy registers "/api/channels/" and clients send both forms: accept every path either way. Bodies are
    JSON even when a client (curl -d) labels them as a form."""
    path = scope["path"]
    if path.endswith("/") and len(path) > 5:
        path = path.rstrip("/")
        scope = dict(scope, path=path, raw_path=path.encode())
    headers = scope["headers"]
    if scope["method"] in ("POST", "PUT") and not any(
            k == b"content-type" and not v.startswith(b"application/x-www-form-urlencoded") for k, v in headers):
        scope = dict(scope, headers=[(k, v) for k, v in headers if k != b"content-type"]
                     + [(b"content-type", b"application/json")])
    return scope


@contextlib.asynccontextmanager
async def lifespan(api: FastAPI) -> AsyncIterator[None]:
    state = get_state()
    state.loop = asyncio.get_running_loop()
    state.http = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=1000, limit_per_host=0, ttl_dns_cache=300, enable_cleanup_closed=True),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=state.settings.connect_timeout,
                                      sock_read=state.settings.ttfb_timeout),
        auto_decompress=True, trust_env=False)  # proxies: see upstream_proxy()
    state.upstream = UpstreamPool(state.settings.connect_timeout, state.settings.ttfb_timeout)
    if not state.settings.no_journal:
        state.writer.open_journal(state.settings.data_path / JOURNAL_DIR)
    state.writer.start()
    janitor = asyncio.create_task(_retention_loop(state))
    follower = asyncio.create_task(_follow_shared_version(state))
    health = [asyncio.create_task(watch_hangups(state)), asyncio.create_task(_retest_loop(state))]
    # Everything built so far lives as long as the process: keep it out of the collector's scans, and collect
    # young objects less often. Both cut the rare multi-ms pauses that make up a relay's p99 (bench/ S1).
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 20, 20)
    release_free_memory()
    try:
        yield
    finally:
        janitor.cancel()
        follower.cancel()
        for task in health:
            task.cancel()
        await state.writer.stop()  # every answered request keeps its log row
        await state.http.close()
        state.upstream.close()
        for session in list(state.socks.values()):
            await session.close()


def release_free_memory() -> None:
    """Hand the memory start-up freed back to the OS (glibc keeps it otherwise): compiling this file when it is
    run as a script, building the UI and the first database work leave tens of MB free but resident."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)


async def _follow_shared_version(state: AppState) -> None:
    """Reload when another instance on this database changed channels, tokens, model configs or options."""
    failing = False
    while True:
        await asyncio.sleep(SHARED_VERSION_POLL_SECONDS)
        try:
            if await asyncio.to_thread(read_shared_version, state.engine) != state.version:
                await asyncio.to_thread(refresh_routes, state)
            failing = False
        except sa.exc.SQLAlchemyError as exc:
            if not failing:  # once per outage, not every second
                logger.warning("cannot read the shared version (%s); retrying every second", _first_line(exc))
            failing = True


async def _retest_loop(state: AppState) -> None:
    """Every CHANNEL_RETEST_INTERVAL s, a model test of each auto-disabled channel; never dies."""
    while True:
        interval = state.channel_retest_interval
        await asyncio.sleep(interval or RETEST_OFF_POLL_SECONDS)  # 0: off, until the option changes
        if not state.channel_retest_interval:
            continue
        try:
            await retest_auto_disabled(state)
        except (sa.exc.SQLAlchemyError, RelayError, OSError, ValueError) as exc:
            logger.error("retest of auto-disabled channels failed (%s); next try in %d s", _first_line(exc), interval)


async def _retention_loop(state: AppState) -> None:
    """Never dies: a bad value or a database error is logged, and the next round tries again."""
    while True:
        try:
            days = state.log_retention_days
            if days > 0:  # a huge value keeps everything, rather than a cut-off no database can compare
                cutoff = max(0, now_ms() - days * 86_400_000)
                # the logs' summaries go with them; SQLite's file gives the freed pages back (section 2)
                await asyncio.to_thread(delete_logs_before, state.engine, cutoff)
                await asyncio.to_thread(delete_stored_responses_before, state.engine, cutoff)
            await asyncio.to_thread(prune_summaries, state.engine)  # per-minute rows after a few days
        except (ValueError, TypeError, OverflowError, sa.exc.SQLAlchemyError) as exc:
            logger.error("log retention failed (%s); next try in %d s", _first_line(exc), RETENTION_CHECK_SECONDS)
        await asyncio.sleep(RETENTION_CHECK_SECONDS)


def _install_error_handlers(api: FastAPI) -> None:
    @api.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return api_error(exc.message, exc.status, exc.retry_after)

    @api.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return api_error(invalid_request_message(exc.errors()), 400)

    @api.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path.startswith("/api"):
            return api_error(str(exc.detail), exc.status_code)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    @api.exception_handler(sa.exc.SQLAlchemyError)
    async def _db(_request: Request, exc: sa.exc.SQLAlchemyError) -> JSONResponse:
        logger.exception("database error", exc_info=exc)
        return api_error(f"database error: {type(exc).__name__}", 500)


# ---- the admin UI, mounted last (its "/" mount shadows the routes after it) ----

PAGES: tuple[tuple[str, PageBuilder, str, str], ...] = (  # path, builder, icon, i18n key: routes and navigation
    ("/dashboard", DashboardPage, "insights", "nav.dashboard"),  # the first is also "/"
    ("/channels", ChannelsTable, "hub", "nav.channels"),
    ("/models", ModelsTable, "category", "nav.models"),
    ("/logs", LogsTable, "receipt_long", "nav.logs"),
    ("/tokens", TokensTable, "vpn_key", "nav.tokens"),
    ("/migrate", MigrateWizard, "move_down", "nav.migrate"),
    ("/settings", SettingsPage, "settings", "nav.settings"),
)


def mount_ui(api: FastAPI, state: AppState) -> None:
    """Attach the NiceGUI admin UI to `api` (last, because its '/' mount shadows later routes)."""
    global ui, ng
    if "nicegui" not in sys.modules:  # per-browser storage belongs in the data dir, not in the current directory
        os.environ.setdefault("NICEGUI_STORAGE_PATH", str(state.settings.data_path / "ui-storage"))
    from nicegui import app as ng, ui  # noqa: F811

    load_strings()
    ui.add_head_html(_COPY_JS, shared=True)
    ui.add_css(_THEME_CSS, shared=True)
    ui.button.default_props("no-caps")
    ui.page("/login")(page_login)
    for path, builder, _, key in PAGES:
        ui.page(path)(_guarded(builder, key))
    ui.page("/")(_guarded(PAGES[0][1], PAGES[0][3]))
    if os.environ.get("NICEGUI_USER_SIMULATION"):
        # NiceGUI's test plugin enters only NiceGUI's own lifespan: run the engine's (HTTP session, log writer) in it
        engine_lifespan = lifespan(api)
        ng.on_startup(engine_lifespan.__aenter__)
        ng.on_shutdown(lambda: engine_lifespan.__aexit__(None, None, None))
    secret, _ = load_or_create_secret(state.settings.data_path / "storage_secret")
    ui.run_with(api, mount_path="/", storage_secret=secret, show_welcome_message=False, title="aiproxy-local",
                favicon="🔀")


def create_app(settings: Settings) -> Gateway:
    global _STATE
    prepare_data_dir(settings)
    if settings.admin_key:
        admin_key, created = settings.admin_key, False
    else:
        admin_key, created = load_or_create_secret(settings.data_path / "admin_key")
    engine = make_engine(settings.dsn)
    create_schema(engine)
    state = AppState(settings=settings, engine=engine, catalog=load_catalog(), admin_key=admin_key,
                     admin_key_created=created)
    state.local_secret, _ = load_or_create_secret(settings.data_path / LOCAL_SECRET_FILE)
    refresh_routes(state)
    state.writer = LogWriter(engine, state.responses)
    _STATE = state

    api = FastAPI(title="aiproxy-local", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None, redirect_slashes=False)
    api.state.aiproxy = state  # what the admin routes' dependencies read
    _install_error_handlers(api)
    api.include_router(public_router)
    api.include_router(admin_router)

    @api.get(LOGIN_LINK_PATH, include_in_schema=False)
    def login_link(request: Request) -> JSONResponse:
        """A fresh one-time login link, for a second start of the app on this machine (it opens the browser
        here): only for a loopback caller that read this data dir's local_secret."""
        offered = request.headers.get(LOCAL_SECRET_HEADER, "").encode()
        client = request.client.host if request.client else ""
        if not (is_loopback(settings.host) and is_loopback(client) and state.local_secret
                and secrets.compare_digest(offered, state.local_secret.encode())):
            return api_error("Only a local start of aiproxy-local with this data directory may ask for a login link.",
                             403)
        token = issue_login_token(state)
        return JSONResponse({"success": True, "message": "", "data": {"url": login_url(settings, token)}})

    @api.api_route("/api/{rest:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"], include_in_schema=False)
    def api_not_found(rest: str) -> JSONResponse:
        return api_error(f"no such admin route: /api/{rest}", 404)

    if not settings.no_ui:
        mount_ui(api, state)
    return Gateway(api, state)


# ---- serving: a bounded shutdown ----

FORCED_EXIT_SECONDS = 3.0  # after a second signal: the last log flush gets this long; the journal keeps the rest


class GatewayServer(uvicorn.Server):
    """uvicorn's server with a bounded shutdown. On SIGTERM or Ctrl+C, calls under way get
    SHUTDOWN_GRACE_SECONDS; what still runs then is named in the log and cancelled, and the log is flushed. A
    second signal (uvicorn alone honours only a second Ctrl+C) stops waiting at once."""

    def handle_exit(self, sig: int, frame: Any) -> None:
        # not re-raised after the shutdown (uvicorn would): a Ctrl+C then ends quietly, without a traceback
        if self.should_exit and not self.force_exit:
            self.force_exit = True
            watchdog = threading.Timer(FORCED_EXIT_SECONDS, os._exit, [1])  # whatever hangs, the process ends
            watchdog.daemon = True
            watchdog.start()
        self.should_exit = True

    def _calls_under_way(self) -> str:
        calls = [f"{c.cycle.scope['method']} {c.cycle.scope['path']}" for c in self.server_state.connections
                 if getattr(c, "cycle", None) is not None and not c.cycle.response_complete]
        return f"{len(calls)} call(s) under way" + (f" ({', '.join(calls)})" if calls else "")

    async def _wait_tasks_to_complete(self) -> None:
        try:
            await super()._wait_tasks_to_complete()
        except asyncio.CancelledError:  # the grace is over
            logger.warning("shutdown: %s after %g s are cancelled", self._calls_under_way(),
                           self.config.timeout_graceful_shutdown)
            raise

    async def shutdown(self, sockets: list[Any] | None = None) -> None:
        await super().shutdown(sockets)
        if self.force_exit:  # uvicorn then skips the app's shutdown: run it anyway, which writes the log rows
            logger.warning("shutdown: second signal, stopping now; %s are cut off", self._calls_under_way())
            try:
                await asyncio.wait_for(self.lifespan.shutdown(), FORCED_EXIT_SECONDS / 2)
            except asyncio.TimeoutError:
                logger.warning("shutdown: the log journal keeps the rows not written; the next start writes them")


def _quiet_shutdown_cancels(record: logging.LogRecord) -> bool:
    """Calls cancelled by the shutdown are named once, by GatewayServer: not again by uvicorn, nor as a
    traceback per call."""
    cancelled = record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError)
    return not cancelled and not str(record.msg).startswith("Cancel %s running task")


def _local_url(settings: Settings) -> str:
    """Where this machine reaches the gateway: an all-interfaces bind is reached on loopback."""
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    return f"http://{f'[{host}]' if ':' in host else host}:{settings.port}"


LOGIN_LINK_PATH = "/api/local/login-link"
LOCAL_SECRET_HEADER = "x-aiproxy-local-secret"


def login_url(settings: Settings, token: str) -> str:
    return f"{_local_url(settings)}/login?token={token}" if token else f"{_local_url(settings)}/"


def _banner(state: AppState, token: str = "") -> str:
    s = state.settings
    url = _local_url(s)
    lines = [f"aiproxy-local {__version__} is running", f"  web UI and admin API : {url}",
             f"  OpenAI base URL      : {url}/v1", f"  data directory       : {s.data_path}"]
    if token:
        lines.append(f"  log in once with     : {login_url(s, token)}  (the browser opening now uses it)")
    if state.log_file:
        lines.append(f"  log file             : {state.log_file}")
    if state.admin_key_created:
        lines += ["", "  A new admin key was generated (saved to admin_key in the data directory):",
                  f"      {state.admin_key}", "  Use it to log in, and as AIPROXY_API_TOKEN in FastGPT."]
        token = state.admin_key  # shown whole this once, as above
    elif s.admin_key:
        lines.append("  admin key            : from ADMIN_KEY")
        token = mask_key(state.admin_key) + "   (masked: your ADMIN_KEY)"
    else:
        lines.append(f"  admin key            : {mask_key(state.admin_key)} (in {s.data_path / 'admin_key'})")
        token = mask_key(state.admin_key) + "   (masked: the key is in admin_key, and on the Settings page)"
    lines += ["", "  FastGPT (.env), ready to paste:", f"      AIPROXY_API_ENDPOINT={url}",
              f"      AIPROXY_API_TOKEN={token}"]
    if s.host not in ("127.0.0.1", "localhost", "::1"):
        lines.append(f"  WARNING: listening on {s.host}: anyone who can reach this port can try the admin key.")
    if state.port_moved_from:
        lines += ["", f"  NOTE: {port_moved_text(state.port_moved_from)}"]
    return "\n".join(lines)


def check_admin_key(state: AppState) -> None:
    """A weak admin key (weak_admin_key) is a clear warning on a loopback bind; on any other bind the gateway does
    not start, unless told to accept the risk (--allow-weak-admin-key or AIPROXY_ALLOW_WEAK_ADMIN_KEY=1)."""
    settings = state.settings
    weakness = weak_admin_key(state.admin_key)
    if not weakness:
        return
    where = "ADMIN_KEY" if settings.admin_key else str(settings.data_path / "admin_key")
    advice = (f"Use 16 or more random characters (from {where}), or remove it to have a strong one generated "
              f"(`python -c \"import secrets; print(secrets.token_urlsafe(32))\"` makes one).")
    if is_loopback(settings.host):
        print(f"WARNING: the admin key is weak: {weakness}. {advice}", file=sys.stderr, flush=True)
    elif settings.allow_weak_admin_key:
        print(f"WARNING: the admin key is weak ({weakness}) and {settings.host} is reachable from other machines; "
              f"started anyway, as --allow-weak-admin-key / AIPROXY_ALLOW_WEAK_ADMIN_KEY asks.", file=sys.stderr,
              flush=True)
    else:
        sys.exit(f"aiproxy-local: refusing to listen on {settings.host} with a weak admin key: {weakness}, and "
                 f"anyone who can reach this port can try to guess it. {advice} To start anyway, accepting the "
                 f"risk: --allow-weak-admin-key or AIPROXY_ALLOW_WEAK_ADMIN_KEY=1.")


def bind_listener(settings: Settings) -> socket.socket:
    """The listening socket, bound before anything else starts, so a second start fails before it opens the
    database or prints that it runs."""
    sock = socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a restart needs no wait
    try:
        sock.bind((settings.host, settings.port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def is_aiproxy_local(url: str) -> bool:
    """Whether `url` answers /api/status as this app does (aiproxy's own has no version)."""
    try:
        with urllib.request.urlopen(f"{url}/api/status", timeout=3) as answer:
            data = json.loads(answer.read()).get("data") or {}
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(data, dict) and "startTime" in data and "version" in data


def login_link_from(settings: Settings) -> str:
    """A fresh one-time login link from the instance running on this port, if it shares this data dir (its
    local_secret proves that); else its plain address."""
    url = _local_url(settings)
    try:
        secret = (settings.data_path / LOCAL_SECRET_FILE).read_text().strip()
        request = urllib.request.Request(f"{url}{LOGIN_LINK_PATH}", headers={LOCAL_SECRET_HEADER: secret})
        with urllib.request.urlopen(request, timeout=5) as answer:
            link = json.loads(answer.read())["data"]["url"]
        return link if isinstance(link, str) and link.startswith(f"{url}/") else f"{url}/"
    except (OSError, ValueError, KeyError, TypeError):
        return f"{url}/"


def _port_taken(settings: Settings, error: OSError) -> None:
    url = _local_url(settings)
    if is_aiproxy_local(url):
        print(f"aiproxy-local is already running at {url}/", flush=True)
        if not settings.no_browser:
            webbrowser.open(login_link_from(settings))
        sys.exit(0)
    sys.exit(f"aiproxy-local: cannot listen on {settings.host}:{settings.port} ({error.strerror}): another "
             f"program uses it. Choose another port with --port or AIPROXY_PORT.")


# ---- without a console: the log goes to a file in the data dir ----

LOG_FILE = "aiproxy-local.log"
LOG_FILE_BYTES = 5 * MIB  # then one older file is kept beside it


def has_console() -> bool:
    """Whether someone can read what the app prints: not so for a packaged app started by a double-click or the
    app menu (no stdout at all on Windows and macOS; on Linux no terminal on any of its streams)."""
    streams = (sys.stdin, sys.stdout, sys.stderr)
    if sys.stdout is None or sys.stderr is None:
        return False
    if getattr(sys, "frozen", False):
        return any(stream is not None and stream.isatty() for stream in streams)
    return True


def log_to_file(settings: Settings) -> Path:
    """Warnings and errors (ours, uvicorn's, NiceGUI's) to <data dir>/aiproxy-local.log, and to stderr if any.
    Keys and login tokens are never logged, so the file holds none."""
    from logging.handlers import RotatingFileHandler

    path = settings.data_path / LOG_FILE
    handler = RotatingFileHandler(path, maxBytes=LOG_FILE_BYTES, backupCount=1, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    if sys.stderr is not None:
        root.addHandler(logging.StreamHandler(sys.stderr))
    root.setLevel(logging.WARNING)
    return path


# ---- `aiproxy-local pack`: the packaged app, with nicegui-pack (PyInstaller) ----

APP_NAME = "aiproxy-local"


def pack_command(platform: str = sys.platform) -> list[str]:
    """nicegui-pack's arguments: one file (an .exe on Windows), an .app bundle on macOS; no console window on
    Windows and macOS (the UI has "Stop the gateway", and the log goes to the data dir)."""
    command = [sys.executable, "-m", "nicegui.scripts.pack", "--name", APP_NAME, "--noconfirm",
               "--add-data", f"{ASSETS_DIR}{os.pathsep}assets"]
    if platform in ("win32", "darwin"):
        command.append("--windowed")
    if platform != "darwin":  # PyInstaller's .app bundles are one directory
        command.append("--onefile")
    return command + [str(Path(__file__).resolve())]


def pack(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="aiproxy-local pack", description=(
        "Build dist/aiproxy-local (.exe on Windows, .app on macOS) with nicegui-pack (PyInstaller), assets/ inside; "
        "PyInstaller's work files go to build/ and aiproxy-local.spec in the current directory. "
        "Needs: pip install '.[pack]'"))
    parser.parse_args(argv)
    if importlib.util.find_spec("PyInstaller") is None:
        print("aiproxy-local pack needs PyInstaller: pip install '.[pack]'", file=sys.stderr)
        return 2
    env = dict(os.environ)
    shim = None
    if sys.platform != "win32":  # nicegui-pack runs `python -m PyInstaller`: make `python` this interpreter
        import tempfile

        shim = Path(tempfile.mkdtemp(prefix="aiproxy-pack-"))
        (shim / "python").write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} \"$@\"\n")  # (a symlink
        (shim / "python").chmod(0o755)  # would lose a virtualenv: Python finds pyvenv.cfg beside its argv[0])
        env["PATH"] = f"{shim}{os.pathsep}{env.get('PATH', '')}"
    else:  # there it runs `pyinstaller`, which lives beside python.exe
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    started = time.monotonic()
    try:
        code = subprocess.call(pack_command(), env=env)
    finally:
        if shim is not None:
            shutil.rmtree(shim, ignore_errors=True)
    built = Path("dist") / (APP_NAME + {"win32": ".exe", "darwin": ".app"}.get(sys.platform, ""))
    if code != 0 or not built.exists():  # nicegui-pack exits 0 whatever PyInstaller did: look for the result
        print(f"aiproxy-local pack: the build failed, {built} is missing (see PyInstaller's output above)",
              file=sys.stderr)
        return code or 1
    size = sum(f.stat().st_size for f in built.rglob("*") if f.is_file()) if built.is_dir() else built.stat().st_size
    print(f"built {built} ({size / MIB:.0f} MiB) in {time.monotonic() - started:.0f} s")
    return 0


# ---- `aiproxy-local shortcut [--remove]`: an app-menu entry that starts the gateway or finds it ----

def launcher() -> list[str]:
    """What the entry runs: this packaged binary when run from it, else the installed aiproxy-local."""
    if getattr(sys, "frozen", False):
        return [sys.executable]
    script = Path(sys.executable).parent / (APP_NAME + (".exe" if sys.platform == "win32" else ""))
    installed = str(script) if script.exists() else shutil.which(APP_NAME)
    return [installed] if installed else [sys.executable, str(Path(__file__).resolve())]


def _desktop_exec_arg(arg: str) -> str:
    """One argument of a .desktop Exec key: quoted when needed, with the spec's two levels of escaping."""
    if not re.fullmatch(r"[\w/.:+,=@-]+", arg):
        arg = '"' + re.sub(r'([`$"\\])', r"\\\1", arg) + '"'
    return arg.replace("%", "%%").replace("\\", "\\\\")


def desktop_entry(command: list[str]) -> str:
    return "\n".join([
        "[Desktop Entry]", "Type=Application", "Version=1.0", f"Name={APP_NAME}", "GenericName=AI gateway",
        "Comment=Start the local AI gateway (or find the running one) and open its admin page",
        f"Exec={' '.join(_desktop_exec_arg(a) for a in command)}", "Icon=network-server", "Terminal=false",
        "Categories=Network;", "StartupNotify=false", ""])


def shortcut_path(platform: str = sys.platform) -> Path:
    home = Path.home()
    if platform == "win32":
        roaming = Path(os.environ.get("APPDATA", home / "AppData" / "Roaming"))
        return roaming / "Microsoft" / "Windows" / "Start Menu" / "Programs" / f"{APP_NAME}.lnk"
    if platform == "darwin":
        return home / "Applications" / f"{APP_NAME}.command"
    data_home = os.environ.get("XDG_DATA_HOME") or str(home / ".local" / "share")
    return Path(data_home) / "applications" / f"{APP_NAME}.desktop"


def _windows_shortcut(path: Path, command: list[str]) -> None:
    def ps(text: str) -> str:
        return "'" + text.replace("'", "''") + "'"

    script = (f"$s = (New-Object -ComObject WScript.Shell).CreateShortcut({ps(str(path))}); "
              f"$s.TargetPath = {ps(command[0])}; $s.Arguments = {ps(subprocess.list2cmdline(command[1:]))}; "
              f"$s.Description = {ps('aiproxy-local: the local AI gateway')}; $s.Save()")
    subprocess.run(["powershell", "-NoProfile", "-NonInteractive", "-Command", script], check=True)


def shortcut(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="aiproxy-local shortcut", description=(
        "Add an app-menu entry that starts aiproxy-local (or finds the running one) and opens the browser: a "
        ".desktop file on Linux, a Start-menu shortcut on Windows, a .command in ~/Applications on macOS."))
    parser.add_argument("--remove", action="store_true", help="take the entry away")
    args = parser.parse_args(argv)
    path = shortcut_path()
    if args.remove:
        existed = path.exists()
        path.unlink(missing_ok=True)
        print(f"removed {path}" if existed else f"no shortcut at {path}")
        return 0
    command = launcher()
    path.parent.mkdir(parents=True, exist_ok=True)
    if sys.platform == "win32":
        _windows_shortcut(path, command)
    elif sys.platform == "darwin":
        path.write_text(f"#!/bin/sh\nexec {shlex.join(command)}\n", encoding="utf-8")
        path.chmod(0o755)
    else:
        path.write_text(desktop_entry(command), encoding="utf-8")
        path.chmod(0o644)
    print(f"added {path}, which runs {subprocess.list2cmdline(command)}")
    return 0


COMMANDS: dict[str, Callable[[list[str]], int]] = {"pack": pack, "shortcut": shortcut}


# ---- `aiproxy-local run claude|codex|gemini`: a coding tool wired to this gateway ----

@dataclass(frozen=True)
class Tool:
    """A coding client `aiproxy-local run` knows: its command, its npm package, and how it is pointed here."""

    name: str  # the subcommand, the API key's name and the private config dir's
    title: str
    command: str
    package: str
    home_env: str  # the tool's own variable for its config dir


TOOLS = {t.name: t for t in (
    Tool("claude", "Claude Code", "claude", "@anthropic-ai/claude-code", "CLAUDE_CONFIG_DIR"),
    Tool("codex", "Codex", "codex", "@openai/codex", "CODEX_HOME"),
    Tool("gemini", "Gemini CLI", "gemini", "@google/gemini-cli", "GEMINI_CLI_HOME"),
)}
RUN_START_TIMEOUT_S = 30.0
_RUN_USAGE = "usage: aiproxy-local [--port N] [--data-dir DIR] run {claude,codex,gemini} [--model NAME] [ARGS...]"


def split_run_argv(argv: list[str]) -> tuple[list[str], Tool, str, list[str]] | None:
    """`[gateway flags] run TOOL [--model NAME] [ARGS…]` as (gateway flags, tool, model, ARGS); None when argv
    is no `run`. ARGS go to the tool unchanged."""
    flags, i = [], 0
    while i < len(argv) and argv[i] != "run":
        takes_value = argv[i].startswith("--") and "=" not in argv[i] and argv[i] not in (
            "--no-browser", "--no-ui", "--no-journal", "--version", "--help")
        flags += argv[i:i + 1 + takes_value]
        i += 1 + takes_value
    if i >= len(argv):
        return None
    rest = argv[i + 1:]
    if not rest or rest[0] not in TOOLS:
        sys.exit(f"{_RUN_USAGE}\naiproxy-local run: name a tool: {', '.join(TOOLS)}")
    tool, rest, model = TOOLS[rest[0]], rest[1:], ""
    if rest[:1] == ["--model"] and len(rest) > 1:
        model, rest = rest[1], rest[2:]
    elif rest and rest[0].startswith("--model="):
        model, rest = rest[0].split("=", 1)[1], rest[1:]
    return flags, tool, model, rest


def _admin_call(url: str, admin_key: str, method: str, path: str, body: Any = None) -> Any:
    request = urllib.request.Request(f"{url}{path}", method=method, headers={
        "Authorization": f"Bearer {admin_key}", "Content-Type": "application/json"},
        data=None if body is None else json.dumps(body).encode())
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            data = json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            sys.exit(f"aiproxy-local run: the gateway at {url} refused the admin key; set ADMIN_KEY or --data-dir to "
                     "the ones it runs with.")
        data = json.loads(exc.read() or b"{}")
    if not data.get("success"):
        sys.exit(f"aiproxy-local run: {method} {path} failed: {data.get('message')}")
    return data.get("data")


def tool_api_key(url: str, admin_key: str, tool: Tool) -> str:
    """The key of the API key named after the tool, created on first use: its calls show under that name."""
    found = _admin_call(url, admin_key, "GET", f"/api/tokens?keyword={tool.name}&per_page=100")
    same = [t for t in found["tokens"] if t["name"] == tool.name and t["status"] == STATUS_ENABLED]
    token = same[0] if same else _admin_call(url, admin_key, "POST", "/api/tokens", {"name": tool.name})
    return token["key"]


def start_gateway_for_run(settings: Settings, flags: list[str]) -> subprocess.Popen[bytes]:
    """A gateway in the background, with the same settings, its output in <data-dir>/gateway.log."""
    settings.data_path.mkdir(parents=True, exist_ok=True)
    log = open(settings.data_path / "gateway.log", "ab")  # noqa: SIM115 (the child keeps it)
    command = [sys.executable, str(Path(__file__).resolve()), *flags, "--no-browser"]
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    log.close()
    url, deadline = _local_url(settings), time.monotonic() + RUN_START_TIMEOUT_S
    while not is_aiproxy_local(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            sys.exit(f"aiproxy-local run: the gateway did not start; see {settings.data_path / 'gateway.log'}")
        time.sleep(0.2)
    return proc


def _merge_json_file(path: Path, wanted: dict[str, Any]) -> None:
    """Set `wanted` (nested) in a JSON settings file, keeping whatever else it holds."""
    try:
        current = json.loads(path.read_text())
    except (OSError, ValueError):
        current = {}

    def merge(into: dict[str, Any], values: dict[str, Any]) -> None:
        for key, value in values.items():
            if isinstance(value, dict):
                merge(into.setdefault(key, {}) if isinstance(into.get(key), dict) else into.setdefault(key, {}), value)
            else:
                into[key] = value
    if not isinstance(current, dict):
        current = {}
    merge(current, wanted)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(current, indent=2) + "\n")


def tool_environment(tool: Tool, home: Path, url: str, key: str, model: str,
                     env: dict[str, str]) -> dict[str, str]:
    """The tool's environment: pointed at the gateway with `key`, its config in `home` (never the user's own
    ~/.claude, ~/.codex or ~/.gemini), telemetry and self-update off. Writes the config files it needs."""
    env = dict(env, **{tool.home_env: str(home)})
    home.mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o700)
    if tool.name == "claude":
        env.pop("ANTHROPIC_API_KEY", None)
        env.update(ANTHROPIC_BASE_URL=url, ANTHROPIC_AUTH_TOKEN=key, DISABLE_TELEMETRY="1", DISABLE_AUTOUPDATER="1",
                   DISABLE_ERROR_REPORTING="1", CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1")
        if model:
            env.update(ANTHROPIC_MODEL=model, ANTHROPIC_DEFAULT_HAIKU_MODEL=model)
        _merge_json_file(home / ".claude.json", {"hasCompletedOnboarding": True})
    elif tool.name == "codex":
        env["AIPROXY_API_KEY"] = key
        lines = ["# written by `aiproxy-local run codex` on every run", 'model_provider = "aiproxy"',
                 "check_for_update_on_startup = false"]
        lines += [f"model = {json.dumps(model)}"] if model else []
        lines += ["", "[analytics]", "enabled = false", "", "[model_providers.aiproxy]", 'name = "aiproxy-local"',
                  f'base_url = "{url}/v1"', 'env_key = "AIPROXY_API_KEY"', 'wire_api = "responses"']
        (home / "config.toml").write_text("\n".join(lines) + "\n")
    else:
        env.update(GOOGLE_GEMINI_BASE_URL=url, GEMINI_API_KEY=key)
        env.setdefault("GEMINI_CLI_TRUST_WORKSPACE", "true")  # else `-p` exits 55 in a folder not trusted yet
        if model:
            env["GEMINI_MODEL"] = model
        _merge_json_file(home / ".gemini" / "settings.json", {
            "security": {"auth": {"selectedType": "gemini-api-key"}}, "privacy": {"usageStatisticsEnabled": False},
            "telemetry": {"enabled": False}, "general": {"enableAutoUpdate": False,
                                                         "enableAutoUpdateNotification": False}})
    return env


def run_tool(flags: list[str], tool: Tool, model: str, args: list[str]) -> int:
    """`aiproxy-local run TOOL`: find the gateway (or start one), get the tool's API key, run the tool on it.
    A gateway started here stops when the tool exits."""
    executable = shutil.which(tool.command)
    if executable is None:
        print(f"aiproxy-local run: {tool.title} is not installed (no `{tool.command}` on PATH). Install it with:\n"
              f"    npm install -g {tool.package}", file=sys.stderr)
        return 127
    settings = load_settings(os.environ, flags)
    url, started = _local_url(settings), None
    if not is_aiproxy_local(url):
        print(f"aiproxy-local run: starting the gateway at {url}/ (data in {settings.data_path})", file=sys.stderr)
        started = start_gateway_for_run(settings, flags)
    try:
        admin_key = settings.admin_key or (settings.data_path / "admin_key").read_text().strip()
    except OSError:
        print(f"aiproxy-local run: no admin key: set ADMIN_KEY, or --data-dir to the gateway's", file=sys.stderr)
        return 2
    try:
        key = tool_api_key(url, admin_key, tool)
        env = tool_environment(tool, settings.data_path / "clients" / tool.name, url, key, model, dict(os.environ))
        return subprocess.call([executable, *args], env=env)
    except KeyboardInterrupt:
        return 130
    finally:
        if started is not None:
            started.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                started.wait(settings.shutdown_grace_seconds + 5)


def rebuild_summaries_command(argv: list[str]) -> int:
    """`aiproxy-local rebuild-summaries [--data-dir DIR] [--sql-dsn DSN]`: recompute the dashboard's summaries
    and rollups from the logs (after a crash, after importing logs, after an upgrade that changes them)."""
    settings = load_settings(os.environ, argv)
    prepare_data_dir(settings)
    engine = make_engine(settings.dsn)
    try:
        create_schema(engine)
        started = time.perf_counter()
        counts = rebuild_summaries(engine)
    except sa.exc.SQLAlchemyError as exc:
        sys.exit(f"aiproxy-local: cannot rebuild the summaries: {_first_line(exc)}")
    finally:
        engine.dispose()
    print(f"rebuilt the summaries from the logs in {time.perf_counter() - started:.1f} s: "
          f"{counts['summary_minutes']:,} per-minute rows (the last {SUMMARY_MINUTE_DAYS} days), "
          f"{counts['summary_hours']:,} hourly rows", flush=True)
    return 0


COMMANDS["rebuild-summaries"] = rebuild_summaries_command


def main(argv: list[str] | None = None) -> None:
    if argv is None:  # under NiceGUI's test plugin sys.argv is pytest's: settings come from the env only
        argv = [] if os.environ.get("NICEGUI_USER_SIMULATION") else sys.argv[1:]
    if argv and argv[0] in COMMANDS:
        sys.exit(COMMANDS[argv[0]](argv[1:]))
    run = split_run_argv(argv)
    if run is not None:
        sys.exit(run_tool(*run))
    settings = load_settings(os.environ, argv)
    simulated = bool(os.environ.get("NICEGUI_USER_SIMULATION"))
    listener = None
    moved_from = 0
    if not simulated:
        os.umask(0o077)  # every file the gateway makes (UI storage, uploads, journal) is its owner's alone
        try:
            listener = bind_listener(settings)
        except OSError as exc:
            _port_taken(settings, exc)
        moved_from = default_port_moved_from(settings, port_chosen(os.environ, argv))
    try:
        app = create_app(settings)
    except (sa.exc.SQLAlchemyError, ModuleNotFoundError, OSError) as exc:
        # the DSN may hold a password: name the problem, never echo the URL
        sys.exit(f"aiproxy-local: cannot open the database or data directory: {type(exc).__name__}: "
                 f"{str(exc).splitlines()[0][:300]}")
    if simulated:  # NiceGUI's test plugin runs this file: build, don't serve
        return
    state = get_state()
    state.port_moved_from = moved_from
    check_admin_key(state)
    if not has_console():
        state.log_file = log_to_file(settings)
        logger.warning("aiproxy-local %s started at %s/ (data directory %s)", __version__, _local_url(settings),
                       settings.data_path)
    token = "" if settings.no_browser else issue_login_token(state)  # only for the browser opened here
    print(_banner(state, token), flush=True)
    if not settings.no_browser:
        threading.Timer(1.5, webbrowser.open, [login_url(settings, token)]).start()
    loop = "uvloop" if sys.platform != "win32" else "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        loop = "asyncio"
    # no access log and no proxy-header rewriting on the hot path: the gateway is the edge, not behind one
    config = uvicorn.Config(app, host=settings.host, port=settings.port, loop=loop, http="httptools",
                            access_log=False, log_level="warning", lifespan="on", proxy_headers=False,
                            server_header=False, timeout_graceful_shutdown=settings.shutdown_grace_seconds,
                            log_config=None if state.log_file else uvicorn.config.LOGGING_CONFIG)
    logging.getLogger("uvicorn.error").addFilter(_quiet_shutdown_cancels)
    server = GatewayServer(config)
    state.request_stop = lambda: server.handle_exit(signal.SIGTERM, None)  # the UI's "Stop the gateway"
    server.run(sockets=[listener])


if __name__ == "__main__":
    main()
