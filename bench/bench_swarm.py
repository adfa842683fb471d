#!/usr/bin/python3
"""Chain benchmark on the swarm backend, beside the local backend on the same engine.

Makes a private one-node swarm (tests/integration/swarm_cluster.py: a dockerd in a
network namespace of its own; the host's engine is never put in swarm mode), copies the
benchmark image into it, and runs the chain DAG of bench_chain.py (N tasks of `true`,
each depending on the one before) with `dagd run`, alternating:

  local  backend: local against the private node's engine (containers);
  swarm  backend: swarm against the same engine as a swarm manager (one replicated-job
         service per try, its state polled every 0.4 s).

Both sides use the same engine and storage driver, so the ratio is what the swarm
backend costs over plain containers. The results replace the section between the
markers in docs/benchmarks.md. Needs root (network namespaces); says so and exits 1
otherwise.

Usage: DAGD_BIN=/abs/path/to/dagd /usr/bin/python3 bench/bench_swarm.py [--tasks N] [--reps N]
"""
import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests", "integration"))
import bench_chain as bc  # noqa: E402
from swarm_cluster import Swarm, Unavailable  # noqa: E402

BEGIN = "<!-- bench_swarm results: begin (rewritten by bench/bench_swarm.py) -->"
END = "<!-- bench_swarm results: end -->"


def run_side(dagd, dag_file, work, tag, backend, host):
    """The chain once with `backend` against the engine at host (bench_chain.run_dagd)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGD_")}
    env.update(DAGD_BACKEND=backend, DAGD_DOCKER_HOST=host, DOCKER_HOST=host)
    return bc.run_dagd(dagd, dag_file, work, tag, env=env)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=10, help="tasks in the chain (default 10)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions of each side (default 3)")
    ap.add_argument("--no-doc", action="store_true", help="do not rewrite docs/benchmarks.md")
    args = ap.parse_args()
    dagd = os.environ.get("DAGD_BIN")
    if not dagd or not os.access(dagd, os.X_OK):
        raise bc.BenchError("set DAGD_BIN to the absolute path of a built dagd (make bench does)")
    bc.build_image(bc.Engine())
    s = Swarm(1, "%x" % (os.getpid() % 0xfff), bc.IMAGE)
    local, swarm = [], []
    try:
        try:
            s.start()
        except Unavailable as e:
            raise bc.BenchError("cannot make a private swarm here: %s" % e) from None
        with tempfile.TemporaryDirectory(prefix="dagd-bench-swarm-") as work:
            dag_file = os.path.join(work, "bench_chain.yml")
            with open(dag_file, "w") as f:
                f.write(bc.chain_dag(args.tasks))
            run_side(dagd, dag_file, work, "warm", "local", s.host(1))
            for rep in range(args.reps):
                local.append(run_side(dagd, dag_file, work, "local-%d" % rep, "local", s.host(1)))
                print("rep %d: local %s" % (rep + 1, bc.fmt_ms(local[-1])), flush=True)
                swarm.append(run_side(dagd, dag_file, work, "swarm-%d" % rep, "swarm", s.host(1)))
                print("rep %d: swarm %s" % (rep + 1, bc.fmt_ms(swarm[-1])), flush=True)
    finally:
        s.stop()
    lm, sm = statistics.median(local), statistics.median(swarm)
    n = args.tasks
    section = "\n".join([
        "Measured %s on %s (%s, %d CPUs), commit %s: a chain of %d tasks of `true`, median of %d "
        "runs of `dagd run` each, on a one-node swarm whose engine (vfs storage) serves both sides."
        % (datetime.date.today().isoformat(), "one machine",
           platform.machine(), os.cpu_count() or 0, bc.git_commit(), n, args.reps),
        "",
        "| backend | makespan | per task |",
        "|---|---|---|",
        "| local (containers) | %s | %s |" % (bc.fmt_ms(lm), bc.fmt_ms(lm / n)),
        "| swarm (replicated-job services) | %s | %s |" % (bc.fmt_ms(sm), bc.fmt_ms(sm / n)),
        "",
        "swarm/local: **%.2f**." % (sm / lm),
        "",
    ])
    bc.publish(section, args.no_doc, BEGIN, END)
    return 0


if __name__ == "__main__":
    bc.run_main("bench_swarm", main)
