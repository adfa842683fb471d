#!/usr/bin/python3
"""Server benchmark: what `dagd serve` costs at rest and how fast it moves along a DAG.

Three measurements, each against a `dagd serve` started by this script on a free
loopback port (`--listen 127.0.0.1:0`, the port read from <state>/api.port) with a fresh
state directory:

  memory    resident memory (VmRSS, and the peak VmHWM) of a server holding 200 DAGs
            of 10 container tasks each, read from /proc once the server says it is
            ready and lists all 200; target VmRSS <= 20 MiB;
  start-up  time from starting the process to the sd_notify "READY=1" datagram (the
            script binds the NOTIFY_SOCKET itself) and to GET /api/v1/health answering
            "ready": true (polled every 10 ms), with the same 200 DAGs: three fresh
            state directories, then one restart on existing state;
  edges     time from an upstream container's `die` to its downstream container's
            `start`, both taken from the engine's own event stream (timeNano), over
            10 chains of 21 `true` tasks (200 edges) triggered through the API, one run
            at a time. Beside it, the engine's own create+start time for a
            `true` container driven directly (median of 20), and how long the engine
            keeps a container to itself after its `die` (an inspect sent the moment
            the die event arrives, 10 containers). Target: p99 edge latency <= 50 ms
            plus that create+start time.

Missing a target is reported, not an error: the exit status is non-zero only when
something fails. The results replace the section between the bench_serve markers in
docs/benchmarks.md. Standard library only; the Engine API client and image build are
bench_chain.py's.

Usage: DAGD_BIN=/abs/path/to/dagd /usr/bin/python3 bench/bench_serve.py [--no-doc]
"""

import argparse
import datetime
import http.client
import json
import math
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_chain import (  # noqa: E402  (the shared Engine client lives beside this file)
    BENCH_LABEL, IMAGE, ROOT, BenchError, Engine, build_image, git_commit, publish, run_main)

BEGIN = "<!-- bench_serve results: begin (rewritten by bench/bench_serve.py) -->"
END = "<!-- bench_serve results: end -->"

N_DAGS = 200
RSS_TARGET_KB = 20 * 1024
N_CHAINS = 10
CHAIN_LEN = 21
CHAIN_PARALLEL = 1
EDGE_TARGET_MS = 50.0
RAW_STARTS = 20
RAW_HOLDS = 10
READY_TIMEOUT = 60.0
RUN_TIMEOUT = 120.0


# ---- DAG files ----

# Ten tasks in a small graph: a fan-out, a fan-in and a short tail.
SMALL_GRAPH = [
    ("extract", []),
    ("clean_a", ["extract"]),
    ("clean_b", ["extract"]),
    ("part_1", ["clean_a"]),
    ("part_2", ["clean_a"]),
    ("part_3", ["clean_b"]),
    ("part_4", ["clean_b"]),
    ("merge", ["part_1", "part_2", "part_3", "part_4"]),
    ("load", ["merge"]),
    ("report", ["load"]),
]


def small_dag(i):
    lines = [
        "# Written by bench/bench_serve.py: ten tasks that never run (no schedule).",
        f"dag: bench_serve_{i:03d}",
        f"description: memory benchmark DAG {i}",
        "tags: [bench]",
        "tasks:",
    ]
    for task, deps in SMALL_GRAPH:
        lines.append(f"  {task}:")
        lines.append(f"    image: {IMAGE}")
        lines.append(f"    command: [\"sh\", \"-c\", \"echo {task} {{{{ ds }}}}\"]")
        lines.append(f"    env: {{STEP: {task}}}")
        if deps:
            lines.append(f"    depends_on: [{', '.join(deps)}]")
    return "\n".join(lines) + "\n"


def chain_dag_id(i):
    return f"bench_serve_edge_{i:02d}"


def chain_task(k):
    return f"t{k:02d}"


