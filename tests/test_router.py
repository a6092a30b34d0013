"""Router: candidate order, load spread, retry decisions, model mapping and channel health, as pure functions."""

from __future__ import annotations

import collections
import random

import aiproxy_local as app


def route(id: int, priority: int = 0, weight: int = 1, models=("m",), mapping=None, status: int = 1):
    return app.channel_route({"id": id, "name": f"c{id}", "type": 1, "key": "k", "base_url": "",
                              "models": list(models), "model_mapping": mapping or {}, "priority": priority,
                              "weight": weight, "status": status}, app.load_catalog())


def test_highest_priority_level_comes_first():
    routes = [route(1, 0), route(2, 10), route(3, 5), route(4, 10)]
    for seed in range(20):
        order = [r.id for r in app.candidates(routes, random.Random(seed))]
        assert set(order[:2]) == {2, 4} and order[2:] == [3, 1]


def test_within_a_level_the_pick_is_spread_by_weight():
    routes = [route(1, 5, weight=1), route(2, 5, weight=3)]
    rng = random.Random(7)
    firsts = collections.Counter(app.candidates(routes, rng)[0].id for _ in range(4000))
    assert 0.2 < firsts[1] / 4000 < 0.3  # weight 1 of 4


def test_even_weights_spread_evenly():
    routes = [route(i, 1) for i in range(1, 5)]
    rng = random.Random(3)
    firsts = collections.Counter(app.candidates(routes, rng)[0].id for _ in range(4000))
    assert all(850 < n < 1150 for n in firsts.values())


def test_retry_decisions():
    for status in (401, 403, 408, 429, 500, 502, 503, 504):
        assert app.should_retry(status), status
    for status in (200, 400, 404, 413, 422):
        assert not app.should_retry(status), status


def test_mapping_and_serving():
    r = route(1, models=("real",), mapping={"alias": "real"})
    assert r.serves("alias") and r.serves("real") and not r.serves("other")
    assert r.upstream_model("alias") == "real" and r.upstream_model("real") == "real"


def test_channel_base_url_falls_back_to_the_provider_default():
    assert route(1).base_url == app.load_catalog()[1].default_base_url
    explicit = app.channel_route({"id": 2, "name": "x", "type": 1, "key": " k \n", "base_url": "http://h/v1",
                                  "models": ["m"]}, app.load_catalog())
    assert explicit.base_url == "http://h/v1" and explicit.key == "k"


def test_disabled_channels_are_not_offered(tmp_path):
    engine = app.make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    app.create_schema(engine)
    with engine.begin() as conn:
        conn.execute(app.sa.insert(app.Channel), [
            {"type": 1, "name": "on", "key": "k", "models": ["m"], "model_mapping": {}, "status": 1, "priority": 1},
            {"type": 1, "name": "off", "key": "k", "models": ["m", "only-off"], "model_mapping": {}, "status": 2,
             "priority": 9},
        ])
    table = app.load_routing_table(engine, app.load_catalog())
    assert [r.name for r in table.by_model["m"]] == ["on"]
    assert "only-off" not in table.by_model and "only-off" in table.known_models


def test_estimate_tokens():
    assert app.estimate_tokens(0) == 0 and app.estimate_tokens(3) == 1 and app.estimate_tokens(400) == 100


# ---- channel health, with the time passed in ----

def test_health_skips_a_cooling_pair_while_another_channel_is_ready():
    health, a, b = app.ChannelHealth(), route(1), route(2)
    assert health.arrange([a, b], "m", 100.0) == ([a, b], [])
    health.failed(1, "m", app.TRANSIENT, 500, "overloaded", now=100.0, disable_after=3)
    ready, skipped = health.arrange([a, b], "m", 101.0)
    assert ready == [b] and [(r.id, why) for r, why, _ in skipped] == [(1, "cooling_down")]
    assert "4.0 s more after overloaded" in skipped[0][2]
    assert health.arrange([a, b], "other-model", 101.0) == ([a, b], [])  # the pair, not the whole channel
    assert health.arrange([a, b], "m", 105.0) == ([a, b], [])  # its 5 s are over


def test_health_tries_the_soonest_ready_first_when_all_are_cooling():
    health, a, b = app.ChannelHealth(), route(1), route(2)
    health.failed(1, "m", app.TRANSIENT, 429, "slow down", now=0.0, disable_after=3, retry_after=30)
    health.failed(2, "m", app.TRANSIENT, 500, "overloaded", now=0.0, disable_after=3)
    assert health.arrange([a, b], "m", 1.0) == ([b, a], [])  # refused by none: b's 5 s end before a's 30


def test_health_cooldown_doubles_per_failure_in_a_row_up_to_its_cap():
    health = app.ChannelHealth(cooldown_base=5.0, cooldown_max=60.0)
    lengths, now = [], 0.0
    for _ in range(6):
        health.failed(1, "m", app.TRANSIENT, 500, "x", now=now, disable_after=3)
        until = health.cooling[(1, "m")].until
        lengths.append(until - now)
        now = until  # the next failure comes just as the cool-down ends
    assert lengths == [5, 10, 20, 40, 60, 60]
    health.failed(1, "m", app.TRANSIENT, 500, "x", now=now + 61, disable_after=3)  # long after: afresh
    assert health.cooling[(1, "m")].failures == 1 and health.cooling[(1, "m")].until == now + 61 + 5
    health.succeeded(1, "m")
    assert health.cooling == {}


def test_health_takes_retry_after_but_never_past_its_cap():
    health = app.ChannelHealth(cooldown_base=5.0, cooldown_max=300.0)
    health.failed(1, "m", app.TRANSIENT, 429, "x", now=10.0, disable_after=3, retry_after=42)
    health.failed(2, "m", app.TRANSIENT, 429, "x", now=10.0, disable_after=3, retry_after=86_400)
    assert health.cooling[(1, "m")].until == 52 and health.cooling[(2, "m")].until == 310


def test_health_disables_after_fatal_errors_in_a_row_and_a_success_resets_the_count():
    health, a, b = app.ChannelHealth(), route(1), route(2)
    assert not health.failed(1, "m", app.FATAL, 401, "bad key", now=0.0, disable_after=2)
    health.succeeded(1, "m")
    assert not health.failed(1, "m", app.FATAL, 401, "bad key", now=0.0, disable_after=2)
    assert health.failed(1, "m", app.FATAL, 401, "bad key", now=0.0, disable_after=2)  # the 2nd in a row
    assert not health.failed(1, "m", app.FATAL, 401, "bad key", now=0.0, disable_after=2)  # once only
    ready, skipped = health.arrange([a, b], "m", 0.0)
    assert ready == [b] and [(r.id, why, reason) for r, why, reason in skipped] == [(1, "auto_disabled", "bad key")]
    health.disabled(1)
    assert health.arrange([a, b], "m", 0.0) == ([a, b], [])
    assert not any(health.failed(3, "m", app.FATAL, 401, "x", now=0.0, disable_after=0) for _ in range(5))
