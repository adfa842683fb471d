#!/usr/bin/python3
"""Daemon at scale: `dagd serve` with thousands of runs of sensor tasks that hold at once.

No container runs: every task is a `file` sensor on a file that exists, so each task
succeeds at its first check and what is measured is the daemon itself (scheduler,
executor, store, API, task logs). At --scale 1 (the default runs 0.1 and 1, see main()):

  1,000 DAGs of 50 tasks (10 layers of 5, each task depending on the whole layer before),
  2 runs of each triggered through the API (2,000 runs in flight), 100,000 task instances;
  parallelism 10000 and max_active_runs 2, so nothing waits on a limit.

--scale S multiplies the number of DAGs (0.1 = 100 DAGs, 10,000 task instances).

The runs are triggered while the file is missing, so all of them are in flight with
their first layer poking (5 sensors a run, 10,000 at full size); once every run is
`running` the file is created. Reported: the wall time from then to every run `success`, task completions
per second, the server's CPU time (utime+stime from /proc/<pid>/stat) and peak memory
(VmHWM), what the process wrote (write syscalls and bytes, /proc/<pid>/io) and the rows
in the state database at the end, and, once every run is done, the latency (median of
20) of GET /api/v1/dags (the DAG list, first page and limit=1000) and of
GET /api/v1/dags/{dag}/runs/{run}/tasks.

The results replace the section between the bench_scale markers in docs/benchmarks.md
(unless --no-doc). Standard library only; the server helpers are bench_serve.py's.

Usage: DAGD_BIN=/abs/path/to/dagd /usr/bin/python3 bench/bench_scale.py [--scale S] [--no-doc]
"""

import argparse
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
import urllib.parse

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_chain import BenchError, git_commit, publish, run_main  # noqa: E402
import bench_serve  # noqa: E402
from bench_serve import Server  # noqa: E402

BEGIN = "<!-- bench_scale results: begin (rewritten by bench/bench_scale.py) -->"
END = "<!-- bench_scale results: end -->"

FULL_DAGS = 1000
RUNS_PER_DAG = 2
LAYERS = 10
WIDTH = 5
TASKS = LAYERS * WIDTH
LATENCY_REPS = 20


def task_id(layer, k):
    return f"l{layer}_t{k}"


def sensor_dag(i, probe):
    lines = [
        "# Written by bench/bench_scale.py: file sensors that hold at their first check.",
        f"dag: {dag_id(i)}",
        f"max_active_runs: {RUNS_PER_DAG}",
        "tasks:",
    ]
    for layer in range(LAYERS):
        for k in range(WIDTH):
            lines.append(f"  {task_id(layer, k)}:")
            lines.append(f"    sensor: {{file: \"{probe}\", interval: 1s}}")
            if layer > 0:
                deps = ", ".join(task_id(layer - 1, j) for j in range(WIDTH))
                lines.append(f"    depends_on: [{deps}]")
    return "\n".join(lines) + "\n"


def dag_id(i):
    return f"bench_scale_{i:04d}"


def proc_cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_io(pid):
    out = {}
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = int(v)
    return out


def store_counts(srv):
    """(write statements, committed transactions) of the state database, from /metrics."""
    out = {}
    for line in srv.request("GET", "/metrics", timeout=60, text=True).splitlines():
        k, _, v = line.partition(" ")
        if k in ("dagd_store_writes_total", "dagd_store_commits_total"):
            out[k] = int(v)
    return out.get("dagd_store_writes_total", 0), out.get("dagd_store_commits_total", 0)


def latency(srv, path, reps=LATENCY_REPS):
    times = []
    for _ in range(reps):
        t = time.monotonic()
        srv.request("GET", path, timeout=60)
        times.append((time.monotonic() - t) * 1000)
    return statistics.median(times), max(times)


def count_states(srv, dags, runs):
    """{state: n} over every run, from the DAG runs list of each DAG."""
    states = {}
    for d in dags:
        for r in srv.request("GET", f"/api/v1/dags/{d}/runs?limit=100", timeout=60)["dag_runs"]:
            if r["dag_run_id"] in runs[d]:
                states[r["state"]] = states.get(r["state"], 0) + 1
    return states