def chain_dag(i):
    lines = [
        "# Written by bench/bench_serve.py: a chain of containers running `true`.",
        f"dag: {chain_dag_id(i)}",
        "tasks:",
    ]
    for k in range(CHAIN_LEN):
        lines.append(f"  {chain_task(k)}:")
        lines.append(f"    image: {IMAGE}")
        lines.append("    command: [\"true\"]")
        if k > 0:
            lines.append(f"    depends_on: [{chain_task(k - 1)}]")
    return "\n".join(lines) + "\n"


def write_dags(folder, docs):
    os.makedirs(folder, exist_ok=True)
    for name, text in docs:
        with open(os.path.join(folder, name), "w") as f:
            f.write(text)


# ---- the server under test ----

class NotifyListener:
    """The NOTIFY_SOCKET end: records when the first READY=1 datagram arrives."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.2)
        self.ready_at = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self):
        while not self.done.is_set():
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            now = time.monotonic()
            if self.ready_at is None and "READY=1" in data.decode(errors="replace").split("\n"):
                self.ready_at = now

    def close(self):
        self.done.set()
        self.thread.join()
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class Server:
    """One `dagd serve` process; stop() is safe to call twice."""

    def __init__(self, dagd, dags, state, workdir, tag, notify_path=None, extra_env=None):
        self.port = None  # from <state>/api.port, which dagd writes once its API listens on :0
        self.state = state
        self.port_file = os.path.join(state, "api.port")
        try:
            os.unlink(self.port_file)  # left by an earlier server on this state dir
        except FileNotFoundError:
            pass
        self.log_path = os.path.join(workdir, f"serve-{tag}.log")
        env = dict(os.environ)
        for k in list(env):
            if k.startswith("DAGD_") or k in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
                del env[k]
        if notify_path:
            env["NOTIFY_SOCKET"] = notify_path
        env.update(extra_env or {})
        self.log = open(self.log_path, "w")
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [dagd, "serve", "--dags", dags, "--state", state,
             "--listen", "127.0.0.1:0", "--log", "stderr"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.token = None

    def tail(self, n=20):
        try:
            with open(self.log_path) as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def check_alive(self):
        if self.proc.poll() is not None:
            raise BenchError(f"dagd serve exited with {self.proc.returncode}; last lines:\n{self.tail()}")

    def wait_port(self):
        """The API's port, read from the port file (polled every 10 ms)."""
        deadline = self.t0 + READY_TIMEOUT
        while self.port is None:
            self.check_alive()
            try:
                with open(self.port_file) as f:
                    text = f.read()
            except FileNotFoundError:
                if time.monotonic() > deadline:
                    raise BenchError(f"dagd serve wrote no {self.port_file} within {READY_TIMEOUT:.0f} s;"
                                     f" last lines:\n{self.tail()}")
                time.sleep(0.01)
                continue
            if not (text.endswith("\n") and text[:-1].isdigit()):
                raise BenchError(f"{self.port_file} holds {text!r}, not a port and a newline")
            self.port = int(text)
        return self.port

    def request(self, method, path, body=None, auth=True, timeout=10):
        conn = http.client.HTTPConnection("127.0.0.1", self.wait_port(), timeout=timeout)
        headers = {}
        if auth:
            if self.token is None:
                with open(os.path.join(self.state, "token")) as f:
                    self.token = f.read().strip()
            headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
        finally:
            conn.close()
        if resp.status >= 300:
            raise BenchError(f"dagd {method} {path}: HTTP {resp.status}: {payload.decode(errors='replace')}")
        return json.loads(payload) if payload else None

    def wait_health_ready(self):
        """Polls health every 10 ms; returns seconds from process start to "ready": true."""
        deadline = self.t0 + READY_TIMEOUT
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                h = self.request("GET", "/api/v1/health", auth=False, timeout=1)
                if h.get("ready") is True:
                    return time.monotonic() - self.t0
            except (OSError, http.client.HTTPException, ValueError):
                pass
            time.sleep(0.01)
        raise BenchError(f"dagd serve not ready after {READY_TIMEOUT:.0f} s; last lines:\n{self.tail()}")

    def wait_dags(self, n):
        deadline = time.monotonic() + READY_TIMEOUT
        total = None
        while time.monotonic() < deadline:
            self.check_alive()
            total = self.request("GET", "/api/v1/dags?limit=1").get("total_entries")
            if total == n:
                return time.monotonic() - self.t0
            time.sleep(0.05)
        raise BenchError(f"dagd lists {total} DAGs, expected {n}")

    def memory_kb(self):
        fields = {}
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    fields[key] = int(value.split()[0])
        if len(fields) != 2:
            raise BenchError(f"/proc/{self.proc.pid}/status has no VmRSS/VmHWM")
        return fields["VmRSS"], fields["VmHWM"]

    def instance(self):
        with open(os.path.join(self.state, "instance")) as f:
            return f.read().strip()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# ---- 1 and 2: memory and start-up ----

