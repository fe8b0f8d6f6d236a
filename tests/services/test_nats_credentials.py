"""The local stack's nats-server requires credentials; clients take them from the URL."""

from __future__ import annotations

import nats
import pytest

from services.common.natsd import NatsServer

pytestmark = pytest.mark.nats


async def test_credentials_are_required_and_taken_from_the_url() -> None:
    async with NatsServer(user="cmesh", password="s3cret") as server:
        assert "s3cret" in server.url and "s3cret" not in server.public_url
        with pytest.raises(Exception, match=r"(?i)authoriz"):
            await nats.connect(server.public_url, max_reconnect_attempts=0,
                               allow_reconnect=False, connect_timeout=2)
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await js.add_stream(name="T", subjects=["t.>"])
        ack = await js.publish("t.x", b"hi")
        assert ack.seq == 1
        await nc.close()
