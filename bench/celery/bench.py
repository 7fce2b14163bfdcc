"""Celery tasks/s end to end: enqueue (with publisher confirms) -> processed -> acked.

--chord N instead measures one `chord(group(noop.s(i) for i in range(N)), collect.s())`: the
wall time from apply_async until the callback's result was read with .get(). Celery's rpc://
backend refuses chords ("The "rpc" result backend does not support chords!", its
RPCBackend.ensure_chords_allowed), so --chord needs a --result-backend such as Redis.

Starts a Celery worker on a fresh queue, enqueues --tasks no-op tasks from --producers
processes, and measures from the first enqueue until every task has run; then stops the
worker (warm shutdown: it finishes and acks what it holds), checks that the queue is empty and
every task ran exactly once, deletes the queue, and prints one JSON line. Loopback brokers only.
"""

import argparse
import json
import multiprocessing
import os
import re
import signal
import struct
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))


def done_count(path):
    try:
        return os.path.getsize(path) // 8
    except OSError:
        return 0


def wait_done(path, n, timeout):
    deadline = time.monotonic() + timeout
    while done_count(path) < n:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def produce(first, count, results=False, window=256):
    # One connection per producer process; every apply_async waits for the broker's confirm.
    from tasks import app, noop
    with app.connection_for_write() as conn:
        if not results:
            for i in range(first, first + count):
                noop.apply_async(args=(i,), connection=conn)
            return
        # --results: `window` tasks in flight, each result read with .get() (rpc:// backend), as
        # `lepus-bench tasks --results` keeps `--window` submits awaiting their results.
        for start in range(first, first + count, window):
            handles = [noop.apply_async(args=(i,), connection=conn)
                       for i in range(start, min(start + window, first + count))]
            for h, i in zip(handles, range(start, start + len(handles))):
                if h.get(timeout=600) != i:
                    raise SystemExit("celery bench: task %d returned a wrong result" % i)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672//")
    ap.add_argument("--tasks", type=int, default=20000)
    ap.add_argument("--producers", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--pool", default="prefork", help="prefork, threads, solo, ...")
    ap.add_argument("--prefetch-multiplier", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--results", action="store_true",
                    help="keep results (--result-backend) and wait for each with .get()")
    ap.add_argument("--result-backend", default="rpc://",
                    help="with --results: rpc:// (results as AMQP messages on the broker) or"
                         " redis://127.0.0.1:PORT/0")
    ap.add_argument("--chord", type=int, metavar="N",
                    help="instead: one chord of N noop members and a summing callback; wall time from"
                         " apply_async to the callback's result (needs --result-backend redis://...)")
    opts = ap.parse_args()
    if opts.chord is not None:
        if opts.result_backend == "rpc://":
            sys.exit("celery bench: --chord needs --result-backend redis://...: Celery's rpc:// backend"
                     " does not support chords")
        opts.results = True
        opts.tasks = opts.chord
    for url in (opts.url, opts.result_backend if opts.results and opts.result_backend != "rpc://" else ""):
        if url and not re.match(r"^(amqps?|redis)://([^@/]*@)?(127\.\d+\.\d+\.\d+|localhost)(:\d+)?(/|$)", url):
            sys.exit("celery bench: only loopback brokers and backends: %s" % url)

    queue = "celery-bench-" + uuid.uuid4().hex[:8]
    done = tempfile.NamedTemporaryFile(prefix="celery-bench-done-", delete=False).name
    env = dict(os.environ, LEPUS_CELERY_BROKER=opts.url, LEPUS_CELERY_QUEUE=queue, LEPUS_CELERY_DONE=done,
               LEPUS_CELERY_PREFETCH_MULTIPLIER=str(opts.prefetch_multiplier),
               LEPUS_CELERY_RESULTS="1" if opts.results else "0",
               LEPUS_CELERY_RESULT_BACKEND=opts.result_backend)
    os.environ.update(env)
    sys.path.insert(0, HERE)
    import celery
    from tasks import app, collect, noop

    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-Q", queue, "-c", str(opts.concurrency),
         "-P", opts.pool, "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "warning"],
        cwd=HERE, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    result = {"tool": "celery", "celery": celery.__version__, "tasks": opts.tasks, "producers": opts.producers,
              "concurrency": opts.concurrency, "pool": opts.pool, "prefetch_multiplier": opts.prefetch_multiplier,
              "results": opts.results, "result_backend": opts.result_backend if opts.results else None}
    try:
        # Warm-up: one task through the whole path, so worker start-up is not measured.
        noop.apply_async(args=(2**63,))
        if not wait_done(done, 1, 120):
            raise SystemExit("celery bench: worker did not run the warm-up task in 120 s")
        if opts.chord is not None:
            run_chord(opts, result, done, collect, noop)
        else:
            run_tasks(opts, result, done)
    finally:
        worker.send_signal(signal.SIGTERM)  # warm shutdown: finish and ack held tasks
        try:
            worker.wait(60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    finish(opts, result, done, queue, app)


def run_tasks(opts, result, done):
    """opts.tasks tasks from opts.producers processes; the clock stops when all have run."""
    t0 = time.monotonic()
    share = [opts.tasks // opts.producers + (1 if p < opts.tasks % opts.producers else 0)
             for p in range(opts.producers)]
    procs, first = [], 0
    # rpc:// names its reply queue after the app's object id, which forked producers would
    # share (and steal each other's results): with --results they are spawned.
    ctx = multiprocessing.get_context("spawn" if opts.results else "fork")
    for n in share:
        p = ctx.Process(target=produce, args=(first, n, opts.results))
        p.start()
        procs.append(p)
        first += n
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise SystemExit("celery bench: a producer failed")
    t_enq = time.monotonic()
    ok = wait_done(done, opts.tasks + 1, opts.timeout)
    t1 = time.monotonic()
    result.update({
        "completed": done_count(done) - 1,
        "secs": t1 - t0,
        "enqueue_secs": t_enq - t0,
        "tasks_per_s": (done_count(done) - 1) / (t1 - t0),
        "enqueue_per_s": opts.tasks / (t_enq - t0),
        "timed_out": not ok,
    })


def run_chord(opts, result, done, collect, noop):
    """One chord of opts.chord members: submit, then read the callback's result."""
    from celery import chord, group
    t0 = time.monotonic()
    res = chord(group(noop.s(i) for i in range(opts.chord)), collect.s()).apply_async()
    t_sub = time.monotonic()
    got = res.get(timeout=opts.timeout)
    t1 = time.monotonic()
    expected = sum(range(opts.chord))
    if got != expected:
        raise SystemExit("celery bench: the chord gave %r, expected %d" % (got, expected))
    result.update({"chord_members": opts.chord, "chord_wall_secs": t1 - t0, "chord_submit_secs": t_sub - t0,
                   "completed": done_count(done) - 1})


def finish(opts, result, done, queue, app):
    """Checks every task ran exactly once and the queue is empty, deletes it, prints the JSON."""
    with open(done, "rb") as f:
        ids = [struct.unpack("<Q", f.read(8))[0] for _ in range(done_count(done))]
    os.unlink(done)
    ids = [i for i in ids if i != 2**63]
    result["duplicates"] = len(ids) - len(set(ids))
    result["missing"] = opts.tasks - len(set(ids))
    with app.connection_for_write() as conn:
        ch = conn.channel()
        _, left, _ = ch.queue_declare(queue=queue, passive=True)
        result["left_in_queue"] = left
        ch.queue_delete(queue=queue)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