def measure_startup(dagd, dags, state, workdir, tag):
    notify = NotifyListener(os.path.join(workdir, f"notify-{tag}.sock"))
    srv = None
    try:
        srv = Server(dagd, dags, state, workdir, tag, notify_path=notify.path)
        health = srv.wait_health_ready()
        listed = srv.wait_dags(N_DAGS)
        rss, hwm = srv.memory_kb()
        # The datagram is sent before health can say ready; give the thread a moment to read it.
        deadline = time.monotonic() + 2
        while notify.ready_at is None and time.monotonic() < deadline:
            time.sleep(0.01)
        ready = notify.ready_at - srv.t0 if notify.ready_at is not None else None
        return {"tag": tag, "notify": ready, "health": health, "listed": listed, "rss": rss, "hwm": hwm}
    finally:
        if srv:
            srv.stop()
        notify.close()


# ---- 3: edge latency ----

class EventRecorder:
    """Follows GET /events for the containers with one label in a thread."""

    def __init__(self, engine, label):
        filters = json.dumps({"type": ["container"], "event": ["create", "start", "die"],
                              "label": [label]})
        self.conn = engine.make_conn()
        self.conn.request("GET", f"{engine.prefix}/events?filters={urllib.parse.quote(filters)}")
        self.resp = self.conn.getresponse()
        if self.resp.status != 200:
            raise BenchError(f"GET /events: HTTP {self.resp.status}")
        self.events = []
        self.lock = threading.Lock()
        self.closing = False
        self.error = None
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self):
        buf = b""
        try:
            while True:
                chunk = self.resp.read1(65536)
                if not chunk:
                    break
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        ev = json.loads(line)
                        with self.lock:
                            self.events.append(ev)
        except Exception as e:  # noqa: BLE001  (closing the socket under the reader ends it)
            if not self.closing:
                self.error = e

    def snapshot(self):
        with self.lock:
            return list(self.events)

    def close(self):
        self.closing = True
        try:
            self.conn.sock.shutdown(socket.SHUT_RDWR)
        except (OSError, AttributeError):
            pass
        self.thread.join(timeout=5)
        self.conn.close()


def run_chains(srv):
    """Triggers every chain DAG, CHAIN_PARALLEL at a time; returns {dag: run id}."""
    pending = [chain_dag_id(i) for i in range(N_CHAINS)]
    active, runs = {}, {}
    deadline = time.monotonic() + RUN_TIMEOUT * N_CHAINS
    while pending or active:
        srv.check_alive()
        while pending and len(active) < CHAIN_PARALLEL:
            dag = pending.pop(0)
            run = srv.request("POST", f"/api/v1/dags/{dag}/runs", body={})
            active[dag] = run["dag_run_id"]
            runs[dag] = run["dag_run_id"]
        time.sleep(0.1)
        for dag, run in list(active.items()):
            st = srv.request("GET", f"/api/v1/dags/{dag}/runs/{urllib.parse.quote(run, safe='')}")["state"]
            if st == "success":
                del active[dag]
            elif st not in ("queued", "running"):
                raise BenchError(f"run {run} of {dag} ended {st}; server log:\n{srv.tail()}")
        if time.monotonic() > deadline:
            raise BenchError("the chain runs did not finish in time")
    return runs


