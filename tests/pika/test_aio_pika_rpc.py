"""aio-pika's RPC pattern (``aio_pika.patterns.RPC``) end to end, unchanged but for the URL.

``RPC.close()`` cancels its reply consumer (which auto-deletes the reply queue and, with its
last binding, the auto-delete headers exchange), then unbinds the queue from that exchange and
deletes the queue: both must answer ``-ok`` for what is already gone, as RabbitMQ does (issue 13
item 7; Lepus used to close the channel with 404 there). Runs against the bundled broker and,
in CI, against RabbitMQ.
"""

import asyncio

import aio_pika
from aio_pika.patterns import RPC

DEADLINE_S = 10.0


async def multiply(*, x, y):
    return x * y


def test_rpc_pattern_calls_and_closes_cleanly(amqp_url, unique):
    method = unique("multiply").replace(".", "_")

    async def scenario():
        server_conn = await aio_pika.connect(amqp_url)
        client_conn = await aio_pika.connect(amqp_url)
        try:
            server_ch = await server_conn.channel()
            client_ch = await client_conn.channel()
            server = await RPC.create(server_ch)
            await server.register(method, multiply, auto_delete=True)
            client = await RPC.create(client_ch)
            results = await asyncio.gather(
                *(client.call(method, kwargs={"x": i, "y": 3}) for i in range(10))
            )
            assert results == [i * 3 for i in range(10)]

            # The teardown that failed on Lepus: cancel, unbind and delete of what is gone.
            await client.close()
            await server.close()
            assert not client_ch.is_closed, "RPC.close() left the client channel open"
            assert not server_ch.is_closed, "RPC.close() left the server channel open"

            # The channels still work after the teardown.
            probe = await client_ch.declare_queue(exclusive=True)
            await probe.delete()

            # A second client on the same channel can start over.
            again = await RPC.create(client_ch)
            server = await RPC.create(server_ch)
            await server.register(method, multiply, auto_delete=True)
            assert await again.call(method, kwargs={"x": 7, "y": 6}) == 42
            await again.close()
            await server.close()
        finally:
            await client_conn.close()
            await server_conn.close()

    asyncio.run(asyncio.wait_for(scenario(), DEADLINE_S))
