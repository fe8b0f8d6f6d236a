"""The HTTP door keeps idle keep-alive connections open for `keep_alive_s` (real uvicorn on
port 0, a raw socket as the client): a client's pooled connection is not closed under it."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI

from services.gateway.frontends.http import HttpServer

REQUEST = b"GET /ping HTTP/1.1\r\nHost: door\r\n\r\n"


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/ping")
    async def ping() -> dict[str, bool]:
        return {"ok": True}

    return app


async def _second_request_after_idle(keep_alive_s: float, idle_s: float) -> bytes:
    """The status line of a second request sent on the same connection after `idle_s`
    (b"" when the door closed it)."""
    async with HttpServer(_app(), "127.0.0.1", 0, keep_alive_s=keep_alive_s) as door:
        reader, writer = await asyncio.open_connection("127.0.0.1", door.port)
        try:
            writer.write(REQUEST)
            first = await asyncio.wait_for(reader.readuntil(b'{"ok":true}'), 10)
            assert first.startswith(b"HTTP/1.1 200")
            await asyncio.sleep(idle_s)
            try:
                writer.write(REQUEST)
                await writer.drain()
                return await asyncio.wait_for(reader.readline(), 10)
            except ConnectionError:
                return b""
        finally:
            writer.close()


async def test_an_idle_connection_outlives_uvicorns_default() -> None:
    assert (await _second_request_after_idle(keep_alive_s=10, idle_s=2.2)).startswith(
        b"HTTP/1.1 200")


async def test_an_idle_connection_past_keep_alive_is_closed() -> None:
    assert await _second_request_after_idle(keep_alive_s=1, idle_s=2.2) == b""