def parse_api_time(text):
    """An API time ("2025-01-01T00:00:00.123Z") as nanoseconds since the epoch."""
    d = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return round(d.timestamp() * 1000) * 1_000_000


def task_ends(srv, runs):
    """{(dag, task): the end_date dagd recorded for try 1}, in nanoseconds."""
    ends = {}
    for dag, run in runs.items():
        doc = srv.request("GET", f"/api/v1/dags/{dag}/runs/{urllib.parse.quote(run, safe='')}/tasks")
        for ti in doc["task_instances"]:
            if ti.get("end_date") and ti.get("try_number") == 1:
                ends[(dag, ti["task_id"])] = parse_api_time(ti["end_date"])
    return ends


def edge_latencies(events, runs, ends):
    """Per edge in milliseconds: downstream start minus upstream die; and that split at
    the upstream's end_date (when dagd recorded the exit, millisecond resolution)."""
    die, start, create = {}, {}, {}
    tables = {"die": die, "start": start, "create": create}
    for ev in events:
        a = ev.get("Actor", {}).get("Attributes", {})
        dag, run, task = a.get("io.dagd.dag"), a.get("io.dagd.run"), a.get("io.dagd.task")
        if runs.get(dag) != run or a.get("io.dagd.try") != "1":
            continue
        table = tables.get(ev.get("status", ev.get("Action")))
        if table is not None:
            table.setdefault((dag, task), ev["timeNano"])
    out, noticed, started, missing, ahead = [], [], [], 0, 0
    for dag in runs:
        for k in range(1, CHAIN_LEN):
            up, down = die.get((dag, chain_task(k - 1))), start.get((dag, chain_task(k)))
            if up is None or down is None:
                missing += 1
                continue
            out.append((down - up) / 1e6)
            end = ends.get((dag, chain_task(k - 1)))
            if end is not None:
                noticed.append((end - up) / 1e6)
                started.append((down - end) / 1e6)
            made = create.get((dag, chain_task(k)))
            ahead += made is not None and made < up
    return out, noticed, started, missing, ahead


def measure_edges(dagd, engine, workdir):
    dags = os.path.join(workdir, "edge-dags")
    write_dags(dags, [(f"{chain_dag_id(i)}.yml", chain_dag(i)) for i in range(N_CHAINS)])
    srv = Server(dagd, dags, os.path.join(workdir, "edge-state"), workdir, "edges")
    rec = None
    instance = None
    try:
        srv.wait_health_ready()
        srv.wait_dags(N_CHAINS)
        instance = srv.instance()
        rec = EventRecorder(engine, f"io.dagd.instance={instance}")
        runs = run_chains(srv)
        ends = task_ends(srv, runs)
        # The last die event may trail the run's success by a little.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            result = edge_latencies(rec.snapshot(), runs, ends)
            if not result[3]:
                break
            time.sleep(0.1)
        if rec.error:
            raise BenchError(f"the event stream failed: {rec.error}")
        return result
    finally:
        if rec:
            rec.close()
        srv.stop()
        if instance:
            engine.remove_labelled(f"io.dagd.instance={instance}")


def measure_engine_start(engine):
    """The engine's create+start for a `true` container, driven directly; seconds."""
    create, start, both = [], [], []
    try:
        for i in range(RAW_STARTS + 1):
            t0 = time.monotonic()
            c = engine.json("POST", "/containers/create",
                            {"Image": IMAGE, "Cmd": ["true"], "Labels": {BENCH_LABEL: "serve-raw"}})
            t1 = time.monotonic()
            engine.request("POST", f"/containers/{c['Id']}/start")
            t2 = time.monotonic()
            engine.json("POST", f"/containers/{c['Id']}/wait")
            engine.request("DELETE", f"/containers/{c['Id']}?force=1&v=1")
            if i == 0:
                continue  # warm-up
            create.append(t1 - t0)
            start.append(t2 - t1)
            both.append(t2 - t0)
    finally:
        engine.remove_labelled(f"{BENCH_LABEL}=serve-raw")
    return statistics.median(create), statistics.median(start), statistics.median(both)


