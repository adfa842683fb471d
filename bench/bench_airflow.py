#!/usr/bin/python3
"""Side by side with Apache Airflow: the same DAGs of containers under both schedulers.

Two DAGs, each task a container of `true` in the benchmark image of bench_chain.py:

  chain   20 tasks, each waiting for the one before (nothing runs in parallel);
  fanout  60 tasks with no dependencies (all may run at once).

Both sides run as long-lived schedulers that a run is triggered on, and each drives the
containers through the local Docker engine:

  airflow  `airflow scheduler` with the LocalExecutor on a Postgres cluster of its own
           (made with initdb in a temporary directory, on a free loopback port, removed
           afterwards); each task a DockerOperator (auto_remove, mount_tmp_dir=False);
           a run triggered with `airflow dags trigger`;
  dagd     `dagd serve` (bench_serve.Server) on a fresh state directory; a run
           triggered with POST /api/v1/dags/{dag}/runs.

A run's makespan is taken from each scheduler's own record of it: Airflow's dag_run
end_date minus queued_at (read from Postgres), dagd's run end_date minus start_date (read
from its API); both are set when the trigger is accepted and when the last task is
done. The sides alternate, REPS times for each DAG (airflow, dagd, airflow, dagd, ...).
While they run, a thread samples every 0.5 s the memory of each side's process tree
(the sum of RSS from /proc/<pid>/statm, and the sum of PSS from /proc/<pid>/smaps_rollup,
which splits the pages forked processes share among them): Airflow's scheduler with everything it forks (the DAG file
processor, the LocalExecutor's workers and every task's processes), and the scheduler
process alone; dagd's server (it forks nothing). Both servers stay up for the whole
benchmark, so Airflow's idle loop also runs while dagd is timed, not the other way round.

The results replace the section between the bench_airflow markers in
docs/benchmarks.md. Needs Airflow in a virtual environment (`make bench-airflow` makes
it), PostgreSQL's server programs (initdb, pg_ctl; when run as root, the `postgres`
user runs them) and psql. Standard library only on this side.

Usage: DAGD_BIN=/abs/path/to/dagd /usr/bin/python3 bench/bench_airflow.py \\
           --airflow build/airflow-venv/bin/airflow [--reps N] [--no-doc]
"""

import argparse
import datetime
import glob
import os
import platform
import pwd
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.parse

import bench_chain as bc
from bench_serve import Server

BEGIN = "<!-- bench_airflow results: begin (rewritten by bench/bench_airflow.py) -->"
END = "<!-- bench_airflow results: end -->"

LABEL_AIRFLOW = "airflow"
CHAIN_TASKS = 20
FANOUT_TASKS = 60
PARALLELISM = 64
RUN_TIMEOUT = 600.0
PARSE_TIMEOUT = 180.0
SAMPLE_EVERY = 0.5

# Airflow's settings for a fast, fair local run; docs/benchmarks.md lists them.
AIRFLOW_SETTINGS = {
    "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__PARALLELISM": str(PARALLELISM),
    "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(PARALLELISM),
    "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
    "AIRFLOW__DATABASE__LOAD_DEFAULT_CONNECTIONS": "False",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
    "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "60",
    "AIRFLOW__SCHEDULER__DAG_DIR_LIST_INTERVAL": "60",
    "AIRFLOW__SCHEDULER__PARSING_PROCESSES": "1",
    "AIRFLOW__SCHEDULER__MAX_TIS_PER_QUERY": str(PARALLELISM),
}


# ---- the DAG files, one text per side ----

