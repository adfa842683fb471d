#!/usr/bin/python3
"""Chain benchmark: dagd's overhead over talking to the Docker Engine API directly.

Runs a chain of N containers of `true` (default 20), one after the other, two ways:

  raw   this script drives the Engine API itself over one keep-alive connection:
        create, start, wait, logs, delete for each container in turn;
  dagd  `$DAGD_BIN run <chain DAG> --state <fresh dir>`, a DAG of N tasks where each
        depends on the one before; timed as the wall time of the whole process.

The two alternate, REPS times each (default 3); the medians are compared. The target is
dagd/raw <= 1.0: the scheduler should add nothing to the critical path that the engine
does not already cost. The results replace the section between the markers in
docs/benchmarks.md. Standard library only; exit status is non-zero only on errors
(missing the target is reported, not an error).

Usage: DAGD_BIN=/abs/path/to/dagd /usr/bin/python3 bench/bench_chain.py [--tasks N] [--reps N]
"""

import argparse
import datetime
import http.client
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

IMAGE = "dagd-demo/busybox:1"
API_FLOOR = (1, 41)
API_MAX = (1, 45)
BENCH_LABEL = "io.dagd.bench"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "benchmarks.md")
BEGIN = "<!-- bench_chain results: begin (rewritten by bench/bench_chain.py) -->"
END = "<!-- bench_chain results: end -->"