def measure_engine_hold(engine):
    """How long after a container's `die` the engine answers a request about it: an
    inspect sent the moment the die event arrives, for a `true` container, driven
    directly. The engine tears the container down (its network endpoint first) before it
    lets go of it, so whoever wants the log tail or the exit details waits this long.
    Returns the times in seconds."""
    label = f"{BENCH_LABEL}=serve-hold"
    rec = EventRecorder(engine, label)
    held = []
    try:
        for i in range(RAW_HOLDS + 1):
            c = engine.json("POST", "/containers/create",
                            {"Image": IMAGE, "Cmd": ["true"], "Labels": {BENCH_LABEL: "serve-hold"}})
            cid = c["Id"]
            engine.request("POST", f"/containers/{cid}/start")
            deadline = time.monotonic() + 30
            while not any(ev.get("Action") == "die" and ev.get("id", ev.get("Actor", {}).get("ID")) == cid
                          for ev in rec.snapshot()):
                if time.monotonic() > deadline or rec.error:
                    raise BenchError(f"no die event for a `true` container ({rec.error or 'timeout'})")
                time.sleep(0.0005)
            t0 = time.monotonic()
            engine.json("GET", f"/containers/{cid}/json")
            if i > 0:  # the first is a warm-up
                held.append(time.monotonic() - t0)
            engine.request("DELETE", f"/containers/{cid}?force=1&v=1")
            time.sleep(0.3)  # let the engine settle, as between the direct create+starts
    finally:
        rec.close()
        engine.remove_labelled(label)
    return held


# ---- report ----

def percentile(values, p):
    """Nearest-rank percentile."""
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def pct(values, p):
    return f"{percentile(values, p):.0f} ms" if values else "n/a"


def mib(kb):
    return f"{kb / 1024:.1f} MiB"


