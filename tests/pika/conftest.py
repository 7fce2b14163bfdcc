"""Fixtures for the pika scenario tests: which broker to talk to, and collision-free names.

The broker is the one named by ``LEPUS_TEST_AMQP_URL`` when it is set (CI points it at RabbitMQ
to check the scenarios against the reference). Otherwise the session starts the bundled broker
binary named by ``LEPUS_BROKER_BIN`` (default ``target/release/lepus-broker`` under the repo
root) with ``--listen 127.0.0.1:0 --data-dir <tmpdir>``, reads the port from its first stdout
line ``lepus-broker listening on 127.0.0.1:PORT``, and stops it at the end of the session.
"""

import os
import pathlib
import queue
import re
import signal
import subprocess
import threading
import uuid

import pika
import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"^lepus-broker listening on (127\.0\.0\.1:\d+)\s*$")
STARTUP_TIMEOUT_S = 30


def _start_bundled_broker(data_dir):
    binary = pathlib.Path(
        os.environ.get("LEPUS_BROKER_BIN", REPO_ROOT / "target" / "release" / "lepus-broker")
    )
    if not binary.is_absolute():
        binary = REPO_ROOT / binary
    if not binary.exists():
        pytest.exit(
            f"bundled broker binary {binary} not found: build it with "
            "`cargo build --release -p lepus-broker`, or set LEPUS_TEST_AMQP_URL",
            returncode=2,
        )
    proc = subprocess.Popen(
        [str(binary), "--listen", "127.0.0.1:0", "--management-listen", "127.0.0.1:0", "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=None,  # the broker's logs go to pytest's captured stderr
        text=True,
    )
    lines = queue.Queue()

    def pump():
        # Reads stdout for the whole session so the broker never blocks on a full pipe.
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    try:
        first = lines.get(timeout=STARTUP_TIMEOUT_S)
    except queue.Empty:
        proc.kill()
        pytest.exit(f"{binary} printed nothing in {STARTUP_TIMEOUT_S}s", returncode=2)
    match = LISTENING.match(first or "")
    if not match:
        proc.kill()
        pytest.exit(f"unexpected first line from {binary}: {first!r}", returncode=2)
    return proc, f"amqp://guest:guest@{match.group(1)}/%2f"


def _stop(proc):
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def amqp_url(tmp_path_factory):
    """The AMQP URL of the broker under test."""
    external = os.environ.get("LEPUS_TEST_AMQP_URL")
    if external:
        yield external
        return
    proc, url = _start_bundled_broker(tmp_path_factory.mktemp("lepus-data"))
    try:
        yield url
    finally:
        _stop(proc)
        assert proc.returncode is not None


@pytest.fixture
def connect(amqp_url):
    """Opens pika BlockingConnections to the broker; closes those still open after the test."""
    opened = []

    def _connect():
        conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
        opened.append(conn)
        return conn

    yield _connect
    for conn in opened:
        if conn.is_open:
            conn.close()


@pytest.fixture
def unique():
    """A name no other test (nor an earlier run against a shared broker) uses."""
    return lambda prefix: f"{prefix}.{uuid.uuid4().hex}"
