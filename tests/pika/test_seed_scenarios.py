"""The seed document's RabbitMQ scenarios (pika tutorials), run with pika 1.x unchanged but for
the URL: hello world, work queue with manual ack and redelivery when a consumer dies, durable
queue + persistent message, prefetch_count=1 fair dispatch, fanout logs, direct routing by
severity, topic routing, and the fib RPC with reply_to + correlation_id.

Every wait is bounded by DEADLINE_S; names come from the ``unique`` fixture because the
reference RabbitMQ is shared.
"""

import threading
import time
import uuid

import pika
import pika.exceptions
import pytest

DEADLINE_S = 10.0


def pump_until(connections, done, deadline_s=DEADLINE_S):
    """Runs pika's I/O on ``connections`` until ``done()`` is true; fails after the deadline."""
    end = time.monotonic() + deadline_s
    while not done():
        if time.monotonic() > end:
            pytest.fail("condition not met within the deadline")
        for conn in connections:
            conn.process_data_events(time_limit=0.02)


def get_all(channel, queue_name):
    """Drains ``queue_name`` with basic_get (auto-ack) and returns the bodies."""
    bodies = []
    while True:
        method, _props, body = channel.basic_get(queue_name, auto_ack=True)
        if method is None:
            return bodies
        bodies.append(body)


def durable_queue_channel(connect, queue_name):
    """A channel on a new connection, with the durable queue ``queue_name`` declared on it."""
    channel = connect().channel()
    channel.queue_declare(queue=queue_name, durable=True)
    return channel


def exchange_channel(connect, exchange, exchange_type):
    """A channel on a new connection, with ``exchange`` of ``exchange_type`` declared on it."""
    channel = connect().channel()
    channel.exchange_declare(exchange=exchange, exchange_type=exchange_type)
    return channel


def publish_persistent(channel, queue_name, body):
    """Publishes ``body`` to ``queue_name`` through the default exchange as a persistent message
    (delivery_mode 2), as the work-queue tutorial does."""
    channel.basic_publish(
        exchange="",
        routing_key=queue_name,
        body=body,
        properties=pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent),
    )


def test_hello_world(connect, unique):
    queue_name = unique("hello")
    producer = connect()
    channel = producer.channel()
    channel.queue_declare(queue=queue_name)
    channel.basic_publish(exchange="", routing_key=queue_name, body="Hello World!")
    producer.close()

    consumer = connect()
    channel = consumer.channel()
    # Both sides declare the queue, since either may start first.
    channel.queue_declare(queue=queue_name)
    received = []

    def callback(ch, method, properties, body):
        received.append(body)

    channel.basic_consume(queue=queue_name, on_message_callback=callback, auto_ack=True)
    pump_until([consumer], lambda: received)
    assert received == [b"Hello World!"]
    channel.queue_delete(queue=queue_name)


def test_work_queue_redelivers_when_a_consumer_dies(connect, unique):
    queue_name = unique("task_queue")
    pchannel = durable_queue_channel(connect, queue_name)
    tasks = [f"task {i}".encode() for i in range(3)]
    for body in tasks:
        publish_persistent(pchannel, queue_name, body)

    # Worker A takes every task and dies before acking any.
    worker_a = connect()
    achannel = worker_a.channel()
    got_a = []
    achannel.basic_consume(
        queue=queue_name,
        on_message_callback=lambda ch, m, p, body: got_a.append((body, m.redelivered)),
    )
    pump_until([worker_a], lambda: len(got_a) == 3)
    assert got_a == [(body, False) for body in tasks]
    worker_a.close()

    # Worker B gets them all again, flagged redelivered, in the original order, and acks.
    worker_b = connect()
    bchannel = worker_b.channel()
    got_b = []

    def work(ch, method, properties, body):
        got_b.append((body, method.redelivered))
        ch.basic_ack(delivery_tag=method.delivery_tag)

    bchannel.basic_consume(queue=queue_name, on_message_callback=work)
    pump_until([worker_b], lambda: len(got_b) == 3)
    assert got_b == [(body, True) for body in tasks]
    worker_b.close()

    # Acked: nothing left.
    declared = pchannel.queue_declare(queue=queue_name, durable=True, passive=True)
    assert declared.method.message_count == 0
    pchannel.queue_delete(queue=queue_name)


