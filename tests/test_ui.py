"""UI kit; UI pages: each page's main flow through NiceGUI's simulated User (no browser).

The plugin runs aiproxy_local.py as __main__ for every test (settings from the env set below), so the engine
lives in that run's namespace: `ns()` reaches it through a registered page function. Slot widgets (row switches,
priority fields, row buttons) exist only as Vue templates here, so tests emit their events on the table, as the
browser would (nicegui-guide §4.3).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from conftest import free_port
from nicegui import ui
from nicegui.testing import User

from ui_support import (ADMIN_KEY, app_env, browser, clipboard, eventually, login, ns, relay_client,  # noqa: F401
                        state, the)


def add_channel(name: str, base_url: str, models: list[str], **kw: Any) -> int:
    g = ns()
    return g["create_channels"](state(), [g["ChannelIn"](type=1, name=name, key="sk-test-key-123456",
                                                         base_url=base_url, models=models, **kw)])[0]


# ---- login ----

async def test_pages_need_a_login_and_a_current_key(user: User) -> None:
    browser(user)
    for path in ("/", "/channels", "/logs", "/tokens", "/settings", "/models", "/migrate"):
        await user.open(path)
        await user.should_see("Log in with the admin key")
        await user.should_not_see("Log out")
    user.find("Admin key").type("wrong").trigger("keydown.enter")
    await user.should_see("Wrong admin key")
    user.find("Admin key").clear().type(ADMIN_KEY).trigger("keydown.enter")
    await user.should_see("Import from OneAPI")  # back on the page asked for: /migrate
    state().admin_key = "another-key-0123456789"  # a changed key ends every session
    await user.open("/channels")
    await user.should_see("Log in with the admin key")


async def test_guessing_the_key_at_the_login_is_throttled(user: User) -> None:
    """The login counts wrong keys per address like /api and /v1 (issue 18): past the allowance even the right key
    waits, so a guess cannot be confirmed; once the wait is over, the right key logs in and resets it."""
    throttle = ns()["AuthThrottle"](allowed=2, lockout=60.0)
    state().throttle = throttle
    browser(user)
    await user.open("/channels")
    for n in (1, 2):
        user.find("Admin key").clear().type(f"guess-{n}").trigger("keydown.enter")
        await eventually(lambda: [entry[0] for entry in throttle.addresses.values()] == [n])  # the handler ran
    user.find("Admin key").clear().type(ADMIN_KEY).trigger("keydown.enter")
    await user.should_see("Too many wrong keys from this address")
    await user.should_not_see("Log out")
    for entry in throttle.addresses.values():  # the wait is over
        entry[3] = 0.0
    user.find("Admin key").clear().type(ADMIN_KEY).trigger("keydown.enter")
    await user.should_see("Log out")
    assert throttle.addresses == {}


async def test_log_out(user: User) -> None:
    await login(user, "/tokens")
    user.find("Log out").click()
    await user.should_see("Log in with the admin key")
    await user.open("/tokens")
    await user.should_see("Log in with the admin key")


async def test_language_follows_the_browser_and_the_switch(user: User) -> None:
    browser(user)
    user.http_client.headers["accept-language"] = "zh-CN,zh;q=0.9,en;q=0.8"
    await user.open("/login")
    await user.should_see("使用管理员密钥登录")
    user.find(ui.input).type(ADMIN_KEY).trigger("keydown.enter")
    await user.should_see("仪表盘", retries=50)  # the first page may take a while on a busy machine (as in login())
    user.find("English").click()
    await user.should_see("Dashboard", retries=50)
    await user.should_see("Get started in three steps")


# ---- channels ----

async def test_add_channel_with_custom_model_and_mapping(user: User, upstream) -> None:
    await login(user, "/channels")
    await user.should_see("No channels yet")
    user.find(marker="add-channel").click()
    await user.should_see("Test before saving")
    user.find(marker="save-channel").click()  # empty form: validated in place, nothing saved
    assert the(user, "ch-name").error == "Required"
    assert the(user, "ch-key").error == "Required"
    assert not state().routes.channels

    user.find(marker="ch-name").type("my provider")
    user.find(marker="ch-models").trigger("update:modelValue", ["my-custom-model"])  # typed + Enter in a browser
    user.find("Add mapping").click()
    user.find(marker="map-from").type("gpt-4")
    user.find(marker="save-channel").click()  # half a mapping row: the empty side is marked, nothing saved
    assert the(user, "map-to").error == "Required" and the(user, "map-from").error is None
    assert not state().routes.channels
    user.find(marker="map-to").type("my-custom-model")
    assert the(user, "map-to").error is None
    user.find(marker="ch-base-url").type(upstream.url("ok"))
    user.find(marker="ch-key").type("sk-first-key\nsk-second-key")  # two lines: two channels
    user.find(marker="ch-priority").clear().type("5")
    user.find(marker="save-channel").click()
    await user.should_see("Added 2 channels: my provider")

    channels = sorted(state().routes.channels.values(), key=lambda c: c.id)
    assert [c.key for c in channels] == ["sk-first-key", "sk-second-key"]
    row = the(user, "channels").rows[0]
    assert (row["models"], row["mapped"]) == ("my-custom-model", "gpt-4 → my-custom-model")  # not a served model
    for c in channels:
        assert c.models == {"my-custom-model"} and c.mapping == {"gpt-4": "my-custom-model"}
        assert c.base_url == upstream.url("ok") and c.priority == 5
    rows = the(user, "channels").rows
    assert {r["key"] for r in rows} == {"sk-fi…ey", "sk-se…ey"}  # masked, never the key
    assert all("sk-first-key" not in str(r) for r in rows)


async def test_edit_keeps_the_masked_key_and_pastes_a_mapping(user: User, upstream) -> None:
    cid = add_channel("edit-me", upstream.url("ok"), ["m1"])
    await login(user, "/channels")
    user.find(marker="channels").trigger("edit", cid)
    await user.should_see("Edit channel “edit-me”")
    assert the(user, "ch-key").value == "sk-te…56"
    user.find("Paste JSON").click()
    user.find(marker="mapping-json").clear().type('{"alias": "m1"}')
    user.find(marker="apply-json").click()
    user.find(marker="save-channel").click()
    await user.should_see("Saved edit-me")
    route = state().routes.channels[cid]
    assert route.key == "sk-test-key-123456" and route.mapping == {"alias": "m1"}


async def test_the_dialog_edits_the_proxy_and_keeps_its_masked_password(user: User, upstream) -> None:
    cid = add_channel("proxied", upstream.url("ok"), ["m1"], proxy_url="socks5://gw:proxy-Secret-4711@10.1.2.3:1080")
    await login(user, "/channels")
    user.find(marker="channels").trigger("edit", cid)
    await user.should_see("Edit channel “proxied”")
    assert the(user, "ch-proxy-url").value == "socks5://gw:pr…11@10.1.2.3:1080"  # the password masked
    assert the(user, "ch-skip-tls").value is False
    user.find(marker="ch-skip-tls").click()
    user.find(marker="save-channel").click()
    await user.should_see("Saved proxied")
    route = state().routes.channels[cid]
    assert (route.proxy, route.skip_tls_verify) == ("socks5://gw:proxy-Secret-4711@10.1.2.3:1080", True)
    user.find(marker="channels").trigger("edit", cid)
    user.find(marker="ch-proxy-url").clear().type("ftp://10.1.2.3")
    user.find(marker="save-channel").click()
    assert the(user, "ch-proxy-url").error == "Must be http://, https://, socks5:// or socks5h:// with host:port"
    user.find(marker="ch-proxy-url").clear().type("http://10.1.2.3:3128")
    user.find(marker="save-channel").click()
    await user.should_see("Saved proxied")
    assert state().routes.channels[cid].proxy == "http://10.1.2.3:3128"


async def test_the_dialog_edits_the_request_settings_and_keeps_the_rest_of_the_config(user: User, upstream) -> None:
    cid = add_channel("settings", upstream.url("ok"), ["m1"], config={"split_think": True, "max_output_tokens": 4096})
    await login(user, "/channels")
    user.find(marker="channels").trigger("edit", cid)
    await user.should_see("Request settings (optional)")
    assert the(user, "ch-max-output").value == 4096
    user.find(marker="ch-override").type("[1]")
    user.find(marker="save-channel").click()
    assert the(user, "ch-override").error == 'Expected a JSON object, such as {"temperature": 0.2, "user": null}'
    user.find(marker="ch-override").clear().type('{"temperature": 0.2, "user": null}')
    user.find(marker="ch-max-output").clear().type("8192")
    user.find(marker="save-channel").click()
    await user.should_see("Saved settings")
    route = state().routes.channels[cid]
    assert route.max_output_tokens == {"*": 8192} and route.param_override == {"temperature": 0.2, "user": None}
    assert route.config["split_think"] is True


async def test_a_duplicate_name_is_flagged_but_allowed(user: User, upstream) -> None:
    first = add_channel("twin", upstream.url("ok"), ["m"])
    await login(user, "/channels")
    user.find(marker="channels").trigger("edit", first)
    await user.should_see("Edit channel “twin”")
    user.find(marker="ch-name").clear().type("twin")
    await user.should_not_see("Another channel is already called")  # its own name is no duplicate
    user.find("Cancel").click()
    user.find(marker="add-channel").click()
    user.find(marker="ch-name").type("twin")
    await user.should_see("Another channel is already called “twin”")
    user.find(marker="ch-models").trigger("update:modelValue", ["m"])
    user.find(marker="ch-key").type("sk-second-twin")
    user.find(marker="save-channel").click()
    await user.should_see("Added twin")
    assert [r.name for r in state().routes.channels.values()] == ["twin", "twin"]


async def test_priority_field_and_enabled_switch_change_the_engine(user: User, upstream) -> None:
    cid = add_channel("ch-a", upstream.url("ok"), ["gpt-4o-mini"])
    await login(user, "/channels")
    table = user.find(marker="channels")
    table.trigger("priority", {"id": cid, "value": 7})
    assert state().routes.channels[cid].priority == 7
    table.trigger("toggle", {"id": cid, "value": False})
    await user.should_see("Channel “ch-a” disabled")
    assert state().routes.channels[cid].enabled is False
    assert the(user, "channels").rows[0]["enabled"] is False
    async with relay_client() as client:  # the relay stops offering what only a disabled channel serves
        assert [m.id async for m in client.models.list()] == []
        table.trigger("toggle", {"id": cid, "value": True})
        assert state().routes.channels[cid].enabled is True
        assert [m.id async for m in client.models.list()] == ["gpt-4o-mini"]


async def test_edits_keep_the_row_order_say_so_and_refuse_a_fractional_priority(user: User, upstream) -> None:
    ids = [add_channel(name, upstream.url("ok"), ["m"], priority=p) for name, p in (("a", 3), ("b", 2), ("c", 1))]
    await login(user, "/channels")
    order = [r["id"] for r in the(user, "channels").rows]
    assert order == ids  # the first load sorts by priority
    table = user.find(marker="channels")
    table.trigger("priority", {"id": ids[2], "value": 9})  # would sort c to the top
    await user.should_see("Priority of c set to 9")
    table.trigger("toggle", {"id": ids[0], "value": False})  # would sort a to the bottom
    await user.should_see("Channel “a” disabled")  # the toast names it
    assert [r["id"] for r in the(user, "channels").rows] == order  # rows stay under the pointer
    table.trigger("priority", {"id": ids[1], "value": 2.5})
    await user.should_see("Priority must be a whole number")
    assert state().routes.channels[ids[1]].priority == 2  # refused, not rounded down
    assert next(r for r in the(user, "channels").rows if r["id"] == ids[1])["priority"] == 2  # the field reverts
    user.find(marker="channels").trigger("edit", ids[1])
    user.find(marker="ch-priority").clear().type("2.5")
    user.find(marker="save-channel").click()
    assert the(user, "ch-priority").error == "Priority must be a whole number"
    assert state().routes.channels[ids[1]].priority == 2
    await user.open("/channels")  # a reload sorts again
    assert [r["id"] for r in the(user, "channels").rows] == [ids[2], ids[1], ids[0]]


async def test_bulk_actions_preview_the_count(user: User, upstream) -> None:
    ids = [add_channel(f"bulk-{i}", upstream.url("ok"), ["m"]) for i in range(3)]
    await login(user, "/channels")
    table = user.find(marker="channels")
    rows = [r for r in the(user, "channels").rows if r["id"] in ids[:2]]
    table.trigger("selection", {"added": True, "rows": rows, "keys": [r["id"] for r in rows]})
    await user.should_see("2 selected")
    user.find("Disable").click()
    await user.should_see("Disable 2 channel(s)?")
    user.find(marker="confirm").click()
    await eventually(lambda: [state().routes.channels[i].enabled for i in ids] == [False, False, True])
    await user.should_see("Disabled 2 channel(s)")
    user.find("Set priority").click()
    await user.should_see("Set the priority of 2 channel(s)")
    user.find(ui.number).elements.pop().value = 42
    user.find(marker="confirm").click()
    await eventually(lambda: [state().routes.channels[i].priority for i in ids] == [42, 42, 0])
    await user.should_see("Priority 42 set on 2 channel(s)")
    user.find("Delete").click()
    await user.should_see("Delete 2 channel(s)? This cannot be undone.")
    user.find(marker="confirm").click()
    await eventually(lambda: list(state().routes.channels) == [ids[2]])
    await user.should_see("Deleted 2 channel(s)")
    await user.should_not_see("2 selected")


async def test_model_test_panel_shows_durations_and_codes(user: User, upstream) -> None:
    cid = add_channel("tested", upstream.url("ok"), ["gpt-4o-mini", "text-embedding-3-small"])
    bad = add_channel("broken", upstream.url("status-500"), ["gpt-4o-mini"])
    await login(user, "/channels")
    user.find(marker="channels").trigger("test", cid)
    await user.should_see("Model test: tested")
    await user.should_see("waiting")
    user.find(marker="start-test").click()
    await user.should_see("Test finished: 2 passed, 0 failed", retries=100)
    durations = [e.text for e in user.find(ui.label).elements if re.fullmatch(r"\d+\.\d\d s", e.text)]
    assert len(durations) == 2
    await user.should_see("HTTP 200")
    await user.should_see("2 / 2")
    row = next(r for r in the(user, "channels").rows if r["id"] == cid)
    assert row["test_ok"] and re.fullmatch(r"✓ \d+\.\d\d s", row["test"])
    tests = ns()["get_channel"](state(), cid)["channel_tests"]
    assert sorted(t["model"] for t in tests) == ["gpt-4o-mini", "text-embedding-3-small"]
    user.find("Close").click()

    user.find("Test all channels").click()  # both channels, one panel, one progress count
    await user.should_see("tested · text-embedding-3-small")
    user.find(marker="start-test").click()
    await user.should_see("Test finished: 2 passed, 1 failed", retries=100)
    await user.should_see("3 / 3")
    await user.should_see("HTTP 500")
    row = next(r for r in the(user, "channels").rows if r["id"] == bad)
    assert not row["test_ok"] and row["test"].startswith("✗")


async def test_failed_tests_are_said_in_words_with_the_raw_answer_as_a_detail(user: User, upstream) -> None:
    port = free_port()  # nothing listens there
    dead = add_channel("dead", f"http://127.0.0.1:{port}/v1", ["gpt-4o-mini"])
    no_version = add_channel("no-v1", upstream.base, ["gpt-4o-mini"])  # the host root: /chat/completions is a 404
    await login(user, "/channels")
    user.find(marker="channels").trigger("test", dead)
    user.find(marker="start-test").click()
    await user.should_see("Test finished: 0 passed, 1 failed", retries=100)
    failure = the(user, "test-failure").text
    assert failure.startswith(f"Could not connect to 127.0.0.1:{port}") and "{" not in failure
    assert the(user, "test-hint").text == "Check the Base URL."
    assert '"error"' in the(user, "test-raw").text  # the raw answer, behind "Details"
    user.find("Close").click()

    user.notify.messages.clear()
    user.find(marker="channels").trigger("test", no_version)
    user.find(marker="start-test").click()
    await user.should_see("Test finished: 0 passed, 1 failed", retries=100)
    assert the(user, "test-failure").text.startswith("The provider has no such address or model (HTTP 404)")
    assert the(user, "test-hint").text == "Does the Base URL need /v1 at the end?"


def test_test_failures_in_words() -> None:
    import aiproxy_local as m

    def said(code: int, body: str, base: str = "https://api.example.com/v1", default: str = "") -> tuple[str, str]:
        return m.describe_test_failure({"code": code, "response": body}, base, default)

    refused = '{"error": {"message": "Could not connect to 127.0.0.1:9 (connection refused)", "code": "x"}}'
    assert said(502, refused, "http://127.0.0.1:9/v1") == ("Could not connect to 127.0.0.1:9 (connection refused)",
                                                          "Check the Base URL.")
    assert said(502, "Upstream connection failed: Cannot connect to host nowhere.invalid:443 ssl:default "
                     "[Name or service not known]", "https://nowhere.invalid/v1")[0] == (
        "Could not connect to nowhere.invalid:443 (host name not found)")
    assert said(502, '{"error": {"message": "Bad gateway"}}')[0] == "The provider failed (HTTP 502): Bad gateway"
    assert said(401, '{"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}'
                ) == ("The provider refused the API key (HTTP 401): invalid x-api-key",
                      "Check the API key, and that it may use this model.")
    assert said(404, "not found", "https://api.example.com")[1] == "Does the Base URL need /v1 at the end?"
    assert said(404, "not found", "https://api.example.com/v1")[1] == "Check the model name."
    assert said(404, "", "https://generativelanguage.googleapis.com",  # a provider whose address has no version
                "https://generativelanguage.googleapis.com")[1] == "Check the model name."
    assert said(429, '{"error": {"message": "slow down"}}')[0].endswith("(HTTP 429): slow down")
    assert m.error_message('{"error": {"code": 400, "message": "bad", "status": "INVALID_ARGUMENT"}}') == "bad"
    assert m.error_message('{"success": false, "message": "aiproxy says no"}') == "aiproxy says no"


async def test_a_test_that_outlives_its_page_still_saves_and_logs_nothing(user: User, upstream, caplog,
                                                                         monkeypatch) -> None:
    """Updating a closed page logs a warning here and an AssertionError traceback on a real server."""
    caplog.set_level(logging.WARNING, logger="nicegui")
    panel, ended = ns()["ModelTestPanel"], asyncio.Event()
    run = panel.run

    async def run_to_its_end(self: Any) -> None:
        try:
            await run(self)
        finally:
            ended.set()

    monkeypatch.setattr(panel, "run", run_to_its_end)
    cid = add_channel("slow", upstream.url("delay-800"), ["gpt-4o-mini"])
    await login(user, "/channels")
    user.find(marker="channels").trigger("test", cid)
    user.find(marker="start-test").click()
    await user.should_see("testing")
    user.client.delete()  # the browser went away (tab closed, reconnect timed out)
    await eventually(lambda: ns()["get_channel"](state(), cid)["channel_tests"], tries=200)
    assert ns()["get_channel"](state(), cid)["channel_tests"][0]["success"]
    await asyncio.wait_for(ended.wait(), 10)  # the panel's own end: its summary, its refresh of the (gone) table
    assert [r.getMessage() for r in caplog.records if r.name.startswith("nicegui")] == []


async def test_fetch_models_from_upstream_shows_a_diff(user: User, upstream) -> None:
    cid = add_channel("fetcher", upstream.url("ok"), ["gpt-4o-mini", "retired-model"])
    await login(user, "/channels")
    user.find(marker="channels").trigger("edit", cid)
    user.find("Fetch models from upstream").click()
    await user.should_see("The provider lists 6 models", retries=50)
    assert "loading" not in the(user, "fetch").props and len(user.notify.messages) == 0  # no toast outlives it
    await user.should_see("New at the provider (5)")
    await user.should_see("No longer listed by the provider (1)")
    the(user, "drop-model").value = True  # removal is opt-in
    user.find(marker="accept-diff").click()
    user.find(marker="save-channel").click()
    await user.should_see("Saved fetcher")
    assert "retired-model" not in state().routes.channels[cid].models
    assert {"gpt-4o-mini", "dall-e-3", "whisper-1"} <= state().routes.channels[cid].models


async def test_test_before_saving_runs_on_the_unsaved_form(user: User, upstream) -> None:
    await login(user, "/channels")
    user.find(marker="add-channel").click()
    user.find(marker="ch-name").type("unsaved")
    user.find(marker="ch-models").trigger("update:modelValue", ["gpt-4o-mini"])
    user.find(marker="ch-base-url").type(upstream.url("ok"))
    user.find(marker="ch-key").type("sk-preview-key")
    user.find("Test before saving").click()
    await user.should_see("Test finished: 1 passed, 0 failed", retries=100)
    assert not state().routes.channels  # nothing saved, no test stored


# ---- models ----

async def test_models_page_switch_and_search(user: User, upstream) -> None:
    add_channel("p", upstream.url("ok"), ["gpt-4o-mini", "text-embedding-3-small"], priority=3)
    await login(user, "/models")
    rows = the(user, "models").rows
    assert [r["model"] for r in rows] == ["gpt-4o-mini", "text-embedding-3-small"]
    assert rows[1]["kind"] == "embedding" and rows[0]["channels"] == "on||p · P3"
    user.find(marker="models").trigger("toggle", {"model": "gpt-4o-mini", "value": False})
    await user.should_see("gpt-4o-mini disabled")
    assert not state().routes.model_enabled("gpt-4o-mini")
    assert the(user, "models").rows[0]["served"] == "switched off here"
    user.find("Search models").type("embed")
    assert [r["model"] for r in the(user, "models").rows] == ["text-embedding-3-small"]


async def test_models_page_shows_who_really_serves_a_model_and_each_channels_test(user: User, upstream) -> None:
    add_channel("good", upstream.url("ok"), ["shared-model"], priority=5)
    add_channel("bad", upstream.url("status-500"), ["shared-model"], priority=1)
    add_channel("off", upstream.url("ok"), ["orphan-model"], model_mapping={"alias": "orphan-model"},
                status=ns()["STATUS_DISABLED"])
    routes = state().routes.channels
    for route in routes.values():  # each channel tests its own models: one passes, one fails
        async for _ in ns()["run_model_tests"](state(), route, route.offered):
            pass
    await login(user, "/models")
    rows = {r["model"]: r for r in the(user, "models").rows}
    assert rows["shared-model"]["served"] == "by 2 enabled channel(s)" and rows["shared-model"]["state"] == "ok"
    chips = rows["shared-model"]["channels"].split("\n")
    assert [c.split("|")[:2] for c in chips] == [["on", "ok"], ["on", "bad"]]  # not one ✓ for both
    assert re.fullmatch(r"good · P5 · ✓ \d+\.\d\d s", chips[0].split("|")[2])
    assert chips[1].split("|")[2].startswith("bad · P1 · ✗")
    for name in ("orphan-model", "alias"):  # only a disabled channel: calls would get 503
        assert rows[name]["served"] == "no enabled channel: calls fail" and rows[name]["state"] == "none"
    assert rows["alias"]["channels"].split("|")[2].startswith("off · P0 → orphan-model · disabled")


# ---- logs ----

async def test_model_tests_are_marked_and_kept_out_of_the_counts(user: User, upstream) -> None:
    cid = add_channel("counted", upstream.url("ok"), ["gpt-4o-mini"])
    async with relay_client() as client:  # one real call
        await client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    await login(user, "/channels")
    user.find(marker="channels").trigger("test", cid)
    user.find(marker="start-test").click()
    await user.should_see("Test finished: 1 passed, 0 failed", retries=100)
    logs = ns()["query_logs"]
    await eventually(lambda: logs(state().engine, ns()["LogFilter"](), 1, 10)[1] == 2)  # the writer has flushed
    await user.open("/channels")
    assert the(user, "channels").rows[0]["requests"] == 1
    await user.open("/dashboard")
    await eventually(lambda: the(user, "card-calls").text == "1")
    await user.open("/logs")
    await user.should_see("2 call(s)")
    assert sorted(r["is_test"] for r in the(user, "logs").rows) == [False, True]  # both, the test marked
    await user.should_see("test")
    the(user, "filter-kind").value = "calls"  # each filter's rows load in a thread, then replace the table's
    await eventually(lambda: [r["is_test"] for r in the(user, "logs").rows] == [False])
    await user.should_see("1 call(s)")
    the(user, "filter-kind").value = "tests"
    await eventually(lambda: [r["is_test"] for r in the(user, "logs").rows] == [True])
    await user.should_see("1 call(s)")
    test_row = the(user, "logs").rows[0]
    assert test_row["is_test"] and test_row["channel"] == "counted"
    user.find(marker="logs").trigger("rowClick", [{}, {"id": test_row["id"]}, 0])
    await user.should_see("Model test, not counted as traffic")


def add_logs() -> tuple[int, int, int]:
    g = ns()
    sa, log_row, log_detail = g["sa"], g["LogRow"], g["LogDetail"]
    now = int(time.time() * 1000)
    cid = add_channel("logged", "http://127.0.0.1:9/v1", ["model-a", "model-b"])
    rows = [dict(request_id="req-ok", request_at=now - 2000, created_at=now - 1500, model="model-a",
                 actual_model="model-a", channel=cid, code=200, endpoint="/v1/chat/completions", token_name="app",
                 input_tokens=11, output_tokens=22, total_tokens=33, ip="127.0.0.1", ttfb_milliseconds=120),
            dict(request_id="req-bad", request_at=now - 13000, created_at=now - 1000, model="model-b",
                 actual_model="upstream-b", channel=cid, code=500, endpoint="/v1/chat/completions",
                 content="upstream exploded", retry_times=2, ip="10.0.0.2", input_tokens=5, cost_unknown=True),
            dict(request_id="req-old", request_at=now - 3 * 86_400_000, created_at=now - 3 * 86_400_000,
                 model="model-a", channel=cid, code=200)]
    ids = write_logs(rows)
    with state().engine.begin() as conn:
        conn.execute(sa.insert(log_detail).values(request_id="req-bad", request_body='{"model": "model-b"}',
                                                  response_body='{"error": {"message": "boom"}}'))
    return ids[0], ids[1], now


def write_logs(rows: list[dict[str, Any]]) -> list[int]:
    """As the log writer writes rows (with their summaries, which long ranges count); their ids, in order."""
    g = ns()
    writer = g["LogWriter"](state().engine)
    assert writer.write_batch([g["LogEntry"]({**g["LOG_DEFAULTS"], **r}, None, 0) for r in rows]) == []
    with state().engine.connect() as conn:
        found = dict(conn.execute(g["sa"].select(g["LogRow"].request_id, g["LogRow"].id).where(
            g["LogRow"].request_id.in_([r["request_id"] for r in rows]))).all())
    return [found[r["request_id"]] for r in rows]


async def test_log_filters_and_detail(user: User) -> None:
    ok_id, bad_id, now = add_logs()
    await login(user, "/logs")
    await user.should_see("2 call(s)")  # since yesterday: the 3-day-old call is out
    table = the(user, "logs")
    bad = next(r for r in table.rows if r["id"] == bad_id)
    assert bad["model"] == "model-b → upstream-b" and bad["code"] == 500
    assert bad["slow"] and bad["duration"] == "12.00 s"  # over 10 s: red
    assert bad["channel"] == "logged"
    shanghai = datetime.fromtimestamp((now - 13000) / 1000, ZoneInfo("Asia/Shanghai"))  # the browser's timezone
    assert bad["time"] == shanghai.strftime("%Y-%m-%d %H:%M:%S")
    the(user, "filter-status").value = "error"  # each filter's rows load in a thread, then replace the table's
    await eventually(lambda: [r["id"] for r in the(user, "logs").rows] == [bad_id])
    await user.should_see("1 call(s)")
    the(user, "filter-status").value = "all"
    the(user, "filter-model").value = "model-a"
    await eventually(lambda: [r["id"] for r in the(user, "logs").rows] == [ok_id])
    await user.should_see("1 call(s)")
    the(user, "filter-model").value = ""
    the(user, "range-preset").value = "7d"
    await user.should_see("3 call(s)")
    user.find(marker="filter-request-id").type("req-bad")
    await eventually(lambda: [r["id"] for r in the(user, "logs").rows] == [bad_id])
    await user.should_see("1 call(s)")

    user.find(marker="logs").trigger("rowClick", [{}, {"id": bad_id}, 0])
    await user.should_see("Call details")
    await user.should_see("upstream exploded")
    await user.should_see("Response body")
    await user.should_see("req-bad")
    await user.should_see("– (price unknown)")  # its model has no price anywhere: the cost is empty, not $0


async def test_logs_name_deleted_channels_and_say_when_no_channel_took_a_call(user: User) -> None:
    g = ns()
    now = int(time.time() * 1000)
    gone = add_channel("soon-gone", "http://127.0.0.1:9/v1", ["m"])
    rows = [dict(request_id="req-gone", request_at=now - 900, created_at=now - 800, model="m", channel=gone,
                 channel_name="soon-gone", code=200, ttfb_milliseconds=50),
            dict(request_id="req-none", request_at=now - 700, created_at=now - 600, model="unknown-model", channel=0,
                 code=503, content="no channel serves unknown-model")]
    ids = write_logs(rows)
    g["delete_channels"](state(), [gone])
    await login(user, "/logs")
    await user.should_see("2 call(s)")
    by_id = {r["id"]: r for r in the(user, "logs").rows}
    assert by_id[ids[0]]["channel"] == "soon-gone" and by_id[ids[1]]["channel"] == "–"
    user.find(marker="logs").trigger("rowClick", [{}, {"id": ids[0]}, 0])
    await user.should_see(f"soon-gone (#{gone}, deleted)")
    await user.open("/logs")
    await user.should_see("2 call(s)")
    user.find(marker="logs").trigger("rowClick", [{}, {"id": ids[1]}, 0])
    await user.should_see("none: no channel took this call")
    await user.should_not_see("#0")
    await user.should_not_see("0.000 s")  # no first byte: "–", not a made-up time


async def test_log_csv_export_and_channel_deep_link(user: User) -> None:
    _, _, now = add_logs()
    await login(user, "/logs")
    await user.should_see("2 call(s)")
    user.find("Export CSV").click()
    await user.download.next()
    csv_text = user.download.http_responses[-1].content.decode("utf-8-sig")
    assert csv_text.splitlines()[0].startswith("id,request_id") and "req-bad" in csv_text and "req-old" not in csv_text
    assert "request_at (Asia/Shanghai)" in csv_text.splitlines()[0]  # the page's timezone: the browser's here
    shanghai = datetime.fromtimestamp((now - 13000) / 1000, ZoneInfo("Asia/Shanghai"))
    bad = next(line for line in csv_text.splitlines() if "req-bad" in line)
    assert shanghai.strftime("%Y-%m-%d %H:%M:%S") in bad and ",logged," in bad
    cid = next(iter(state().routes.channels))
    await user.open(f"/logs?channel={cid}&request_id=req-ok")
    await user.should_see("1 call(s)")


# ---- API keys ----

async def test_create_an_api_key_shown_once(user: User) -> None:
    user.javascript_rules[re.compile(r".*aiproxyCopy.*")] = lambda _: True
    await login(user, "/tokens")
    await user.should_see("No API keys yet")
    user.find(marker="create-token").click()
    user.find(marker="create-token-submit").click()
    assert not ns()["list_tokens"](state())  # the name is required
    user.find("Name").type("fastgpt")
    user.find("+30 d").click()
    user.find(marker="create-token-submit").click()
    await user.should_see("shown only this once")
    full = the(user, "new-key").value
    tokens = ns()["list_tokens"](state())
    assert [t["name"] for t in tokens] == ["fastgpt"] and tokens[0]["key"] == full and full.startswith("sk-")
    assert tokens[0]["expired_at"] > time.time() * 1000 + 29 * 86_400_000
    user.find(kind=ui.button, content="Copy").click()
    await user.should_see("Copied to the clipboard", retries=30)
    user.find("Done").click()
    row = the(user, "tokens").rows[0]
    assert row["key"] != full and row["key"].startswith("sk-") and "…" in row["key"]
    user.find(marker="tokens").trigger("toggle", {"id": row["id"], "value": False})
    assert ns()["list_tokens"](state())[0]["status"] == 2


# ---- settings ----

async def test_settings_show_the_key_masked_and_copy_it_whole(user: User) -> None:
    copied = clipboard(user)
    await login(user, "/settings")
    snippet = the(user, "snippet").text
    assert "AIPROXY_API_ENDPOINT=http://test\n" in snippet and "OPENAI_BASE_URL=http://test/v1" in snippet
    assert ADMIN_KEY not in snippet and "AIPROXY_API_TOKEN=te…89" in snippet
    assert the(user, "admin-key").text == "te…89"
    full_snippet = ns()["connect_snippet"]("http://test", ADMIN_KEY)
    copy_buttons = ["copy-admin-key", "copy-base-url", "copy-snippet"]
    assert {the(user, m) for m in copy_buttons} == user.find(kind=ui.button, content="Copy").elements  # all of them
    for marker in copy_buttons:
        user.find(marker=marker).click()
        await eventually(lambda: len(copied) == copy_buttons.index(marker) + 1)
    assert copied == [ADMIN_KEY, "http://test/v1", full_snippet]  # whole, never the mask
    user.find("Reveal").click()
    assert the(user, "admin-key").text == ADMIN_KEY and f"AIPROXY_API_TOKEN={ADMIN_KEY}" in the(user, "snippet").text


async def test_a_refused_clipboard_offers_the_text_selected(user: User) -> None:
    copied = clipboard(user, works=False)  # as on plain http://ip:port
    await login(user, "/settings")
    user.find(marker="copy-snippet").click()
    await user.should_see("The browser blocked the clipboard", retries=30)
    full_snippet = ns()["connect_snippet"]("http://test", ADMIN_KEY)
    assert copied == [full_snippet]
    assert [e.value for e in user.find(ui.textarea).elements] == [full_snippet]


async def test_settings_options_and_key_regeneration(user: User) -> None:
    await login(user, "/settings")
    the(user, "retries").value = 1
    the(user, "retention").value = 7
    user.find(marker="save-options").click()
    await user.should_see("Saved")
    assert ns()["current_options"](state()).items() >= {"retry_times": 1, "log_retention_days": 7}.items()

    user.find("Regenerate").click()
    await user.should_see("Update ADMIN_KEY too")  # the key came from the env var
    user.find(marker="confirm").click()
    await eventually(lambda: state().admin_key != ADMIN_KEY)
    new_key = state().admin_key
    assert (state().settings.data_path / "admin_key").read_text().strip() == new_key
    assert the(user, "admin-key").text == new_key  # shown once, to be copied
    await user.open("/settings")  # this session follows the new key
    await user.should_see("Connect your apps")


async def test_settings_say_once_that_the_default_port_moved(user: User) -> None:
    state().port_moved_from = 3000  # the first start on a data dir an older version made (test_cli covers that)
    await login(user, "/settings")
    await user.should_see("The default port moved from 3000 to 3010")
    await user.should_see("--port 3000")
    user.find("Got it").click()
    await user.should_not_see("The default port moved")
    assert state().port_moved_from == 0
    await user.open("/settings")
    await user.should_see("Connect your apps")
    await user.should_not_see("The default port moved")


async def test_settings_stop_the_gateway_after_a_confirmation_and_name_the_log_file(user: User) -> None:
    await login(user, "/settings")
    await user.should_see("the terminal it was started from")  # the log goes to the console
    await user.should_not_see("Stop the gateway")  # the test plugin serves nothing to stop
    stops: list[int] = []
    state().request_stop = lambda: stops.append(1)
    state().log_file = state().settings.data_path / "aiproxy-local.log"
    await user.open("/settings")
    assert the(user, "log-file").text == str(state().settings.data_path / "aiproxy-local.log")
    user.find(marker="stop-gateway").click()
    await user.should_see("Calls under way get 10 s to finish")
    user.find("Cancel").click()
    await user.should_not_see("Calls under way get 10 s to finish")
    assert stops == []
    user.find(marker="stop-gateway").click()
    await user.should_see("Calls under way get 10 s to finish")
    user.find(marker="confirm").click()
    await eventually(lambda: stops == [1])
    await user.should_see("The gateway is stopping")


# ---- dashboard, migrate, strings ----

async def test_dashboard_cards_and_charts(user: User, upstream) -> None:
    g = ns()
    cid = add_channel("dash", upstream.url("ok"), ["m"])
    minute = int(time.time()) // 60 * 60 - 120
    counters = dict(channel_id=cid, model="m", request_count=4, exception_count=1, input_tokens=1000,
                    output_tokens=2500, total_tokens=3500, total_time_milliseconds=8000, total_ttfb_milliseconds=2000)
    with state().engine.begin() as conn:  # as the log writer adds them: the minute, and its hour
        conn.execute(g["sa"].insert(g["SummaryMinute"]).values(minute=minute, **counters))
        conn.execute(g["sa"].insert(g["SummaryHour"]).values(hour=minute // 3600 * 3600, **counters))
    await login(user, "/")
    await user.should_not_see("Get started in three steps")
    await eventually(lambda: the(user, "card-calls").text == "4")  # loaded in a thread, the spinner meanwhile
    assert the(user, "card-error_rate").text == "25.0% (1)"
    assert the(user, "card-output_tokens").text == "2.5k"
    assert the(user, "card-avg_latency_ms").text == "2.00 s"
    chart = user.find(ui.echart).elements
    calls = next(c for c in chart if c.options["series"][0]["name"] == "Calls")
    assert sum(calls.options["series"][0]["data"]) == 4 and len(calls.options["xAxis"]["data"]) >= 24
    the(user, "range-preset").value = "1h"
    await eventually(lambda: len(calls.options["xAxis"]["data"]) in (60, 61))


async def test_chinese_pages_keep_no_english_from_quasar_or_json(user: User, upstream) -> None:
    cid = add_channel("中文渠道", upstream.url("ok"), ["m"])
    await login(user, "/channels")
    user.find("中文").click()
    await user.should_see("新增渠道")
    table = the(user, "channels")
    assert table.props["rows-per-page-label"] == "每页行数：" and 0 not in table.props["rows-per-page-options"]
    assert '"第 {start}–{end} 条，共 {total} 条"' in table.props[":pagination-label"]  # not "1-1 of 1"
    user.find(marker="channels").trigger("edit", cid)
    user.find("粘贴 JSON").click()
    user.find(marker="mapping-json").clear().type('{"a": ')
    user.find(marker="apply-json").click()
    assert the(user, "mapping-json").error == "不是有效的 JSON（第 1 行，第 7 列）"
    user.find(marker="mapping-json").clear().type('{"a": 1}')
    user.find(marker="apply-json").click()
    assert the(user, "mapping-json").error.startswith("需要一个由模型名组成的 JSON 对象")
    await user.open("/logs")
    assert "TTFB" not in {c["label"] for c in the(user, "logs").columns}


async def test_migrate_page_is_in_the_frame(user: User) -> None:
    """The wizard itself (MigrateWizard) has its own tests in test_ui_migrate.py."""
    await login(user, "/migrate")
    await user.should_see("Import from OneAPI")
    await user.should_see("Log out")


def test_every_ui_string_exists_in_both_languages() -> None:
    root = Path(__file__).resolve().parent.parent
    strings = json.loads((root / "assets" / "i18n.json").read_text(encoding="utf-8"))
    assert set(strings["en"]) == set(strings["zh"])
    source = (root / "aiproxy_local.py").read_text(encoding="utf-8")  # the whole file: sections move, t() calls don't
    used = set(re.findall(r'\bt\("([a-z_]+\.[a-z_0-9]+)"', source))
    assert len(used) > 100, "the t(\"…\") pattern no longer finds the UI's strings"
    assert used <= set(strings["en"]), used - set(strings["en"])
    for key, text in strings["en"].items():  # placeholders agree, so .format() never fails in Chinese
        assert set(re.findall(r"{\w+}", text)) == set(re.findall(r"{\w+}", strings["zh"][key])), key


def test_every_provider_has_names_and_help_for_users_in_both_languages() -> None:
    providers = json.loads((Path(__file__).resolve().parent.parent / "assets" / "providers.json").read_text("utf-8"))
    chinese = re.compile(r"[\u4e00-\u9fff]")
    for pid, entry in providers.items():
        assert set(entry["display"]) == {"en", "zh"} and all(entry["display"].values()), pid
        helps = entry["help"]
        assert set(helps) == {"en", "zh"} and set(helps["en"]) == set(helps["zh"]) <= {"key", "base_url", "models"}
        assert helps["en"]["key"] and chinese.search(helps["zh"]["key"]), pid  # where the key comes from
        assert not chinese.search(" ".join(helps["en"].values())), pid
        for text in (*helps["en"].values(), *helps["zh"].values()):  # for users, not for developers
            assert "adaptor" not in text and "aiproxy" not in text.lower(), (pid, text)


def test_the_provider_picker_finds_a_provider_by_either_name_or_a_model() -> None:
    import aiproxy_local as m

    catalog = m.load_catalog()

    def found(needle: str) -> set[int]:  # what Quasar's input filter keeps: a case-blind substring of the label
        return {pid for pid, label in m.provider_options(catalog, "en").items() if needle.lower() in label.lower()}

    for needle in ("阿里", "通义", "qwen", "Alibaba", "BAILIAN"):
        assert 17 in found(needle), needle
    assert 25 in found("月之暗面") and 25 in found("kimi") and found("智谱") == {16, 52}
    assert found("no-such-provider-anywhere") == set()
    shown, detail, _ = m.provider_options(catalog, "zh")[17].split("\u2063")
    assert shown == "阿里云百炼（通义千问）" and detail.startswith("Alibaba Cloud Bailian (Qwen) · qwen")
    assert detail.endswith("#17")  # the numeric id: a detail, never the name
    assert set(list(m.provider_options(catalog, "en"))[-2:]) == {53, 55}  # the test providers come last
    # the types the gateway cannot serve yet say so, and come after the ones it serves (issue 17)
    options = m.provider_options(catalog, "en")
    for pid in (15, 34, 44, 46):
        assert "(not supported yet)" in options[pid].split("\u2063")[0]
    assert "不支持" in m.provider_options(catalog, "zh")[34].split("\u2063")[0]
    assert list(options).index(34) > max(list(options).index(p) for p in (1, 14, 24, 36))


async def test_the_channel_form_speaks_the_providers_help(user: User) -> None:
    await login(user, "/channels")
    user.find(marker="add-channel").click()
    the(user, "ch-provider").value = 17
    await user.should_see("Create a key in the Bailian console")
    await user.should_see("The international site is https://dashscope-intl.aliyuncs.com/compatible-mode/v1")
    user.find("Cancel").click()
    user.find("中文").click()
    await user.should_see("新增渠道")
    user.find(marker="add-channel").click()
    the(user, "ch-provider").value = 17
    await user.should_see("在阿里云百炼控制台（bailian.console.aliyun.com → API-KEY）创建")
    assert the(user, "ch-provider").options[17].startswith("阿里云百炼（通义千问）\u2063")


def test_api_only_mode_never_imports_nicegui(tmp_path) -> None:
    """`--no-ui` is measured for memory (bench/): the UI's library must stay out of that process."""
    code = ("import sys, aiproxy_local as m; m.create_app(m.Settings(data_dir=sys.argv[1], no_ui=True)); "
            "sys.exit('nicegui' in sys.modules)")
    root = Path(__file__).resolve().parent.parent
    assert subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=root, timeout=60).returncode == 0


