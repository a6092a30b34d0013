"""The bare relay: the practical limit for a Python gateway (raw ASGI, one aiohttp session,
no routing, auth or logging). python bench/bare_relay.py --port P --upstream http://127.0.0.1:U"""
import argparse, aiohttp, uvicorn

def make_app(upstream):
    st = {}
    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while (m := await receive())["type"] != "lifespan.shutdown":
                st["s"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=500),
                                                auto_decompress=False, skip_auto_headers=("User-Agent",))
                await send({"type": "lifespan.startup.complete"})
            await st["s"].close(); return await send({"type": "lifespan.shutdown.complete"})
        body, more = b"", True
        while more:
            m = await receive(); body += m.get("body", b""); more = m.get("more_body", False)
        hdrs = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}
        async with st["s"].request(scope["method"], upstream + scope["path"], data=body, headers=hdrs) as r:
            ct = r.headers.get("Content-Type", "application/json").encode()
            if ct.startswith(b"text/event-stream"):
                await send({"type": "http.response.start", "status": r.status, "headers": [(b"content-type", ct)]})
                async for chunk in r.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                return await send({"type": "http.response.body", "body": b""})
            data = await r.read()
            await send({"type": "http.response.start", "status": r.status, "headers": [
                (b"content-type", ct), (b"content-length", str(len(data)).encode())]})
            await send({"type": "http.response.body", "body": data})
    return app

if __name__ == "__main__":
    ap = argparse.ArgumentParser(); ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=18100); ap.add_argument("--upstream", required=True)
    a = ap.parse_args()
    uvicorn.run(make_app(a.upstream.rstrip("/")), host=a.host, port=a.port, loop="uvloop", http="httptools",
                access_log=False, log_level="warning", backlog=4096)