def test_durable_queue_and_persistent_message(connect, unique):
    queue_name = unique("hello1")
    channel = durable_queue_channel(connect, queue_name)
    publish_persistent(channel, queue_name, "Hello World!")
    # Another client redeclaring it durable is fine; the message waits for it.
    other = connect()
    ochannel = other.channel()
    declared = ochannel.queue_declare(queue=queue_name, durable=True)
    assert declared.method.message_count == 1
    method, props, body = ochannel.basic_get(queue_name, auto_ack=True)
    assert body == b"Hello World!"
    assert props.delivery_mode == 2
    # Redeclaring it non-durable is a mismatch the broker refuses (406 PRECONDITION_FAILED).
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
        ochannel.queue_declare(queue=queue_name, durable=False)
    assert refused.value.reply_code == 406
    channel.queue_delete(queue=queue_name)


def test_prefetch_count_one_fair_dispatch(connect, unique):
    queue_name = unique("hello1")
    pchannel = durable_queue_channel(connect, queue_name)

    # The slow consumer holds its message (as if sleeping in the callback); the fast one acks
    # at once. With prefetch_count=1 the broker never sends the slow one a second message.
    slow = connect()
    schannel = slow.channel()
    schannel.basic_qos(prefetch_count=1)
    held = []
    schannel.basic_consume(
        queue=queue_name, on_message_callback=lambda ch, m, p, body: held.append((m, body))
    )
    fast = connect()
    fchannel = fast.channel()
    fchannel.basic_qos(prefetch_count=1)
    done_fast = []

    def fast_worker(ch, method, properties, body):
        done_fast.append(body)
        ch.basic_ack(delivery_tag=method.delivery_tag)

    fchannel.basic_consume(queue=queue_name, on_message_callback=fast_worker)
    for i in range(6):
        publish_persistent(pchannel, queue_name, f"task {i}")
    pump_until([slow, fast], lambda: len(held) + len(done_fast) == 6)
    # Let any over-delivery show up before judging.
    end = time.monotonic() + 0.3
    while time.monotonic() < end:
        for conn in (slow, fast):
            conn.process_data_events(time_limit=0.02)
    assert len(held) == 1, f"slow consumer got {len(held)} with prefetch_count=1"
    assert len(done_fast) == 5
    # The slow consumer finally acks; nothing is left.
    schannel.basic_ack(delivery_tag=held[0][0].delivery_tag)
    slow.process_data_events(time_limit=0.05)
    assert sorted(done_fast + [held[0][1]]) == sorted(f"task {i}".encode() for i in range(6))
    pchannel.queue_delete(queue=queue_name)


def _bind_exclusive_queue(conn, exchange, keys):
    channel = conn.channel()
    # Server-named, exclusive: deleted when this consumer's connection goes.
    result = channel.queue_declare(queue="", exclusive=True)
    queue_name = result.method.queue
    assert queue_name.startswith("amq.gen-")
    for key in keys:
        channel.queue_bind(exchange=exchange, queue=queue_name, routing_key=key)
    received = []
    channel.basic_consume(
        queue=queue_name,
        on_message_callback=lambda ch, m, p, body: received.append((m.routing_key, body)),
        auto_ack=True,
    )
    return received


def test_fanout_logs(connect, unique):
    exchange = unique("logs")
    pchannel = exchange_channel(connect, exchange, "fanout")
    # Published before anyone listens: like a radio, lost.
    pchannel.basic_publish(exchange=exchange, routing_key="", body="nobody hears this")

    consumers = [connect(), connect()]
    received = []
    for conn in consumers:
        conn.channel().exchange_declare(exchange=exchange, exchange_type="fanout")
        received.append(_bind_exclusive_queue(conn, exchange, [""]))
    pchannel.basic_publish(exchange=exchange, routing_key="", body="info:Hello World!")
    pump_until(consumers, lambda: all(received))
    for got in received:
        assert got == [("", b"info:Hello World!")]
    pchannel.exchange_delete(exchange=exchange)


def test_direct_routing_by_severity(connect, unique):
    exchange = unique("direct_logs")
    pchannel = exchange_channel(connect, exchange, "direct")
    errors_only_conn, everything_conn = connect(), connect()
    errors_only = _bind_exclusive_queue(errors_only_conn, exchange, ["error"])
    everything = _bind_exclusive_queue(everything_conn, exchange, ["info", "warning", "error"])
    for severity in ["info", "warning", "error", "debug"]:
        pchannel.basic_publish(exchange=exchange, routing_key=severity, body=f"{severity}: msg")
    pump_until([errors_only_conn, everything_conn], lambda: len(everything) == 3)
    pump_until([errors_only_conn], lambda: len(errors_only) == 1)
    assert errors_only == [("error", b"error: msg")]
    assert everything == [
        ("info", b"info: msg"),
        ("warning", b"warning: msg"),
        ("error", b"error: msg"),
    ]
    pchannel.exchange_delete(exchange=exchange)


