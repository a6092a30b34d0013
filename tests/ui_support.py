"""Shared setup of the NiceGUI User tests (test_ui.py, test_ui_migrate.py).

The User plugin runs aiproxy_local.py as __main__ for every test, with settings from the env that `app_env`
sets; the engine then lives in that run's namespace, which `ns()` reaches through a registered page function.
Importing aiproxy_local here instead would hold a second copy of the module.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import httpx
import openai
import pytest
from nicegui import Client
from nicegui.testing import User

ADMIN_KEY = "test-admin-key-0123456789"


@pytest.fixture(autouse=True)
def app_env(tmp_path, monkeypatch) -> None:
    """Autouse fixtures run before `user`, so the main file sees a fresh data dir and a known admin key."""
    monkeypatch.setenv("AIPROXY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ADMIN_KEY", ADMIN_KEY)
    monkeypatch.setenv("AIPROXY_NO_BROWSER", "1")
    for name in ("AIPROXY_NO_UI", "SQL_DSN", "RETRY_TIMES", "LOG_RETENTION_DAYS"):
        monkeypatch.delenv(name, raising=False)


def ns() -> dict[str, Any]:
    """The namespace of the aiproxy_local run under test (its get_state, ChannelIn, LogRow, ...)."""
    return next(iter(Client.page_routes)).__globals__


def state() -> Any:
    return ns()["get_state"]()


def the(user: User, marker: str) -> Any:
    elements = user.find(marker=marker).elements
    assert len(elements) == 1, f"{len(elements)} elements marked {marker!r}"
    return next(iter(elements))


async def eventually(condition: Any, tries: int = 100) -> None:
    """Handlers that await a dialog or a task finish a little after the click."""
    for _ in range(tries):
        if condition():
            return
        await asyncio.sleep(0.05)
    assert condition()


def browser(user: User) -> None:
    """Answer the JavaScript a browser would (the timezone and the system's theme asked at login)."""
    user.javascript_rules[re.compile(r".*Intl\.DateTimeFormat")] = lambda _: "Asia/Shanghai"
    user.javascript_rules[re.compile(r"aiproxyPrefersDark\(\)")] = lambda _: False


async def login(user: User, path: str = "/dashboard") -> None:
    browser(user)
    await user.open(path)
    user.find("Admin key").type(ADMIN_KEY).trigger("keydown.enter")
    await user.should_see("Log out", retries=50)  # the first page may take a while on a busy machine


def clipboard(user: User, works: bool = True) -> list[str]:
    """What the page copies, in order. `works=False` plays plain http://ip:port, where the browser refuses."""
    copied: list[str] = []

    def copy(match: re.Match) -> bool:
        copied.append(json.loads(match.group(1)))
        return works

    user.javascript_rules[re.compile(r"aiproxyCopy\((.*)\)$", re.S)] = copy
    return copied


def relay_client(api_key: str = ADMIN_KEY) -> openai.AsyncOpenAI:
    """The official SDK on this run's /v1, in process: the User's own client reaches only NiceGUI's sub-app."""
    module = ns()

    async def relay_app(scope: dict, receive: Any, send: Any) -> None:
        await module["relay"](module["get_state"](), scope, receive, send)

    transport = httpx.ASGITransport(app=relay_app)
    return openai.AsyncOpenAI(base_url="http://test/v1", api_key=api_key, max_retries=0,
                              http_client=httpx.AsyncClient(transport=transport, base_url="http://test"))
