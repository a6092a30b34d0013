"""What AWS Bedrock's signing and framing cost (sections 10 and 11 of aiproxy_local.py), every arm in one run.

    python bench/signed_formats.py [--calls 200]

1. In process, min of several rounds: SigV4 signing (botocore) vs a Bedrock API key per request; splitting
   event-stream frames (both CRCs, headers) vs SSE events of the same content; pivot -> Converse vs pivot ->
   Anthropic for one request.
2. End to end: the app as a process, the openai SDK, tests/bedrock_upstream.py as Bedrock; non-stream chat on a
   SigV4 channel and on an API-key channel, interleaved call by call; median and p90 in ms.
Needs the test extra (botocore). Numbers only: nothing here asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import aiproxy_local as app  # noqa: E402
from bedrock_upstream import ACCESS_KEY, API_KEY, REGION, SECRET_KEY, BedrockApp, Served, event  # noqa: E402

CHAT = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi " * 50}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]}


def best(fn, rounds: int) -> float:
    return min(fn() for _ in range(rounds))


def per_call(fn, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - started) / n * 1e6


def in_process() -> None:
    catalog = app.load_catalog()
    sigv4, bearer = (app.channel_route({"id": i, "name": "b", "type": 33, "key": key, "base_url": "http://127.0.0.1:9"},
                                       catalog) for i, key in ((1, f"{REGION}|{ACCESS_KEY}|{SECRET_KEY}"),
                                                               (2, f"{REGION}|{API_KEY}")))
    body = json.dumps({"messages": [{"role": "user", "content": [{"text": "hi " * 600}]}]}).encode()
    url = "http://127.0.0.1:9/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse"

    def sign(channel):
        return lambda: asyncio.run(channel.adaptor.sign(None, channel, "POST", url, {
            "Content-Type": "application/json"}, body))

    run = asyncio.run  # one loop per call costs the same in both arms; it is subtracted below
    loop_only = best(lambda: per_call(lambda: run(asyncio.sleep(0)), 300), 5)
    print(f"sign a {len(body)} B request: SigV4 {best(lambda: per_call(sign(sigv4), 300), 5) - loop_only:.0f} µs, "
          f"API key {max(0.0, best(lambda: per_call(sign(bearer), 300), 5) - loop_only):.1f} µs (min of 5 x 300)")
    frame = event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "word "}})
    frames, sse = frame * 2000, b'data: {"contentBlockIndex":0,"delta":{"text":"word "}}\n\n' * 2000
    split = best(lambda: per_call(lambda: app.event_stream_messages(frames), 1) / 2000, 15)
    events = best(lambda: per_call(lambda: [app.sse_fields(e) for e in app.sse_events(sse)], 1) / 2000, 15)
    print(f"split a stream: event-stream {split:.2f} µs/frame ({len(frame)} B, CRCs and headers), "
          f"SSE {events:.2f} µs/event (min of 15 x 2,000)")
    converse = best(lambda: per_call(lambda: app.openai_to_converse_request(CHAT, "claude-sonnet-4-5"), 2000), 7)
    anthropic = best(lambda: per_call(lambda: app.openai_to_anthropic_request(CHAT, "claude-sonnet-4-5"), 2000), 7)
    print(f"convert one request: pivot -> Converse {converse:.1f} µs, pivot -> Anthropic {anthropic:.1f} µs")


def end_to_end(calls: int) -> None:
    from conftest import launch_app

    bedrock = Served(BedrockApp())
    server = launch_app(Path(tempfile.mkdtemp()))
    try:
        arms = {"SigV4": f"{REGION}|{ACCESS_KEY}|{SECRET_KEY}", "API key": f"{REGION}|{API_KEY}"}
        for name, key in arms.items():
            server.add_channel(type=33, name=name, key=key, base_url=bedrock.url,
                               model_mapping={name: "amazon.nova-pro-v1:0"})
        client, times = server.openai(), {name: [] for name in arms}
        for name in arms:  # warm-up
            client.chat.completions.create(model=name, messages=[{"role": "user", "content": "hi"}])
        for _ in range(calls):
            for name in arms:
                started = time.perf_counter()
                client.chat.completions.create(model=name, messages=[{"role": "user", "content": "hi"}])
                times[name].append((time.perf_counter() - started) * 1000)
        for name, values in times.items():
            values.sort()
            print(f"chat through the app, {name} channel: median {statistics.median(values):.2f} ms, "
                  f"p90 {values[int(len(values) * 0.9)]:.2f} ms (n={len(values)}, interleaved)")
    finally:
        server.stop()
        bedrock.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    in_process()
    end_to_end(parser.parse_args().calls)