def ms(seconds):
    return "n/a" if seconds is None else f"{seconds * 1000:.0f} ms"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--no-doc", action="store_true", help="do not rewrite docs/benchmarks.md")
    args = ap.parse_args()

    dagd = os.environ.get("DAGD_BIN")
    if not dagd or not os.access(dagd, os.X_OK):
        raise BenchError("set DAGD_BIN to the absolute path of a built dagd (make bench does)")
    if not os.path.exists("/proc/self/status"):
        raise BenchError("this benchmark reads /proc/PID/status (Linux only)")

    engine = Engine()
    ver = engine.json("GET", "/version")
    build_image(engine)

    starts = []
    with tempfile.TemporaryDirectory(prefix="dagd-bench-serve-") as work:
        dags = os.path.join(work, "dags")
        write_dags(dags, [(f"bench_serve_{i:03d}.yml", small_dag(i)) for i in range(N_DAGS)])
        for rep in range(3):
            starts.append(measure_startup(dagd, dags, os.path.join(work, f"state-{rep}"), work, f"fresh-{rep}"))
            r = starts[-1]
            print(f"start-up {r['tag']}: READY=1 {ms(r['notify'])}, health ready {ms(r['health'])}, "
                  f"VmRSS {mib(r['rss'])}, VmHWM {mib(r['hwm'])}", flush=True)
        restart = measure_startup(dagd, dags, os.path.join(work, "state-0"), work, "restart")
        print(f"start-up restart: READY=1 {ms(restart['notify'])}, health ready {ms(restart['health'])}, "
              f"VmRSS {mib(restart['rss'])}, VmHWM {mib(restart['hwm'])}", flush=True)

        create_med, start_med, engine_med = measure_engine_start(engine)
        print(f"engine create+start median {ms(engine_med)} (create {ms(create_med)}, start {ms(start_med)})",
              flush=True)
        held = measure_engine_hold(engine)
        print(f"engine hold after die: median {ms(statistics.median(held))}, max {ms(max(held))}", flush=True)
        lat, noticed, started, missing, ahead = measure_edges(dagd, engine, work)
    if not lat:
        raise BenchError("no edge was measured: the event stream delivered no matching start/die pair")

    rss_med = statistics.median(r["rss"] for r in starts)
    hwm_med = statistics.median(r["hwm"] for r in starts)
    notify_vals = [r["notify"] for r in starts if r["notify"] is not None]
    notify_med = statistics.median(notify_vals) if notify_vals else None
    health_med = statistics.median(r["health"] for r in starts)
    p50, p99 = percentile(lat, 50), percentile(lat, 99)
    over_ms = p99 - engine_med * 1000
    rss_met = "met" if rss_med <= RSS_TARGET_KB else "NOT met"
    edge_met = "met" if over_ms <= EDGE_TARGET_MS else "NOT met"
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    table = [
        "| measurement | result | target |",
        "|---|---|---|",
        f"| VmRSS, {N_DAGS} DAGs x {len(SMALL_GRAPH)} tasks, ready (median of 3) | "
        f"{mib(rss_med)} ({rss_med} kB) | <= 20 MiB: {rss_met} |",
        f"| VmHWM (peak RSS) at that moment (median of 3) | {mib(hwm_med)} ({hwm_med} kB) | |",
        f"| start to sd_notify READY=1 (median of 3 fresh states) | {ms(notify_med)} | |",
        f"| start to health \"ready\": true, 10 ms polling (median of 3 fresh) | {ms(health_med)} | |",
        f"| restart on existing state: READY=1 / health ready | "
        f"{ms(restart['notify'])} / {ms(restart['health'])} | |",
        f"| restart on existing state: VmRSS / VmHWM | {mib(restart['rss'])} / {mib(restart['hwm'])} | |",
        f"| edge latency p50 ({len(lat)} edges) | {p50:.1f} ms | |",
        f"| edge latency p99 | {p99:.1f} ms | |",
        f"| engine create+start of `true`, direct (median of {RAW_STARTS}) | {ms(engine_med)} "
        f"(create {ms(create_med)}, start {ms(start_med)}) | |",
        f"| engine: an inspect sent at a container's `die` answers after (median / max of {len(held)}) | "
        f"{ms(statistics.median(held))} / {ms(max(held))} | |",
        f"| edge, part 1: die to dagd recording the exit (upstream end_date, ms resolution), p50 / p99 | "
        f"{pct(noticed, 50)} / {pct(noticed, 99)} | |",
        f"| edge, part 2: exit recorded to downstream start event, p50 / p99 | "
        f"{pct(started, 50)} / {pct(started, 99)} | |",
        f"| edge p99 - engine create+start | {over_ms:.1f} ms | <= {EDGE_TARGET_MS:.0f} ms: {edge_met} |",
    ]
    runs_line = "; ".join(
        f"{r['tag']}: READY=1 {ms(r['notify'])}, health {ms(r['health'])}, VmRSS {mib(r['rss'])}"
        for r in starts + [restart])
    section_lines = [
        f"Measured {now}: dagd commit {git_commit()}, Docker Engine {ver.get('Version', '?')} "
        f"(API {engine.version}), {platform.system()}, {os.cpu_count()} CPUs.",
        "",
        *table,
        "",
        f"Start-ups: {runs_line}.",
        "",
        f"Edge latency: min {min(lat):.1f} ms, mean {statistics.mean(lat):.1f} ms, "
        f"max {max(lat):.1f} ms; the engine's start call alone takes {ms(start_med)} (median). "
        f"{ahead} of {len(lat)} downstream containers were created before their upstream exited.",
        "",
    ]
    if missing:
        section_lines += [f"Warning: {missing} of {N_CHAINS * (CHAIN_LEN - 1)} edges had no matching "
                          f"die/start event pair and were left out.", ""]
    section = "\n".join(section_lines)

    publish(section, args.no_doc, BEGIN, END)
    return 0


if __name__ == "__main__":
    run_main("bench_serve", main)