def test_pure_helpers() -> None:
    import aiproxy_local as m

    assert m.pick_language("zh-CN,zh;q=0.9,en;q=0.8") == "zh" and m.pick_language("de-DE,en") == "en"
    assert m.pick_language("") == "en"
    tz = m.ZoneInfo("Asia/Shanghai")
    now = int(m.datetime(2025, 3, 10, 15, 30, tzinfo=tz).timestamp() * 1000)
    assert m.preset_range("yesterday", now, tz) == (int(m.datetime(2025, 3, 9, tzinfo=tz).timestamp() * 1000), None)
    assert m.preset_range("1h", now, tz) == (now - 3_600_000, None)
    assert m.local_input_to_ms("2025-03-10T15:30", tz) == now and m.local_input_to_ms("bad", tz) is None
    assert m.diff_models(["a", "gone"], ["a", "b"]) == (["b"], ["gone"])
    assert m.parse_mapping_json('{"x": "y"}') == {"x": "y"}
    with pytest.raises(m.ApiError):
        m.parse_mapping_json("[1]")
    assert m.fmt_count(1234567) == "1.23M" and m.fmt_count(12) == "12"
    assert m.mask_key(ADMIN_KEY) == "te…89" and m.mask_key("sk-abcdefghijkl") == "sk-ab…kl"
    assert [m.whole_number(v) for v in (7, 7.0, "7", 2.5, "", None, "x")] == [7, 7, 7, None, None, None, None]