def airflow_dag(dag_id, n, chained, docker_url):
    lines = [
        f"# Written by bench/bench_airflow.py: {n} containers running `true`"
        f"{', a chain' if chained else ', no dependencies'}.",
        "import datetime",
        "from airflow import DAG",
        "from airflow.providers.docker.operators.docker import DockerOperator",
        "",
        f"with DAG({dag_id!r}, schedule=None, catchup=False,",
        "         start_date=datetime.datetime(2024, 1, 1),",
        f"         max_active_tasks={PARALLELISM}, max_active_runs=1) as dag:",
        "    prev = None",
        f"    for i in range(1, {n + 1}):",
        f"        t = DockerOperator(task_id=f't{{i:02d}}', image={bc.IMAGE!r}, command=['true'],",
        f"                           docker_url={docker_url!r}, auto_remove='force',",
        "                           mount_tmp_dir=False,",
        f"                           labels={{{bc.BENCH_LABEL!r}: {LABEL_AIRFLOW!r}}})",
    ]
    if chained:
        lines += [
            "        if prev is not None:",
            "            prev >> t",
            "        prev = t",
        ]
    return "\n".join(lines) + "\n"


def dagd_dag(dag_id, n, chained):
    lines = [
        f"# Written by bench/bench_airflow.py: {n} containers running `true`.",
        f"dag: {dag_id}",
        f"max_active_tasks: {PARALLELISM}",
        "max_active_runs: 1",
        "tasks:",
    ]
    for i in range(1, n + 1):
        lines.append(f"  t{i:02d}:")
        lines.append(f"    image: {bc.IMAGE}")
        lines.append("    command: [\"true\"]")
        if chained and i > 1:
            lines.append(f"    depends_on: [t{i - 1:02d}]")
    return "\n".join(lines) + "\n"


WORKLOADS = [("bench_af_chain", CHAIN_TASKS, True), ("bench_af_fanout", FANOUT_TASKS, False)]


# ---- memory of a process tree ----

