"""Bench upstream: a raw-ASGI fake OpenAI endpoint serving precomputed bytes.

POST /v1/chat/completions (also /chat/completions, /v1/completions):
  * non-stream: a fixed ~600 B chat.completion with usage;
  * stream (body has "stream": true): a role chunk, N content chunks, a finish chunk
    carrying usage, then `data: [DONE]`, every event its own write, spaced --gap-ms apart.
POST /v1/messages (Anthropic's format, for S7's conversion cost):
  * non-stream: the same text as a fixed Anthropic message with usage;
  * stream: message_start, content_block_start, N text_delta events (the same " tokNNN" pieces),
    content_block_stop, message_delta with usage, message_stop; each its own write, --gap-ms apart.
  --delay-ms is applied before the first byte of every answer.
GET /count -> {"requests": n, "stream": m}  (lets the bench prove there are no hidden retries)
GET /health -> ok

Run: python bench/upstream.py --port 18001 [--delay-ms 0|20|50] [--chunks 20] [--gap-ms 20]
"""
import argparse
import asyncio
import json

CREATED = 1764201600
MODEL = "bench-model"
ANSWER_TEXT = ("Hello! This is a fixed answer from the aiproxy-local bench upstream. "
               "It is precomputed once so that the upstream costs as little CPU as possible, "
               "and every arm of the bench receives exactly the same bytes.")


def build_answer() -> bytes:
    body = {
        "id": "chatcmpl-bench0000000000000000000000",
        "object": "chat.completion",
        "created": CREATED,
        "model": MODEL,
        "system_fingerprint": "fp_bench",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": ANSWER_TEXT, "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }],
        "usage": {"prompt_tokens": 12, "completion_tokens": 48, "total_tokens": 60,
                  "prompt_tokens_details": {"cached_tokens": 0},
                  "completion_tokens_details": {"reasoning_tokens": 0}},
    }
    return json.dumps(body, separators=(",", ":")).encode()


def build_stream(n_chunks: int) -> list:
    def ev(choices, usage=None):
        d = {"id": "chatcmpl-bench0000000000000000000000", "object": "chat.completion.chunk",
             "created": CREATED, "model": MODEL, "system_fingerprint": "fp_bench",
             "choices": choices}
        if usage is not None:
            d["usage"] = usage
        return b"data: " + json.dumps(d, separators=(",", ":")).encode() + b"\n\n"

    events = [ev([{"index": 0, "delta": {"role": "assistant", "content": ""},
                   "logprobs": None, "finish_reason": None}])]
    for i in range(n_chunks):
        events.append(ev([{"index": 0, "delta": {"content": f" tok{i:03d}"},
                           "logprobs": None, "finish_reason": None}]))
    events.append(ev([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}],
                     {"prompt_tokens": 12, "completion_tokens": n_chunks,
                      "total_tokens": 12 + n_chunks}))
    events.append(b"data: [DONE]\n\n")
    return events


def build_anthropic_answer() -> bytes:
    body = {"id": "msg_bench0000000000000000", "type": "message", "role": "assistant", "model": MODEL,
            "content": [{"type": "text", "text": ANSWER_TEXT}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 12, "output_tokens": 48, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0}}
    return json.dumps(body, separators=(",", ":")).encode()


def build_anthropic_stream(n_chunks: int) -> list:
    def ev(kind, **data):
        return f"event: {kind}\ndata: {json.dumps({'type': kind, **data}, separators=(',', ':'))}\n\n".encode()

    message = {"id": "msg_bench0000000000000000", "type": "message", "role": "assistant", "model": MODEL,
               "content": [], "stop_reason": None, "stop_sequence": None,
               "usage": {"input_tokens": 12, "output_tokens": 1}}
    events = [ev("message_start", message=message),
              ev("content_block_start", index=0, content_block={"type": "text", "text": ""})]
    events += [ev("content_block_delta", index=0, delta={"type": "text_delta", "text": f" tok{i:03d}"})
               for i in range(n_chunks)]
    events += [ev("content_block_stop", index=0),
               ev("message_delta", delta={"stop_reason": "end_turn", "stop_sequence": None},
                  usage={"output_tokens": n_chunks}),
               ev("message_stop")]
    return events


def make_app(delay_ms: float, n_chunks: int, gap_ms: float):
    answer = build_answer()
    events = build_stream(n_chunks)
    anthropic_answer = build_anthropic_answer()
    anthropic_events = build_anthropic_stream(n_chunks)
    delay = delay_ms / 1000.0
    gap = gap_ms / 1000.0
    json_start = {"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]}
    json_body = {"type": "http.response.body", "body": answer}
    sse_start = {"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]}
    counts = {"requests": 0, "stream": 0}

    async def small(send, status, body, ctype=b"application/json"):
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", ctype), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if scope["method"] == "GET":
            path = scope["path"]
            if path == "/count":
                return await small(send, 200, json.dumps(counts).encode())
            if path == "/reset":
                counts["requests"] = counts["stream"] = 0
                return await small(send, 200, b"{}")
            if path.endswith("/models"):
                return await small(send, 200, b'{"object":"list","data":[{"id":"bench-model",'
                                   b'"object":"model","created":0,"owned_by":"bench"}]}')
            return await small(send, 200, b"ok", b"text/plain")
        body = b""
        more = True
        while more:
            msg = await receive()
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
        counts["requests"] += 1
        stream = b'"stream":true' in body.replace(b" ", b"")
        anthropic = scope["path"].endswith("/messages")
        if delay:
            await asyncio.sleep(delay)
        if not stream:
            if anthropic:
                return await small(send, 200, anthropic_answer)
            await send(json_start)
            await send(json_body)
            return
        counts["stream"] += 1
        await send(sse_start)
        chosen = anthropic_events if anthropic else events
        last = len(chosen) - 1
        for i, e in enumerate(chosen):
            if i and gap:
                await asyncio.sleep(gap)
            await send({"type": "http.response.body", "body": e, "more_body": i != last})

    return app


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=18001)
    ap.add_argument("--delay-ms", type=float, default=0.0, help="delay before the first byte (0, 20, 50)")
    ap.add_argument("--chunks", type=int, default=20, help="content chunks per stream")
    ap.add_argument("--gap-ms", type=float, default=20.0, help="gap between stream events")
    a = ap.parse_args()
    import uvicorn
    uvicorn.run(make_app(a.delay_ms, a.chunks, a.gap_ms), host=a.host, port=a.port, loop="uvloop",
                http="httptools", access_log=False, log_level="warning", lifespan="on",
                backlog=4096)


if __name__ == "__main__":
    main()