class BenchError(Exception):
    pass


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix socket; the host part of the URL is ignored by the engine."""

    def __init__(self, path, timeout=120):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(self.unix_path)
        except OSError:
            s.close()
            raise
        self.sock = s


class Engine:
    """A minimal synchronous Engine API client, enough for the raw side."""

    def __init__(self):
        host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        u = urllib.parse.urlparse(host)
        if u.scheme == "unix":
            self.make_conn = lambda: UnixHTTPConnection(u.path)
        elif u.scheme == "tcp" and not os.environ.get("DOCKER_TLS_VERIFY"):
            self.make_conn = lambda: http.client.HTTPConnection(u.hostname, u.port or 2375, timeout=120)
        else:
            raise BenchError(f"DOCKER_HOST={host}: this benchmark speaks unix:// or plain tcp:// only")
        self.host = host
        self.conn = self.make_conn()
        self.prefix = ""
        self.version = self.negotiate()

    def request(self, method, path, body=None, ok=(200, 201, 204, 304)):
        headers = {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        for attempt in (1, 2):
            try:
                self.conn.request(method, self.prefix + path, body=data, headers=headers)
                resp = self.conn.getresponse()
                payload = resp.read()
                break
            except (ConnectionError, http.client.HTTPException):
                # A keep-alive connection the engine closed: reconnect once.
                self.conn.close()
                self.conn = self.make_conn()
                if attempt == 2:
                    raise
        if resp.status not in ok:
            try:
                msg = json.loads(payload).get("message", "")
            except ValueError:
                msg = payload.decode(errors="replace")
            raise BenchError(f"{method} {path}: HTTP {resp.status}: {msg}")
        return resp, payload

    def json(self, method, path, body=None, ok=(200, 201, 204, 304)):
        _, payload = self.request(method, path, body, ok)
        return json.loads(payload) if payload else None

    def negotiate(self):
        try:
            resp, _ = self.request("GET", "/_ping")
        except OSError as e:
            raise BenchError(f"no Docker engine at {self.host}: {e}") from e
        theirs = resp.getheader("Api-Version")
        if not theirs:
            raise BenchError("the engine's /_ping answer has no Api-Version header")
        v = tuple(int(x) for x in theirs.split("."))
        if v < API_FLOOR:
            raise BenchError(f"engine API {theirs} is older than the floor {API_FLOOR[0]}.{API_FLOOR[1]}")
        v = min(v, API_MAX)
        self.prefix = f"/v{v[0]}.{v[1]}"
        return f"{v[0]}.{v[1]}"

    def image_exists(self, ref):
        resp, _ = self.request("GET", f"/images/{ref}/json", ok=(200, 404))
        return resp.status == 200

    def remove_labelled(self, label):
        filters = urllib.parse.quote(json.dumps({"label": [label]}))
        left = self.json("GET", f"/containers/json?all=1&filters={filters}")
        for c in left:
            self.request("DELETE", f"/containers/{c['Id']}?force=1&v=1", ok=(204, 404))
        return len(left)


def build_image(engine):
    if engine.image_exists(IMAGE):
        return
    busybox = "/bin/busybox"
    if not os.access(busybox, os.X_OK):
        raise BenchError("no /bin/busybox: install Debian's busybox-static ('make deps')")
    with tempfile.TemporaryDirectory() as ctx:
        shutil.copy(os.path.join(ROOT, "images", "demo", "Dockerfile"), ctx)
        shutil.copy(busybox, os.path.join(ctx, "busybox"))
        env = dict(os.environ, DOCKER_BUILDKIT="0")
        p = subprocess.run(["docker", "build", "-q", "-t", IMAGE, ctx], env=env,
                           capture_output=True, text=True)
        if p.returncode != 0:
            raise BenchError(f"building {IMAGE} failed:\n{p.stderr}")


STEPS = ("create", "start", "wait", "logs", "delete")


def run_raw(engine, n, steps):
    """One chain through the API; returns the makespan in seconds and adds per-step times."""
    t0 = time.monotonic()
    for _ in range(n):
        t = time.monotonic()
        c = engine.json("POST", "/containers/create",
                        {"Image": IMAGE, "Cmd": ["true"], "Tty": False,
                         "Labels": {BENCH_LABEL: "raw"}})
        cid = c["Id"]
        t1 = time.monotonic()
        engine.request("POST", f"/containers/{cid}/start")
        t2 = time.monotonic()
        w = engine.json("POST", f"/containers/{cid}/wait")
        if w.get("StatusCode") != 0:
            raise BenchError(f"raw: `true` exited with {w.get('StatusCode')}")
        t3 = time.monotonic()
        engine.request("GET", f"/containers/{cid}/logs?stdout=1&stderr=1")
        t4 = time.monotonic()
        engine.request("DELETE", f"/containers/{cid}?force=1&v=1")
        t5 = time.monotonic()
        for name, d in zip(STEPS, (t1 - t, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            steps[name].append(d)
    return time.monotonic() - t0


def chain_dag(n):
    lines = [
        "# Written by bench/bench_chain.py: a chain of containers running `true`.",
        "dag: bench_chain",
        "tasks:",
    ]
    for i in range(1, n + 1):
        lines.append(f"  t{i:02d}:")
        lines.append(f"    image: {IMAGE}")
        lines.append("    command: [\"true\"]")
        if i > 1:
            lines.append(f"    depends_on: [t{i - 1:02d}]")
    return "\n".join(lines) + "\n"


def run_dagd(dagd, dag_file, workdir, rep, env=None):
    """One `dagd run` on a fresh state dir; its wall time. env: the whole environment
    (None: this process's)."""
    state = os.path.join(workdir, f"state-{rep}")
    out_path = os.path.join(workdir, f"dagd-{rep}.out")
    with open(out_path, "w") as out:
        t0 = time.monotonic()
        p = subprocess.run([dagd, "run", dag_file, "--state", state],
                           stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env)
        wall = time.monotonic() - t0
    if p.returncode != 0:
        with open(out_path) as f:
            tail = "".join(f.readlines()[-20:])
        raise BenchError(f"dagd run exited with {p.returncode}; last lines:\n{tail}")
    return wall


def fmt_ms(s):
    return f"{s * 1000:.0f} ms"


def rewrite_doc(section, begin=BEGIN, end=END):
    """Replaces the text between the markers begin and end in docs/benchmarks.md."""
    try:
        with open(DOC) as f:
            text = f.read()
    except FileNotFoundError:
        raise BenchError(f"{DOC} is missing") from None
    b, e = text.find(begin), text.find(end)
    if b < 0 or e < b:
        raise BenchError(f"{DOC} has no results markers ({begin!r} ... {end!r})")
    text = text[: b + len(begin)] + "\n" + section + text[e:]
    with open(DOC, "w") as f:
        f.write(text)


def publish(section, no_doc, begin=BEGIN, end=END):
    """Prints a results section and, unless no_doc, writes it between its markers."""
    print()
    print(section)
    if not no_doc:
        rewrite_doc(section, begin, end)
        print(f"results written to {os.path.relpath(DOC)}")


def run_main(name, main):
    """Runs a benchmark's main: a BenchError is a one-line message and exit status 1."""
    try:
        sys.exit(main())
    except BenchError as e:
        print(f"{name}: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


def git_commit():
    try:
        p = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                           capture_output=True, text=True)
        return p.stdout.strip() if p.returncode == 0 else "unknown"
    except OSError:
        return "unknown"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=20, help="containers in the chain (default 20)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions of each side (default 3)")
    ap.add_argument("--no-doc", action="store_true", help="do not rewrite docs/benchmarks.md")
    args = ap.parse_args()
    if args.tasks < 1 or args.reps < 1:
        raise BenchError("--tasks and --reps must be at least 1")

    dagd = os.environ.get("DAGD_BIN")
    if not dagd or not os.access(dagd, os.X_OK):
        raise BenchError("set DAGD_BIN to the absolute path of a built dagd (make bench does)")

    engine = Engine()
    ver = engine.json("GET", "/version")
    build_image(engine)

    steps = {s: [] for s in STEPS}
    raw, dd = [], []
    try:
        with tempfile.TemporaryDirectory(prefix="dagd-bench-") as work:
            dag_file = os.path.join(work, "bench_chain.yml")
            with open(dag_file, "w") as f:
                f.write(chain_dag(args.tasks))
            # Warm-up, not timed: the first container after an image build is slower.
            run_raw(engine, 1, {s: [] for s in STEPS})
            for rep in range(args.reps):
                raw.append(run_raw(engine, args.tasks, steps))
                print(f"rep {rep + 1}: raw  {fmt_ms(raw[-1])}", flush=True)
                dd.append(run_dagd(dagd, dag_file, work, rep))
                print(f"rep {rep + 1}: dagd {fmt_ms(dd[-1])}", flush=True)
    finally:
        engine.remove_labelled(f"{BENCH_LABEL}=raw")
    leftovers = engine.remove_labelled("io.dagd.dag=bench_chain")

    raw_med, dagd_med = statistics.median(raw), statistics.median(dd)
    ratio = dagd_med / raw_med
    n = args.tasks
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    met = "met" if ratio <= 1.0 else "NOT met"

    rows = [
        ("raw Engine API", raw_med, raw),
        ("dagd run", dagd_med, dd),
    ]
    table = [
        "| side | median makespan | per task | all runs |",
        "|---|---|---|---|",
    ]
    for name, med, runs in rows:
        table.append(f"| {name} | {fmt_ms(med)} | {fmt_ms(med / n)} | "
                     f"{', '.join(fmt_ms(r) for r in runs)} |")
    step_line = ", ".join(f"{s} {fmt_ms(statistics.mean(steps[s]))}" for s in STEPS)

    section = "\n".join([
        f"Measured {now}: {n} tasks, {args.reps} alternating repetitions, dagd commit "
        f"{git_commit()}, Docker Engine {ver.get('Version', '?')} (API {engine.version}), "
        f"{platform.system()}, {os.cpu_count()} CPUs.",
        "",
        *table,
        "",
        f"**dagd / raw = {ratio:.2f}** (target <= 1.00: {met}).",
        "",
        f"Raw per-container means: {step_line}.",
        "",
    ])
    if leftovers:
        section += (f"\nWarning: {leftovers} dagd container(s) of the chain were still present "
                    f"after the runs and were removed by the benchmark.\n")

    publish(section, args.no_doc)
    return 0


if __name__ == "__main__":
    run_main("bench_chain", main)
