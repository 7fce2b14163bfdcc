"""A pika client's W3C trace context is continued by a Lepus worker (issue 17, Done means 2).

pika sends an RPC request with a ``traceparent`` header (and a ``tracestate``) to the
``traced_worker`` example (``examples/traced_worker.rs``: OpenTelemetry set up with
``lepus::otel::install_with``), whose handler answers with the trace id and span id of the
worker's own server span. That span must be in the client's trace (same trace id) and be a new
span (not the client's span id). A request without ``traceparent`` starts a trace of its own,
and a malformed one is ignored, not fatal.

The worker binary is ``LEPUS_TRACED_WORKER_BIN`` (``.ci/run`` sets it; it must exist then),
else ``target/release/examples/traced_worker`` when built, else the tests are skipped.
"""

import os
import pathlib
import queue
import secrets
import subprocess
import threading
import time

import pika
import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
DEADLINE_S = 20.0


def _binary():
    named = os.environ.get("LEPUS_TRACED_WORKER_BIN")
    if named:
        path = pathlib.Path(named)
        assert path.exists(), f"LEPUS_TRACED_WORKER_BIN={named} does not exist"
        return path
    path = REPO_ROOT / "target" / "release" / "examples" / "traced_worker"
    if not path.exists():
        pytest.skip("build it with `cargo build --release --example traced_worker`")
    return path


@pytest.fixture
def traced_worker(amqp_url, unique):
    """Starts the traced worker on a fresh queue; yields the queue name."""
    name = unique("traced")
    proc = subprocess.Popen(
        [str(_binary()), "--url", amqp_url, "--queue", name, "--seconds", "120"],
        stdout=subprocess.PIPE,
        stderr=None,
        text=True,
    )
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(l) for l in proc.stdout], daemon=True).start()
    try:
        first = lines.get(timeout=DEADLINE_S)
    except queue.Empty:
        proc.kill()
        pytest.fail("the traced worker did not start")
    assert first.strip() == f"serving {name}", first
    yield name
    proc.terminate()
    assert proc.wait(timeout=DEADLINE_S) == 0


def _call(connect, queue_name, headers):
    """Calls trace_echo with `headers`; returns its answer, `<trace id>-<span id>`."""
    conn = connect()
    ch = conn.channel()
    replies = []
    ch.basic_consume(
        "amq.rabbitmq.reply-to",
        lambda _ch, _m, props, body: replies.append((props, body)),
        auto_ack=True,
    )
    correlation_id = secrets.token_hex(16)
    ch.basic_publish(
        exchange="",
        routing_key=queue_name,
        properties=pika.BasicProperties(
            content_type="application/msgpack",
            correlation_id=correlation_id,
            reply_to="amq.rabbitmq.reply-to",
            type="trace_echo",
            headers=headers,
        ),
        body=b"\x90",  # no arguments: the empty MessagePack array
    )
    deadline = time.monotonic() + DEADLINE_S
    while not replies and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.1)
    assert replies, "no reply"
    props, body = replies[0]
    assert props.correlation_id == correlation_id
    # Ok reply (92 00) holding a str8 (d9 <len>) of 49 bytes.
    assert body[:4] == b"\x92\x00\xd9\x31", body
    return body[4:].decode()


def test_a_pika_traceparent_is_continued_by_the_worker_span(connect, traced_worker):
    trace_id = secrets.token_hex(16)
    client_span = secrets.token_hex(8)
    headers = {
        "traceparent": f"00-{trace_id}-{client_span}-01",
        "tracestate": "pika=1",
    }
    answer = _call(connect, traced_worker, headers)
    worker_trace, worker_span = answer.split("-")
    assert worker_trace == trace_id
    assert worker_span != client_span and len(worker_span) == 16


def test_without_or_with_a_bad_traceparent_the_worker_starts_its_own_trace(
    connect, traced_worker
):
    answers = {
        _call(connect, traced_worker, headers).split("-")[0]
        for headers in [None, {"traceparent": "00-zz-not-a-trace"}, {"traceparent": 7}]
    }
    assert len(answers) == 3
    assert all(len(t) == 32 and t != "0" * 32 for t in answers)