def measure(dagd, scale, workdir, timeout):
    n_dags = max(1, round(FULL_DAGS * scale))
    folder = os.path.join(workdir, "dags")
    state = os.path.join(workdir, "state")
    os.makedirs(folder)
    os.makedirs(state)
    probe = os.path.join(workdir, "probe")  # created once every run is in flight
    for i in range(n_dags):
        with open(os.path.join(folder, f"{dag_id(i)}.yml"), "w") as f:
            f.write(sensor_dag(i, probe))

    srv = None
    saved_timeout = bench_serve.READY_TIMEOUT
    bench_serve.READY_TIMEOUT = max(saved_timeout, 120.0 * max(scale, 0.1))
    try:
        srv = Server(dagd, folder, state, workdir, "scale", extra_env={"DAGD_PARALLELISM": "10000"})
        t_ready = srv.wait_health_ready()
        srv.wait_dags(n_dags)
        dags = [dag_id(i) for i in range(n_dags)]
        runs = {d: set() for d in dags}
        t0 = time.monotonic()
        for r in range(RUNS_PER_DAG):
            for d in dags:
                run = srv.request("POST", f"/api/v1/dags/{d}/runs",
                                  body={"logical_date": f"2026-01-0{r + 1}T00:00:00Z"}, timeout=60)
                runs[d].add(run["dag_run_id"])
        total_runs = n_dags * RUNS_PER_DAG
        # Every run in flight, its first layer poking: wait until all are running, then
        # create the file, which lets every sensor succeed at its next check.
        while count_states(srv, dags, runs).get("running", 0) != total_runs:
            srv.check_alive()
            if time.monotonic() > t0 + timeout:
                raise BenchError("the runs did not all start")
            time.sleep(0.5)
        t_trig = time.monotonic() - t0
        cpu0, io0, db0 = proc_cpu(srv.proc.pid), proc_io(srv.proc.pid), store_counts(srv)
        t0 = time.monotonic()
        open(probe, "w").close()
        # Poll the runs of the last DAG triggered, then check all: runs start in creation order.
        deadline = t0 + timeout
        while True:
            srv.check_alive()
            states = count_states(srv, dags[-1:], runs)
            if states.get("success", 0) == RUNS_PER_DAG:
                states = count_states(srv, dags, runs)
                if states.get("success", 0) == total_runs:
                    break
            bad = {k: v for k, v in states.items() if k not in ("queued", "running", "success")}
            if bad:
                raise BenchError(f"runs ended {bad}; server log:\n{srv.tail()}")
            if time.monotonic() > deadline:
                raise BenchError(f"runs not done after {timeout:.0f} s: {states}")
            time.sleep(0.2)
        wall = time.monotonic() - t0
        cpu1, io1, db1 = proc_cpu(srv.proc.pid), proc_io(srv.proc.pid), store_counts(srv)
        _, hwm = srv.memory_kb()

        d0 = dags[0]
        run0 = sorted(runs[d0])[0]
        lat = {
            "dags": latency(srv, "/api/v1/dags"),
            "dags_all": latency(srv, f"/api/v1/dags?limit={n_dags}"),
            "tasks": latency(srv, f"/api/v1/dags/{d0}/runs/{urllib.parse.quote(run0, safe='')}/tasks"),
        }
        srv.stop()
        db = sqlite3.connect(os.path.join(state, "dagd.db")) if os.path.exists(
            os.path.join(state, "dagd.db")) else None
        rows = {}
        if db:
            for t in ("dag_runs", "task_instances", "task_tries"):
                rows[t] = db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            db.close()
        return {"dags": n_dags, "runs": total_runs, "tis": total_runs * TASKS, "ready": t_ready,
                "trigger": t_trig, "wall": wall, "cpu": cpu1 - cpu0, "hwm": hwm,
                "syscw": io1["syscw"] - io0["syscw"],
                "db_writes": db1[0] - db0[0], "db_commits": db1[1] - db0[1],
                "wbytes": io1["write_bytes"] - io0["write_bytes"],
                "rows": rows, "lat": lat}
    except (OSError, TimeoutError) as e:
        raise BenchError(f"{e!r}; server log:\n{srv.tail() if srv else ''}") from e
    finally:
        bench_serve.READY_TIMEOUT = saved_timeout
        if srv:
            srv.stop()


def fmt(r):
    per_ti_ms = r["cpu"] * 1000 / r["tis"]
    lines = [
        f"| {r['dags']:,} | {r['runs']:,} | {r['tis']:,} | {r['wall']:.1f} | {r['tis'] / r['wall']:,.0f} "
        f"| {r['cpu']:.1f} | {per_ti_ms:.3f} | {r['hwm'] / 1024:.0f} "
        f"| {r['syscw'] / r['wall']:,.0f} | {r['wbytes'] / r['wall'] / 1e6:.1f} "
        f"| {r['db_writes'] / r['wall']:,.0f} | {r['db_commits'] / r['wall']:,.1f} "
        f"| {r['lat']['dags'][0]:.1f} | {r['lat']['dags_all'][0]:.1f} | {r['lat']['tasks'][0]:.1f} |"
    ]
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=float, action="append",
                    help="fraction of 1,000 DAGs; repeat for several sizes (default 0.1 and 1, "
                         "about 3 minutes in all)")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per size (default 1800)")
    ap.add_argument("--no-doc", action="store_true", help="do not rewrite docs/benchmarks.md")
    args = ap.parse_args()
    scales = args.scale or [0.1, 1.0]
    if any(s <= 0 or s > 10 for s in scales):
        raise BenchError("--scale must be in (0, 10]")
    dagd = os.environ.get("DAGD_BIN")
    if not dagd or not os.access(dagd, os.X_OK):
        raise BenchError("set DAGD_BIN to the absolute path of a built dagd (make bench does)")

    results = []
    for s in scales:
        with tempfile.TemporaryDirectory(prefix="dagd-bench-scale-") as wd:
            r = measure(dagd, s, wd, args.timeout)
        print(f"scale {s}: {r}", flush=True)
        results.append(r)

    load = open("/proc/loadavg").read().split()[:3]
    section = [
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.system()}, {os.cpu_count()} CPUs "
        f"(load average {' '.join(load)} at the end), commit {git_commit()}.",
        "",
        "| DAGs | runs | task instances | wall s | completions/s | CPU s | CPU ms/task | peak RSS MiB "
        "| write syscalls/s | MB written/s | SQL writes/s | commits/s "
        "| GET dags ms | GET dags (all) ms | GET tasks ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        section += fmt(r)
    rows = results[-1]["rows"]
    if rows:
        section += ["", "State database rows at the end of the largest size: " +
                    ", ".join(f"{k} {v:,}" for k, v in rows.items()) + "."]
    publish("\n".join(section) + "\n", args.no_doc, BEGIN, END)
    return 0


if __name__ == "__main__":
    run_main("bench_scale", main)
