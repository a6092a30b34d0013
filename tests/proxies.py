"""Small real proxies for the per-channel proxy tests, written from the protocols' RFCs: an HTTP forward proxy
(RFC 9110/9112: absolute-form requests, CONNECT tunnels, `Proxy-Authorization: Basic`, 407 when it is missing or
wrong) and a SOCKS5 proxy (RFC 1928 with RFC 1929 username/password auth; a wrong password gets status 1 and the
connection closed). Each runs on its own event loop thread on a free loopback port and records what it relayed.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import struct
import threading
from typing import Any


class _Proxy:
    def __init__(self, user: str, password: str) -> None:
        self.user, self.password = user, password
        self.seen: list[dict[str, Any]] = []  # one entry per relayed connection or request
        self.refused = 0
        self.loop = asyncio.new_event_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.server = self.loop.run_until_complete(asyncio.start_server(self.handle, sock=sock))
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        ready.wait(10)

    def stop(self) -> None:
        async def shut() -> None:
            self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shut(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def _tunnel(client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                  target: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
    await asyncio.gather(_pipe(client[0], target[1]), _pipe(target[0], client[1]))


class HttpProxy(_Proxy):
    """`http://user:password@127.0.0.1:port`: forwards absolute-form requests (one per connection, sent on with
    `Connection: close`) and tunnels CONNECT."""

    def url(self, password: str | None = None) -> str:
        return f"http://{self.user}:{password or self.password}@127.0.0.1:{self.port}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ")
        headers = [line.split(":", 1) for line in lines[1:] if line]
        fields = {k.strip().lower(): v.strip() for k, v in headers}
        expected = "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        if fields.get("proxy-authorization") != expected:
            self.refused += 1
            writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"t\"\r\n"
                         b"Content-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            writer.close()
            return
        if method == "CONNECT":
            host, port = target.rsplit(":", 1)
            upstream = await asyncio.open_connection(host, int(port))
            self.seen.append({"method": method, "target": target})
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            return await _tunnel((reader, writer), upstream)
        parts = target.split("/", 3)  # http:, "", host:port, path
        host, _, port = parts[2].partition(":")
        path = "/" + (parts[3] if len(parts) > 3 else "")
        length = int(fields.get("content-length") or 0)
        body = await reader.readexactly(length) if length else b""
        self.seen.append({"method": method, "target": target, "body": body})
        kept = [f"{k}:{v}" for k, v in headers if k.strip().lower() not in (
            "proxy-authorization", "proxy-connection", "connection")]
        request = "\r\n".join([f"{method} {path} {version}", *kept, "Connection: close", "", ""]).encode("latin-1")
        up_reader, up_writer = await asyncio.open_connection(host, int(port or 80))
        up_writer.write(request + body)
        await up_writer.drain()
        await _pipe(up_reader, writer)
        up_writer.close()


class Socks5Proxy(_Proxy):
    """`socks5://user:password@127.0.0.1:port` (RFC 1928 CONNECT, RFC 1929 auth)."""

    def url(self, password: str | None = None, scheme: str = "socks5") -> str:
        return f"{scheme}://{self.user}:{password or self.password}@127.0.0.1:{self.port}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        version, count = await reader.readexactly(2)
        methods = await reader.readexactly(count)
        if version != 5 or 2 not in methods:
            writer.write(b"\x05\xff")
            return writer.close()
        writer.write(b"\x05\x02")  # username/password
        _, user_length = await reader.readexactly(2)
        user = (await reader.readexactly(user_length)).decode()
        password = (await reader.readexactly((await reader.readexactly(1))[0])).decode()
        if (user, password) != (self.user, self.password):
            self.refused += 1
            writer.write(b"\x01\x01")
            await writer.drain()
            return writer.close()
        writer.write(b"\x01\x00")
        _, command, _, kind = await reader.readexactly(4)
        if kind == 1:
            host = socket.inet_ntoa(await reader.readexactly(4))
        elif kind == 3:
            host = (await reader.readexactly((await reader.readexactly(1))[0])).decode()
        else:
            host = socket.inet_ntop(socket.AF_INET6, await reader.readexactly(16))
        port = struct.unpack(">H", await reader.readexactly(2))[0]
        if command != 1:
            writer.write(b"\x05\x07\x00\x01\0\0\0\0\0\0")
            return writer.close()
        upstream = await asyncio.open_connection(host, port)
        self.seen.append({"host": host, "port": port, "address_type": kind})
        writer.write(b"\x05\x00\x00\x01\0\0\0\0\0\0")
        await writer.drain()
        await _tunnel((reader, writer), upstream)
