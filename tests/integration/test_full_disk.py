"""A full disk and a damaged database (docs/operations.md, "A full disk" and "A damaged
database"). The state directory is a real 8 MiB tmpfs that a filler file fills while a task
runs: dagd says it is degraded (health, 503 on every state-changing call), starts nothing
(the downstream task waits), keeps the finished container until its outcome is written,
and once space returns writes what it could not and finishes the run; stopped while the
disk is full and started again after, it takes the kept container's exit instead of
running the try a second time. A database damaged in a middle page is refused at start.
"""
import os
import sqlite3
import subprocess
import time

import pytest

from conftest import TIME_SCALE, VALGRIND, containers, inspect
from serve_helpers import Server, dag_text, simple_task, wait_for


@pytest.fixture
def small_state(dg):
    """A state directory on its own 8 MiB tmpfs (unmounted after the test)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    d = dg.tmp / "small-state"
    d.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(d)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip("cannot mount a tmpfs: %s" % p.stderr.strip())
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def fill(d):
    """Fill the filesystem of d with a file; returns the file."""
    f = d / "filler"
    subprocess.run(["dd", "if=/dev/zero", "of=%s" % f, "bs=64k"], capture_output=True)
    assert os.statvfs(d).f_bavail == 0, "the tmpfs is not full"
    return f


def two_task_dag(dg):
    """a -> b; each appends its name to <tmp>/out/ran (outside the small tmpfs); a runs for a
    few seconds, so that the disk fills while it runs."""
    out = dg.tmp / "out"
    out.mkdir()
    os.chmod(out, 0o777)
    vol = '    volumes: ["%s:/out"]\n' % out
    dags = dg.tmp / "dags"
    dg.write(dag_text("@DAG@",
                      simple_task("a", "echo a >> /out/ran; sleep 3; echo done", vol + "    retries: 1\n"),
                      simple_task("b", "echo b >> /out/ran", vol + "    depends_on: [a]\n")),
             name="dags/dag.yml", dedent=False)
    return dags, out / "ran"


def ran(path):
    return path.read_text().splitlines() if path.exists() else []


def start_and_fill(dg, srv, ran_file, state):
    """Trigger a run, fill the disk while a runs, and wait for dagd to say it is degraded."""
    srv.wait_dag(dg.dag_id)
    run = srv.trigger(dg.dag_id)["dag_run_id"]
    wait_for("a to run", lambda: ran(ran_file) == ["a"], 20)
    filler = fill(state)
    h = wait_for("health to say degraded", lambda: (lambda h: h if h["status"] == "degraded" else None)(
        srv.health()), 20)
    assert "No space left" in h["reason"] or "full" in h["reason"], h
    return run, filler


def task_containers(dg, task):
    return containers(dg.dag_id, extra=("label=io.dagd.task=" + task,))


def no_containers_left(dg):
    wait_for("the run's containers to be removed", lambda: not dg.containers(), 20)


def assert_each_try_once(dg, srv, run, state, ran_file):
    """Each task ran once (its line in ran_file), and its one try is recorded as a success."""
    assert ran(ran_file) == ["a", "b"], "a task ran twice or not at all: %r\n%s" % (
        ran(ran_file), srv.all_stderr()[-4000:] if srv else "")
    for task in ("a", "b"):
        tries = dg.rows("SELECT * FROM task_tries WHERE dag_id = ? AND run_id = ? AND task_id = ?",
                        (dg.dag_id, run, task), state=state)
        assert [(t["try_number"], t["state"], t["exit_code"]) for t in tries] == [(1, "success", 0)], (task, tries)
    tis = dg.tis(run, state=state)
    assert tis["a"]["state"] == "success" and tis["a"]["try_number"] == 1, tis["a"]
    assert tis["b"]["state"] == "success" and tis["b"]["try_number"] == 1, tis["b"]


def test_full_disk_holds_work_and_resumes_when_space_returns(dg, small_state):
    dags, ran_file = two_task_dag(dg)
    srv = Server(dg, dags, state=small_state).start()
    try:
        run, filler = start_and_fill(dg, srv, ran_file, small_state)
        status, body = srv.request("POST", "/api/v1/dags/%s/runs" % dg.dag_id, {}, raw=True)
        assert status == 503 and "state writes are failing" in body, (status, body)
        status, body = srv.request("POST", "/api/v1/dags/%s/runs/%s/clear" % (dg.dag_id, run), {}, raw=True)
        assert status == 503 and "state writes are failing" in body, (status, body)
        # a finished, but its outcome is not on disk: its container is kept, b waits
        assert task_containers(dg, "a"), "a's container was removed before its outcome was written"
        # b may have been made ahead (before the disk filled), but is not started
        b = task_containers(dg, "b")
        assert ran(ran_file) == ["a"] and all(inspect(c)["State"]["Status"] == "created" for c in b), \
            "b started while writes fail"
        assert "state writes are failing" in srv.stderr(), srv.stderr()

        filler.unlink()
        r = srv.wait_run(dg.dag_id, run, timeout=30)
        assert r["state"] == "success", (r, srv.all_stderr()[-4000:])
        assert srv.health()["status"] == "ok"
        assert_each_try_once(dg, srv, run, small_state, ran_file)
        assert "state writes work again" in srv.stderr(), srv.stderr()
        no_containers_left(dg)
    finally:
        if srv.alive():
            srv.term()


@pytest.mark.skipif(VALGRIND, reason="two daemon lives and the waits between them take well over a minute "
                    "under valgrind; the ASan pass (with its leak check) covers stopping while writes fail")
def test_full_disk_then_restart_never_runs_a_try_twice(dg, small_state):
    dags, ran_file = two_task_dag(dg)
    srv = Server(dg, dags, state=small_state).start()
    try:
        srv.wait_dag(dg.dag_id)
        run = srv.trigger(dg.dag_id)["dag_run_id"]
        wait_for("a to run", lambda: ran(ran_file) == ["a"], 20)
        filler = fill(small_state)
        wait_for("a to finish", lambda: not containers(dg.dag_id, running_only=True, extra=("label=io.dagd.task=a",)),
                 20)
        time.sleep(1 * TIME_SCALE)  # dagd takes a's exit (and cannot write it)
        assert srv.term() == 0, srv.stderr()
        filler.unlink()
        srv.start()
        r = srv.wait_run(dg.dag_id, run, timeout=30)
        assert r["state"] == "success", (r, srv.all_stderr()[-4000:])
        assert "vanished" not in srv.all_stderr(), srv.all_stderr()
        assert_each_try_once(dg, srv, run, small_state, ran_file)
        no_containers_left(dg)
    finally:
        if srv.alive():
            srv.term()


def test_damaged_database_is_refused_at_start(dg):
    dag = dg.write("""\
        dag: @DAG@
        tasks:
          t:
            image: @IMAGE@
            command: ["true"]
        """)
    assert dg.run(dag).rc == 0
    db = dg.state / "dagd.db"
    con = sqlite3.connect(str(db))
    con.executemany("INSERT INTO dag_runs (dag_id, run_id, state, conf_json) VALUES (?, ?, 'success', ?)",
                    [("old", "r%05d" % i, '{"pad": "%s"}' % ("x" * 200)) for i in range(2000)])
    con.commit()
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page = con.execute("PRAGMA page_size").fetchone()[0]
    con.close()
    pages = db.stat().st_size // page
    assert pages > 50, pages
    with open(db, "r+b") as f:  # a page in the middle, not the header page
        f.seek(page * (pages // 2))
        f.write(os.urandom(page))

    res = dg.run(dag)
    assert res.rc != 0, res
    assert "%s is damaged" % db in res.err and "restore a backup" in res.err, res.err
    res = dg.exec("serve", "--dags", dg.tmp, "--state", dg.state, "--listen", "127.0.0.1:0", timeout=30)
    assert res.rc != 0, res
    assert "%s is damaged" % db in res.err, res.err


def test_full_disk_under_dagd_run_waits_to_record_the_end(dg, small_state):
    """`dagd run` (one run, in the foreground) holds b while the disk is full and does not
    end before the run's end is on disk."""
    dags, ran_file = two_task_dag(dg)
    p = dg.popen("run", dags / "dag.yml", "--state", small_state)
    wait_for("a to run", lambda: ran(ran_file) == ["a"], 20)
    filler = fill(small_state)

    def a_exited():
        a = task_containers(dg, "a")
        return a and all(inspect(c)["State"]["Status"] == "exited" for c in a)
    wait_for("a to finish", a_exited, 20)
    time.sleep(1.5 * TIME_SCALE)  # b would have started by now
    assert p.poll() is None, p.communicate()
    assert ran(ran_file) == ["a"], "b started while writes fail"
    filler.unlink()
    out, err = p.communicate(timeout=30 * TIME_SCALE)
    err = err.decode("utf-8", "replace")
    assert p.returncode == 0, err
    assert "state writes are failing" in err and "state writes work again" in err, err
    run = dg.the_run(state=small_state)
    assert run["state"] == "success", run
    assert_each_try_once(dg, None, run["run_id"], small_state, ran_file)
    no_containers_left(dg)