def test_chart_buckets_fill_every_hour_and_day_of_the_range() -> None:
    import aiproxy_local as m

    tz = m.ZoneInfo("Asia/Shanghai")
    now = int(m.datetime(2025, 3, 10, 15, 30, tzinfo=tz).timestamp() * 1000)
    nine = int(m.datetime(2025, 3, 10, 9, tzinfo=tz).timestamp())
    item = {name: 0 for name in m._CHART_FIELDS}
    series = [{"timestamp": nine, "summary": [dict(item, request_count=3, exception_count=1,
                                                       total_time_milliseconds=6000)]}]
    buckets = m.chart_buckets(series, now - 86_400_000, now, "hour", tz)
    hours = [m.datetime.fromtimestamp(ts, tz).strftime("%d %H:%M") for ts, _ in buckets]
    assert hours[0] == "09 15:00" and hours[-1] == "10 15:00" and len(hours) == 25  # no hour skipped
    sums = dict(buckets)
    assert sums[nine]["request_count"] == 3 and sum(s["request_count"] for s in sums.values()) == 3
    calls, errors = m.chart_values(buckets)["calls"]
    assert calls[hours.index("10 09:00")] == 3 and errors[hours.index("10 09:00")] == 1 and sum(calls) == 3
    assert m.chart_values(buckets)["latency"][0][hours.index("10 09:00")] == 2.0  # 6 s over 3 calls
    berlin = m.ZoneInfo("Europe/Berlin")  # a 23-hour day: 2025-03-30
    start = int(m.datetime(2025, 3, 29, 12, tzinfo=berlin).timestamp() * 1000)
    end = int(m.datetime(2025, 4, 1, 12, tzinfo=berlin).timestamp() * 1000)
    days = [m.datetime.fromtimestamp(ts, berlin) for ts, _ in m.chart_buckets([], start, end, "day", berlin)]
    assert [(d.day, d.hour) for d in days] == [(29, 0), (30, 0), (31, 0), (1, 0)]  # local midnights


def test_costs_read_as_money_and_spend_ranks_by_channel_and_model() -> None:
    import aiproxy_local as m

    assert [m.fmt_cost(x) for x in (None, 0, 1.446e-05, 0.00042, 0.5, 12.345)] == [
        "–", "$0", "$0.0000145", "$0.000420", "$0.500", "$12.35"]  # unknown is not $0; never 1e-05
    item = {"channel_id": 1, "model": "a", "used_amount": 0.25}
    series = [{"timestamp": 0, "summary": [item, dict(item, channel_id=2, model="b", used_amount=1.0),
                                           dict(item, model="b", used_amount=None)]}]
    assert m.spend_ranking(series, "channel_id") == [(2, 1.0), (1, 0.25)]
    assert m.spend_ranking(series, "model") == [("b", 1.0), ("a", 0.25)]
