"""The Celery app of the tasks/s comparison: one no-op task that records its completion.

Configured the way a careful Celery user runs at-least-once tasks, which is what Lepus tasks
promise: publisher confirms on enqueue (`confirm_publish`), ack after the task ran
(`task_acks_late`), persistent messages on a durable queue (Celery's defaults), no result
backend (with LEPUS_CELERY_RESULTS=1: the result backend LEPUS_CELERY_RESULT_BACKEND, `rpc://`
unless it names e.g. `redis://127.0.0.1:PORT/0`, results kept, so that the driver can wait for
each with `.get()`). Each worker process appends the task's number as 8 little-endian bytes to the file
named by LEPUS_CELERY_DONE (O_APPEND writes of 8 bytes are atomic), so the driver counts
completions, and duplicates, without a result backend.
"""

import os
import struct

from celery import Celery

app = Celery("lepus_celery_bench", broker=os.environ.get("LEPUS_CELERY_BROKER",
                                                       "amqp://guest:guest@127.0.0.1:5672//"))
app.conf.update(
    task_default_queue=os.environ.get("LEPUS_CELERY_QUEUE", "celery-bench"),
    task_acks_late=True,
    task_ignore_result=os.environ.get("LEPUS_CELERY_RESULTS") != "1",
    result_backend=(os.environ.get("LEPUS_CELERY_RESULT_BACKEND", "rpc://")
                    if os.environ.get("LEPUS_CELERY_RESULTS") == "1" else None),
    broker_transport_options={"confirm_publish": True},
    worker_prefetch_multiplier=int(os.environ.get("LEPUS_CELERY_PREFETCH_MULTIPLIER", "4")),
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)

_done_fd = None


@app.task(name="noop")
def noop(i):
    """Does nothing but record that task `i` ran."""
    global _done_fd
    if _done_fd is None:
        _done_fd = os.open(os.environ["LEPUS_CELERY_DONE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(_done_fd, struct.pack("<Q", i))
    return i


@app.task(name="collect")
def collect(results):
    """The chord's callback (bench.py --chord): the sum of the members' results."""
    return sum(results)