def proc_table():
    """{pid: (ppid, rss in kB)} for every process readable now."""
    table = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
            with open(f"/proc/{d}/statm") as f:
                rss_pages = int(f.read().split()[1])
        except (OSError, ValueError, IndexError):
            continue
        ppid = int(stat[stat.rfind(")") + 2:].split()[1])
        table[int(d)] = (ppid, rss_pages * os.sysconf("SC_PAGE_SIZE") // 1024)
    return table


def pss_kb(pid):
    """The proportional set size of one process (shared pages split among their users)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class MemorySampler:
    """Samples the memory of process trees in a thread; keeps each root's peaks: the
    sum of RSS over the tree, the sum of PSS over it, the root's RSS, the tree's size."""

    def __init__(self):
        self.roots = {}  # name -> pid
        self.peak_tree = {}
        self.peak_pss = {}
        self.peak_root = {}
        self.peak_procs = {}
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def watch(self, name, pid):
        with self.lock:
            self.roots[name] = pid
            for peaks in (self.peak_tree, self.peak_pss, self.peak_root, self.peak_procs):
                peaks.setdefault(name, 0)

    def sample(self):
        table = proc_table()
        children = {}
        for pid, (ppid, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        with self.lock:
            roots = dict(self.roots)
        for name, root in roots.items():
            if root not in table:
                continue
            total, pss, procs, todo = 0, 0, 0, [root]
            while todo:
                p = todo.pop()
                total += table[p][1]
                pss += pss_kb(p)
                procs += 1
                todo.extend(children.get(p, []))
            with self.lock:
                self.peak_tree[name] = max(self.peak_tree[name], total)
                self.peak_pss[name] = max(self.peak_pss[name], pss)
                self.peak_root[name] = max(self.peak_root[name], table[root][1])
                self.peak_procs[name] = max(self.peak_procs[name], procs)

    def loop(self):
        while not self.done.wait(SAMPLE_EVERY):
            self.sample()

    def close(self):
        self.done.set()
        self.thread.join()


# ---- Postgres of our own ----

def pg_bin(name):
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.access(os.path.join(d, name), os.X_OK):
            return os.path.join(d, name)
    found = shutil.which(name)
    if not found:
        raise bc.BenchError(f"no {name}: install PostgreSQL's server (Debian: apt-get install postgresql)")
    return found


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    """A throw-away cluster: initdb in dir, trust auth, loopback only, a free port."""

    def __init__(self, work):
        self.dir = os.path.join(work, "pg")
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self.as_user = []
        os.makedirs(self.dir)
        if os.geteuid() == 0:  # the server refuses to run as root
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise bc.BenchError("running as root and there is no `postgres` user to run the server") from None
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.started = False

    def run(self, argv):
        p = subprocess.run(self.as_user + argv, capture_output=True, text=True, cwd=self.dir)
        if p.returncode != 0:
            raise bc.BenchError(f"{' '.join(argv)} failed:\n{p.stdout}{p.stderr}")
        return p.stdout

    def start(self):
        self.run([pg_bin("initdb"), "-D", self.data, "-A", "trust", "-U", "postgres", "-E", "UTF8"])
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=300"
        self.run([pg_bin("pg_ctl"), "-D", self.data, "-l", os.path.join(self.dir, "log"), "-w",
                  "-o", opts, "start"])
        self.started = True
        self.sql("CREATE DATABASE airflow", db="postgres")

    def sql(self, query, db="airflow"):
        psql = shutil.which("psql") or pg_bin("psql")
        p = subprocess.run([psql, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                            f"host=127.0.0.1 port={self.port} user=postgres dbname={db}", "-c", query],
                           capture_output=True, text=True)
        if p.returncode != 0:
            raise bc.BenchError(f"psql: {query}: {p.stderr.strip()}")
        return p.stdout.strip()

    def url(self):
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/airflow"

    def stop(self):
        if self.started:
            subprocess.run(self.as_user + [pg_bin("pg_ctl"), "-D", self.data, "-m", "fast", "-w", "stop"],
                           capture_output=True, cwd=self.dir)
            self.started = False


# ---- the Airflow side ----

class Airflow:
    def __init__(self, airflow, work, pg, docker_url):
        self.airflow = airflow
        self.home = os.path.join(work, "airflow")
        self.dags = os.path.join(self.home, "dags")
        os.makedirs(self.dags)
        for dag_id, n, chained in WORKLOADS:
            with open(os.path.join(self.dags, f"{dag_id}.py"), "w") as f:
                f.write(airflow_dag(dag_id, n, chained, docker_url))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        self.env.update(AIRFLOW_SETTINGS)
        self.env.update({
            "AIRFLOW_HOME": self.home,
            "AIRFLOW__CORE__DAGS_FOLDER": self.dags,
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg.url(),
        })
        self.pg = pg
        self.proc = None
        self.log = None

    def cli(self, *args):
        p = subprocess.run([self.airflow, *args], env=self.env, capture_output=True, text=True,
                           stdin=subprocess.DEVNULL)
        if p.returncode != 0:
            raise bc.BenchError(f"airflow {' '.join(args)} exited with {p.returncode}:\n"
                                f"{(p.stdout + p.stderr)[-3000:]}")
        return p.stdout

    def version(self):
        return self.cli("version").strip().splitlines()[-1]

    def start(self):
        self.cli("db", "migrate")
        self.log = open(os.path.join(self.home, "scheduler.out"), "w")
        self.proc = subprocess.Popen([self.airflow, "scheduler"], env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        ids = ", ".join(f"'{d}'" for d, _, _ in WORKLOADS)
        deadline = time.monotonic() + PARSE_TIMEOUT
        while True:
            self.check_alive()
            n = self.pg.sql(f"SELECT count(*) FROM dag d JOIN serialized_dag s USING (dag_id) "
                            f"WHERE d.dag_id IN ({ids}) AND NOT d.is_paused AND d.is_active")
            if n == str(len(WORKLOADS)):
                return
            if time.monotonic() > deadline:
                raise bc.BenchError(f"Airflow did not load the DAGs within {PARSE_TIMEOUT:.0f} s:\n{self.tail()}")
            time.sleep(0.5)

    def tail(self, n=30):
        try:
            with open(os.path.join(self.home, "scheduler.out")) as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def check_alive(self):
        if self.proc.poll() is not None:
            raise bc.BenchError(f"airflow scheduler exited with {self.proc.returncode}:\n{self.tail()}")

    def run(self, dag_id, rep):
        run_id = f"bench_{rep}_{os.getpid()}"
        self.cli("dags", "trigger", "-r", run_id, dag_id)
        deadline = time.monotonic() + RUN_TIMEOUT
        q = (f"SELECT state, extract(epoch FROM end_date - queued_at) FROM dag_run "
             f"WHERE dag_id = '{dag_id}' AND run_id = '{run_id}'")
        while True:
            self.check_alive()
            state, _, secs = self.pg.sql(q).partition("|")
            if state == "success" and secs:
                return float(secs)
            if state == "failed":
                raise bc.BenchError(f"Airflow run {run_id} of {dag_id} failed:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise bc.BenchError(f"Airflow run {run_id} of {dag_id} not done in {RUN_TIMEOUT:.0f} s")
            time.sleep(0.1)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc:
            try:  # task processes left in the session
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.log:
            self.log.close()


# ---- the dagd side ----

def api_seconds(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def dagd_run(srv, dag_id):
    run = srv.request("POST", f"/api/v1/dags/{dag_id}/runs", body={})["dag_run_id"]
    path = f"/api/v1/dags/{dag_id}/runs/{urllib.parse.quote(run, safe='')}"
    deadline = time.monotonic() + RUN_TIMEOUT
    while True:
        srv.check_alive()
        doc = srv.request("GET", path)
        if doc["state"] == "success":
            return api_seconds(doc["end_date"]) - api_seconds(doc["start_date"])
        if doc["state"] not in ("queued", "running"):
            raise bc.BenchError(f"dagd run {run} of {dag_id} ended {doc['state']}:\n{srv.tail()}")
        if time.monotonic() > deadline:
            raise bc.BenchError(f"dagd run {run} of {dag_id} not done in {RUN_TIMEOUT:.0f} s")
        time.sleep(0.1)


# ---- report ----

def mib(kb):
    return f"{kb / 1024:.0f} MiB"


def secs(s):
    return f"{s:.1f} s"


def report(results, mem, airflow_version, engine, ver, reps, started):
    lines = [
        f"Measured {started:%Y-%m-%d %H:%M} UTC, one run of `make bench-airflow`: {reps} alternating "
        f"repetitions per DAG, Airflow {airflow_version} (LocalExecutor, PostgreSQL "
        f"{pg_version()}) against `dagd serve` (commit {bc.git_commit()}), Docker Engine "
        f"{ver.get('Version', '?')} (API {engine.version}), {platform.system()} "
        f"{platform.machine()}, {os.cpu_count()} CPUs, a machine shared with other jobs.",
        "",
        "| DAG | Airflow (median) | dagd (median) | Airflow / dagd | Airflow runs | dagd runs |",
        "|---|---|---|---|---|---|",
    ]
    for dag_id, n, chained in WORKLOADS:
        a, d = results[dag_id]["airflow"], results[dag_id]["dagd"]
        am, dm = statistics.median(a), statistics.median(d)
        name = f"chain of {n}" if chained else f"fan-out of {n}"
        lines.append(f"| {name} | {secs(am)} | {secs(dm)} | **{am / dm:.1f}x** | "
                     f"{', '.join(secs(x) for x in a)} | {', '.join(secs(x) for x in d)} |")
    lines += [
        "",
        "| peak resident memory | Airflow | dagd |",
        "|---|---|---|",
        f"| the scheduler process alone | {mib(mem.peak_root['airflow'])} | {mib(mem.peak_root['dagd'])} |",
        f"| its whole process tree, sum of PSS | {mib(mem.peak_pss['airflow'])} "
        f"(up to {mem.peak_procs['airflow']} processes) | {mib(mem.peak_pss['dagd'])} "
        f"({mem.peak_procs['dagd']} process) |",
        f"| its whole process tree, sum of RSS | {mib(mem.peak_tree['airflow'])} "
        f"| {mib(mem.peak_tree['dagd'])} |",
        "",
        f"Airflow / dagd, peak memory: scheduler alone "
        f"**{mem.peak_root['airflow'] / mem.peak_root['dagd']:.0f}x**, whole tree (PSS) "
        f"**{mem.peak_pss['airflow'] / mem.peak_pss['dagd']:.0f}x**.",
        "",
    ]
    return "\n".join(lines)


PG_VERSION = ["?"]


def pg_version():
    return PG_VERSION[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--airflow", default=os.path.join(bc.ROOT, "build", "airflow-venv", "bin", "airflow"),
                    help="the airflow program of the virtual environment (default build/airflow-venv)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions of each side per DAG (default 3)")
    ap.add_argument("--no-doc", action="store_true", help="do not rewrite docs/benchmarks.md")
    args = ap.parse_args()
    if args.reps < 1:
        raise bc.BenchError("--reps must be at least 1")
    dagd = os.environ.get("DAGD_BIN")
    if not dagd or not os.access(dagd, os.X_OK):
        raise bc.BenchError("set DAGD_BIN to the absolute path of a built dagd (make bench-airflow does)")
    if not os.access(args.airflow, os.X_OK):
        raise bc.BenchError(f"no {args.airflow}: `make bench-airflow` installs Airflow there")

    engine = bc.Engine()
    ver = engine.json("GET", "/version")
    bc.build_image(engine)
    docker_url = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    started = datetime.datetime.now(datetime.timezone.utc)

    results = {d: {"airflow": [], "dagd": []} for d, _, _ in WORKLOADS}
    pg = af = srv = mem = None
    work = tempfile.mkdtemp(prefix="dagd-bench-airflow-")
    os.chmod(work, 0o755)  # the postgres user walks through it to its own directory
    try:
        pg = Postgres(work)
        pg.start()
        PG_VERSION[0] = pg.sql("SHOW server_version", db="postgres").split()[0]
        af = Airflow(args.airflow, work, pg, docker_url)
        airflow_version = af.version()
        print(f"Airflow {airflow_version}: migrating its database and starting the scheduler", flush=True)
        af.start()

        dags = os.path.join(work, "dagd-dags")
        os.makedirs(dags)
        for dag_id, n, chained in WORKLOADS:
            with open(os.path.join(dags, f"{dag_id}.yml"), "w") as f:
                f.write(dagd_dag(dag_id, n, chained))
        srv = Server(dagd, dags, os.path.join(work, "dagd-state"), work, "airflow-bench",
                     extra_env={"DAGD_PARALLELISM": str(PARALLELISM)})
        srv.wait_health_ready()
        srv.wait_dags(len(WORKLOADS))

        mem = MemorySampler()
        mem.watch("airflow", af.proc.pid)
        mem.watch("dagd", srv.proc.pid)
        # Warm-up, not timed: one container, so the first timed run pays no first-use costs.
        bc.run_raw(engine, 1, {s: [] for s in bc.STEPS})
        for rep in range(args.reps):
            for dag_id, _, _ in WORKLOADS:
                results[dag_id]["airflow"].append(af.run(dag_id, rep))
                print(f"rep {rep + 1} {dag_id}: airflow {secs(results[dag_id]['airflow'][-1])}", flush=True)
                results[dag_id]["dagd"].append(dagd_run(srv, dag_id))
                print(f"rep {rep + 1} {dag_id}: dagd    {secs(results[dag_id]['dagd'][-1])}", flush=True)
        mem.sample()
        mem.close()
    finally:
        if mem:
            mem.close()
        if srv:
            srv.stop()
        if af:
            af.stop()
        if pg:
            pg.stop()
        engine.remove_labelled(f"{bc.BENCH_LABEL}={LABEL_AIRFLOW}")
        for dag_id, _, _ in WORKLOADS:
            engine.remove_labelled(f"io.dagd.dag={dag_id}")
        shutil.rmtree(work, ignore_errors=True)

    bc.publish(report(results, mem, airflow_version, engine, ver, args.reps, started), args.no_doc,
               BEGIN, END)
    return 0


if __name__ == "__main__":
    bc.run_main("bench_airflow", main)