def test_topic_routing(connect, unique):
    exchange = unique("topic_logs")
    pchannel = exchange_channel(connect, exchange, "topic")
    conns = [connect(), connect(), connect()]
    kern = _bind_exclusive_queue(conns[0], exchange, ["kern.*"])
    critical = _bind_exclusive_queue(conns[1], exchange, ["*.critical"])
    everything = _bind_exclusive_queue(conns[2], exchange, ["#"])
    keys = ["kern.critical", "kern.info", "app.critical", "app.info.detail", "kern"]
    for key in keys:
        pchannel.basic_publish(exchange=exchange, routing_key=key, body=key)
    pump_until(conns, lambda: len(everything) == len(keys))
    pump_until(conns, lambda: len(kern) == 2 and len(critical) == 2)
    assert [k for k, _ in kern] == ["kern.critical", "kern.info"]
    assert [k for k, _ in critical] == ["kern.critical", "app.critical"]
    assert [k for k, _ in everything] == keys
    pchannel.exchange_delete(exchange=exchange)


def fib(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def _rpc_server(amqp_url, queue_name, ready, stop):
    """The tutorial's RPC server: replies fib(n) to reply_to with the request's correlation_id."""
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = conn.channel()
    channel.queue_declare(queue=queue_name)
    channel.basic_qos(prefetch_count=1)

    def on_request(ch, method, props, body):
        response = fib(int(body))
        ch.basic_publish(
            exchange="",
            routing_key=props.reply_to,
            properties=pika.BasicProperties(correlation_id=props.correlation_id),
            body=str(response),
        )
        ch.basic_ack(delivery_tag=method.delivery_tag)

    channel.basic_consume(queue=queue_name, on_message_callback=on_request)
    ready.set()
    while not stop.is_set():
        conn.process_data_events(time_limit=0.05)
    channel.queue_delete(queue=queue_name)
    conn.close()


class FibRpcClient:
    """The tutorial's RPC client: an exclusive callback queue and a correlation_id per call."""

    def __init__(self, conn, server_queue, callback_queue=None):
        self.conn = conn
        self.server_queue = server_queue
        self.channel = conn.channel()
        if callback_queue is None:
            result = self.channel.queue_declare(queue="", exclusive=True)
            callback_queue = result.method.queue
        self.callback_queue = callback_queue
        # auto_ack as in the tutorial (and required for direct reply-to).
        self.channel.basic_consume(
            queue=self.callback_queue, on_message_callback=self.on_response, auto_ack=True
        )
        self.responses = {}

    def on_response(self, ch, method, props, body):
        self.responses[props.correlation_id] = body

    def call(self, n):
        corr_id = str(uuid.uuid4())
        self.channel.basic_publish(
            exchange="",
            routing_key=self.server_queue,
            properties=pika.BasicProperties(reply_to=self.callback_queue, correlation_id=corr_id),
            body=str(n),
        )
        pump_until([self.conn], lambda: corr_id in self.responses)
        return int(self.responses.pop(corr_id))


@pytest.fixture
def fib_server(amqp_url, unique):
    queue_name = unique("rpc_queue")
    ready, stop = threading.Event(), threading.Event()
    errors = []

    def run():
        try:
            _rpc_server(amqp_url, queue_name, ready, stop)
        except Exception as exc:  # reported by the test below
            errors.append(exc)
            ready.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(DEADLINE_S), "RPC server did not start"
    yield queue_name
    stop.set()
    thread.join(DEADLINE_S)
    assert not errors, errors


def test_fib_rpc_with_reply_to_and_correlation_id(connect, fib_server):
    client = FibRpcClient(connect(), fib_server)
    assert client.callback_queue.startswith("amq.gen-")
    for n in [0, 1, 2, 10, 30]:
        assert client.call(n) == fib(n)
    assert client.call(30) == 832040


def test_fib_rpc_over_direct_reply_to(connect, fib_server):
    # The same server, unchanged; the client uses RabbitMQ's pseudo-queue instead of its own.
    client = FibRpcClient(connect(), fib_server, callback_queue="amq.rabbitmq.reply-to")
    for n in [5, 20]:
        assert client.call(n) == fib(n)
