"""UI pages: channel health in the UI (issue 9), through NiceGUI's simulated User: the channel list shows status 3
with its reason and time, the cool-downs under way and a "retest now" button; a log's detail shows its routing
trail; the model test panel shows the time taken and the limit.

Row cells are Vue templates here (nicegui-guide §4.3), so the tests read the rows the templates render and emit
the templates' events on the table, as the browser would. The upstream is health_upstream.py, switched per test.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Iterator

import pytest
from nicegui.testing import User

from health_upstream import HealthUpstream
from ui_support import ADMIN_KEY, app_env, eventually, login, ns, state, the  # noqa: F401


@pytest.fixture(scope="module")
def hup() -> Iterator[HealthUpstream]:
    fake = HealthUpstream().start()
    yield fake
    fake.stop()


def add_channel(name: str, base_url: str, models: list[str]) -> int:
    g = ns()
    return g["create_channels"](state(), [g["ChannelIn"](type=1, name=name, key="sk-test-key-123456",
                                                         base_url=base_url, models=models)])[0]


def row_of(user: User, channel_id: int) -> dict:
    return next(r for r in the(user, "channels").rows if r["id"] == channel_id)


def test_a_trail_in_one_line() -> None:
    import aiproxy_local as m

    trail = [{"channel_id": 3, "code": 0, "ms": 0, "skipped": "cooling_down", "error": "cooling down 4 s more"},
             {"channel_id": 4, "code": 429, "ms": 31, "error": "slow down"}, {"channel_id": 5, "code": 200, "ms": 12}]
    assert m.format_trail(trail) == "#3 skipped (cooling down) · #4 → 429 (31 ms) · #5 → 200 (12 ms)"


async def test_the_channel_list_shows_auto_disabled_channels_cooldowns_and_retests_now(user: User, hup) -> None:
    g = ns()
    dead, cold = f"dead-{time.time_ns()}", f"cold-{time.time_ns()}"
    hup.set(dead, status=401, message="Incorrect API key provided: {key}")
    a = add_channel("revoked", hup.url(dead), ["gpt-4o-mini"])
    b = add_channel("busy", hup.url(cold), ["gpt-4o-mini"])
    assert g["auto_disable_channel"](state(), state().routes.channels[a],
                                     "401 from upstream: Incorrect API key provided: sk-te…56")
    state().health.failed(b, "gpt-4o-mini", g["TRANSIENT"], 429, "429 from upstream: slow down", time.time(), 3,
                          retry_after=60)
    await login(user, "/channels")
    revoked, busy = row_of(user, a), row_of(user, b)
    assert revoked["auto_disabled"] and not revoked["enabled"]
    assert revoked["reason"] == "401 from the provider: Incorrect API key provided: sk-te…56"  # the page's words
    assert re.fullmatch(r"since \d{4}-\d\d-\d\d \d\d:\d\d", revoked["since"])
    assert re.fullmatch(r"gpt-4o-mini cooling down (59|60) s \(HTTP 429\)", busy["cooling"])
    assert not busy["auto_disabled"] and busy["enabled"] and not revoked["cooling"]

    user.find(marker="channels").trigger("retest", a)  # still broken: it stays auto-disabled
    await user.should_see("revoked is still failing: The provider refused the API key (HTTP 401)", retries=100)
    assert state().routes.channels[a].status == g["STATUS_AUTO_DISABLED"]
    hup.set(dead)  # the key works again
    user.find(marker="channels").trigger("retest", a)
    await user.should_see("revoked passed its retest and is enabled again", retries=100)
    await eventually(lambda: row_of(user, a)["enabled"] and not row_of(user, a)["auto_disabled"])
    assert row_of(user, a)["reason"] == ""


async def test_a_logs_detail_shows_its_routing_trail(user: User) -> None:
    g = ns()
    now = int(time.time() * 1000)
    trail = [{"channel_id": 3, "code": 0, "ms": 0, "skipped": "auto_disabled", "error": "401 from upstream: bad"},
             {"channel_id": 4, "code": 429, "ms": 31, "error": "Rate limit reached"},
             {"channel_id": 5, "code": 200, "ms": 12}]
    with state().engine.begin() as conn:
        log_id = conn.execute(g["sa"].insert(g["LogRow"]).values(
            request_id="req-trail", request_at=now - 100, created_at=now, model="m", channel=5, code=200,
            retry_times=1, attempts=json.dumps(trail))).inserted_primary_key[0]
    await login(user, "/logs")
    user.find(marker="logs").trigger("rowClick", [{}, {"id": log_id}, 0])
    await user.should_see("Call details")
    await user.should_see("Channels tried")
    assert the(user, "log-trail").text == "#3 skipped (auto-disabled) · #4 → 429 (31 ms) · #5 → 200 (12 ms)"
    await user.should_see("#4: Rate limit reached")


async def test_the_model_test_panel_shows_the_time_and_the_limit(user: User, hup) -> None:
    stuck = f"stuck-{time.time_ns()}"
    hup.set(stuck, hang=30)
    state().settings = dataclasses.replace(state().settings, model_test_timeout=1.0)
    cid = add_channel("stuck", hup.url(stuck), ["gpt-4o-mini"])
    await login(user, "/channels")
    user.find(marker="channels").trigger("test", cid)
    user.find(marker="start-test").click()
    await user.should_see("Test finished: 0 passed, 1 failed", retries=150)
    assert the(user, "test-limit").text == "limit 1 s"
    took = [e.text for e in user.find(marker="test-took").elements]
    assert len(took) == 1 and 1.0 <= float(took[0].split()[0]) < 5
    assert the(user, "test-failure").text == "The provider did not answer in time"
