"""Log writer: GET /metrics (issue 18, part 9), what the log records, counted in memory and served in
Prometheus' text format by the official prometheus_client, read back here with prometheus_client's own parser.
Calls, errors, latency and tokens by channel, model and endpoint; refusals at the door; cool-downs and
auto-disables; the gateway's own overhead (a call's time minus the time it waited on upstreams) as a histogram.
Labels stay bounded whatever clients send."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import launch_app, unique
from fake_upstream import count_prompt_tokens

METRICS_TOKEN = "metrics-token-for-the-scraper"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    app = launch_app(tmp_path_factory.mktemp("metrics"), env={"METRICS_TOKEN": METRICS_TOKEN},
                     args=["--no-ui"])
    yield app
    app.stop()


def scrape(server: Any, token: str) -> dict[str, dict[tuple, float]]:
    """name of each sample -> {sorted label pairs: value}, parsed by prometheus_client's own parser."""
    r = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain"), r.text
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def value(samples: dict[str, dict[tuple, float]], name: str, **labels: str) -> float:
    return samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


def test_metrics_need_the_admin_key_or_the_metrics_token(server: Any) -> None:
    assert httpx.get(f"{server.url}/metrics").status_code == 401
    assert httpx.get(f"{server.url}/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    scrape(server, server.admin_key)
    scrape(server, METRICS_TOKEN)


def test_calls_tokens_errors_and_overhead_are_counted(server: Any, upstream: Any) -> None:
    model, client = unique("m"), server.openai()
    channel = server.add_channel(base_url=upstream.url("ok"), models=[model])
    before = scrape(server, METRICS_TOKEN)
    where = {"channel": str(channel), "model": model, "endpoint": "/v1/chat/completions"}
    usage = []
    for i in range(3):
        usage.append(client.chat.completions.create(model=model, messages=[
            {"role": "user", "content": "count me " * (i + 1)}]).usage)
    stream = list(client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                                 stream=True, stream_options={"include_usage": True}))
    usage.append(stream[-1].usage)
    with pytest.raises(openai.AuthenticationError):
        server.openai(api_key="sk-not-a-key").chat.completions.create(model=model, messages=[
            {"role": "user", "content": "hi"}])
    after = scrape(server, METRICS_TOKEN)
    assert value(after, "aiproxy_calls_total", **where, code="200") == 4
    assert value(after, "aiproxy_call_seconds_count", **where) == 4
    assert value(after, "aiproxy_tokens_total", channel=str(channel), model=model, kind="input") == sum(
        u.prompt_tokens for u in usage) == sum(count_prompt_tokens({"messages": [{"content": "count me " * n}]})
                                                for n in (1, 2, 3)) + usage[-1].prompt_tokens
    assert value(after, "aiproxy_tokens_total", channel=str(channel), model=model, kind="output") == sum(
        u.completion_tokens for u in usage)
    assert value(after, "aiproxy_refused_total", code="401") - value(before, "aiproxy_refused_total", code="401") == 1
    calls = value(after, "aiproxy_overhead_seconds_count") - value(before, "aiproxy_overhead_seconds_count")
    assert calls == 4
    overhead = value(after, "aiproxy_overhead_seconds_sum") - value(before, "aiproxy_overhead_seconds_sum")
    assert 0 < overhead < value(after, "aiproxy_call_seconds_sum", **where)  # the upstream's wait is not ours
    buckets = {dict(k)["le"]: v for k, v in after["aiproxy_overhead_seconds_bucket"].items()}
    assert buckets["+Inf"] == value(after, "aiproxy_overhead_seconds_count")


def test_failures_cooldowns_and_auto_disables(server: Any, upstream: Any) -> None:
    model = unique("m")
    broken = server.add_channel(base_url=upstream.url("status-500"), models=[model], priority=10)
    revoked = server.add_channel(base_url=upstream.url("status-401"), models=[model], priority=5)
    spare = server.add_channel(base_url=upstream.url("ok"), models=[model], priority=1)
    client = server.openai()
    for _ in range(3):
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    deadline = time.monotonic() + 10
    while True:  # the auto-disable is written in the background
        samples = scrape(server, server.admin_key)
        if value(samples, "aiproxy_channel_auto_disables_total", channel=str(revoked)) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert value(samples, "aiproxy_channel_auto_disables_total", channel=str(revoked)) == 1
    assert value(samples, "aiproxy_channels_auto_disabled") >= 1
    assert value(samples, "aiproxy_channel_cooldowns_total", channel=str(broken)) >= 1
    assert value(samples, "aiproxy_channel_cooling_down", channel=str(broken)) == 1
    assert value(samples, "aiproxy_calls_total", channel=str(spare), model=model,
                 endpoint="/v1/chat/completions", code="200") == 3


def test_labels_stay_bounded_whatever_clients_send(server: Any, upstream: Any) -> None:
    model = unique("m")
    server.add_channel(base_url=upstream.url("ok"), models=[model])
    client = server.openai()
    for _ in range(5):
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model=unique("nobody"), messages=[{"role": "user", "content": "hi"}])
    created = client.responses.create(model=model, input="hello")
    client.responses.retrieve(created.id)
    samples = scrape(server, server.admin_key)
    labels = [dict(k) for k in samples["aiproxy_calls_total"]]
    assert not any(l["model"].startswith("nobody") for l in labels)
    assert value(samples, "aiproxy_calls_total", channel="0", model="other", endpoint="/v1/chat/completions",
                 code="404") >= 5
    assert not any(created.id in l["endpoint"] for l in labels)
    assert any(l["endpoint"] == "responses:responses_get" for l in labels)
