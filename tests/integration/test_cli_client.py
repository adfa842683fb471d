"""The client verbs (`dagd dags`, `runs`, `tasks`, `logs`, `trigger`, `pause`, `unpause`,
`cancel`, `clear`, `mark`, `backfill`) against a real `dagd serve` and a real Docker engine.

Every test starts its own server on a free port with its own DAGs folder and state dir;
the client finds the token the server wrote in <state>/token through --state unless the
test is about token resolution. Effects are checked through the API (the client's own
--json output), the engine and the task logs.
"""
import json
import re
import time

import pytest

import serve_helpers
from serve_helpers import clean_env, dag_text, simple_task
from conftest import IMAGE, TIME_SCALE, containers, free_port


class Server:
    """A `dagd serve` (started by serve_helpers.Server) driven through the client verbs."""

    def __init__(self, dg):
        self.dg = dg
        self.dags = dg.tmp / "dags"
        self.dags.mkdir(exist_ok=True)
        self.daemon = serve_helpers.Server(dg, self.dags).start(timeout=30)
        self.port = self.daemon.port
        self.url = "http://127.0.0.1:%d" % self.port
        self.token = (dg.state / "token").read_text().strip()

    def write(self, body, dag_id=None, name=None):
        dag_id = dag_id or self.dg.dag_id
        path = self.dg.write(body, name="dags/%s.yml" % (name or dag_id), dag_id=dag_id)
        self.wait_dag(dag_id)
        return path

    def wait_dag(self, dag_id):
        deadline = time.monotonic() + 20 * TIME_SCALE
        while True:
            res = self.cli("dags", "--json")
            assert res.rc == 0, res
            if dag_id in [d["dag_id"] for d in json.loads(res.out)["dags"]]:
                return
            assert time.monotonic() < deadline, "the server did not load %s: %s" % (dag_id, res.out)
            time.sleep(0.3)

    def cli(self, *args, env=None, state=True, server=True, timeout=60):
        extra = []
        if server:
            extra += ["--server", self.url]
        if state:
            extra += ["--state", self.dg.state]
        return self.dg.exec(*args, *extra, env=env or clean_env(), timeout=timeout)

    def json(self, *args):
        res = self.cli(*args, "--json")
        assert res.rc == 0, res
        return json.loads(res.out)

    def run(self, run_id, dag_id=None):
        runs = self.json("runs", dag_id or self.dg.dag_id)["dag_runs"]
        match = [r for r in runs if r["dag_run_id"] == run_id]
        assert len(match) == 1, runs
        return match[0]

    def tis(self, run_id, dag_id=None):
        doc = self.json("tasks", dag_id or self.dg.dag_id, run_id)
        return {t["task_id"]: t for t in doc["task_instances"]}

    def wait(self, what, pred, timeout=60):
        deadline = time.monotonic() + timeout * TIME_SCALE
        while True:
            v = pred()
            if v:
                return v
            assert time.monotonic() < deadline, "timed out waiting for " + what
            time.sleep(0.3)

    def wait_run(self, run_id, states=("success", "failed"), timeout=60):
        return self.wait("run %s in %s" % (run_id, states),
                         lambda: (lambda r: r if r["state"] in states else None)(self.run(run_id)),
                         timeout)

    def trigger(self, *args):
        res = self.cli("trigger", self.dg.dag_id, *args)
        assert res.rc == 0, res
        return res.out.strip().splitlines()[0]


@pytest.fixture
def srv(dg):
    return Server(dg)


OK_DAG = """\
    dag: @DAG@
    description: two quick tasks
    tasks:
      a:
        image: @IMAGE@
        command: [sh, -c, "echo hello-a"]
      b:
        image: @IMAGE@
        command: [sh, -c, "echo hello-b; echo conf={{ params.x }}"]
        depends_on: [a]
    params:
      x: default
    """

FAIL_DAG = """\
    dag: @DAG@
    tasks:
      a:
        image: @IMAGE@
        command: [sh, -c, "echo fine"]
      b:
        image: @IMAGE@
        command: [sh, -c, "echo try {{ try_number }}; test {{ try_number }} -ge 2 || exit 7"]
        depends_on: [a]
    """

SLOW_DAG = """\
    dag: @DAG@
    tasks:
      slow:
        image: @IMAGE@
        command: [sh, -c, "for i in 1 2 3 4 5 6; do echo tick-$i; sleep 1; done"]
    """

SLEEP_DAG = """\
    dag: @DAG@
    tasks:
      nap:
        image: @IMAGE@
        command: [sleep, "300"]
      after:
        image: @IMAGE@
        command: [sh, -c, "echo never"]
        depends_on: [nap]
    """


# --------------------------------------------------------------------------- listings

def test_dags_table_and_json(srv, dg):
    srv.write(OK_DAG)
    res = srv.cli("dags")
    assert res.rc == 0, res
    lines = res.out.splitlines()
    assert lines[0].split() == ["DAG_ID", "PAUSED", "SCHEDULE", "NEXT_RUN"]
    row = [l for l in lines[1:] if l.split()[0] == dg.dag_id]
    assert len(row) == 1, res.out
    assert row[0].split()[1:] == ["no", "-", "-"], res.out
    # columns line up: every row starts its second column where the header does
    col = lines[0].index("PAUSED")
    assert all(l[col - 2:col] == "  " and l[col] != " " for l in lines[1:]), res.out
    doc = srv.json("dags")
    assert doc["total_entries"] == len(doc["dags"]) >= 1
    d = [x for x in doc["dags"] if x["dag_id"] == dg.dag_id][0]
    assert d["is_paused"] is False and d["description"] == "two quick tasks"


def test_trigger_wait_success_then_runs_tasks_logs(srv, dg):
    srv.write(OK_DAG)
    res = srv.cli("trigger", dg.dag_id, "--conf", '{"x": "from-conf"}', "--wait", timeout=90)
    assert res.rc == 0, res
    lines = res.out.splitlines()
    run_id = lines[0]
    assert run_id.startswith("manual__"), res.out
    assert lines[-1] == "%s success" % run_id, res.out

    runs = srv.json("runs", dg.dag_id)
    assert runs["total_entries"] == 1 and runs["dag_runs"][0]["dag_run_id"] == run_id
    assert runs["dag_runs"][0]["state"] == "success"
    assert runs["dag_runs"][0]["conf"] == {"x": "from-conf"}

    table = srv.cli("runs", dg.dag_id)
    assert table.rc == 0, table
    head, row = table.out.splitlines()
    assert head.split() == ["RUN_ID", "STATE", "LOGICAL_DATE", "START", "END"]
    assert row.split()[:2] == [run_id, "success"]

    # run ids carry ':' — the path segment must be encoded for this to find the run
    tis = srv.tis(run_id)
    assert set(tis) == {"a", "b"}
    assert all(t["state"] == "success" and t["try_number"] == 1 and t["exit_code"] == 0
               for t in tis.values()), tis
    table = srv.cli("tasks", dg.dag_id, run_id)
    assert table.rc == 0, table
    rows = table.out.splitlines()
    assert rows[0].split() == ["TASK", "STATE", "TRY", "EXIT", "DURATION", "IMAGE_ID", "MESSAGE"]
    parsed = {r.split()[0]: r.split()[1:] for r in rows[1:]}
    assert set(parsed) == {"a", "b"}
    for t in ("a", "b"):
        assert parsed[t][:3] == ["success", "1", "0"], table.out
        assert parsed[t][3].endswith("s"), table.out

    logs = srv.cli("logs", dg.dag_id, run_id, "b")
    assert logs.rc == 0, logs
    assert logs.out.splitlines() == ["hello-b", "conf=from-conf"]
    logs1 = srv.cli("logs", dg.dag_id, run_id, "a", "--try", "1")
    assert logs1.rc == 0 and logs1.out == "hello-a\n", logs1
    missing = srv.cli("logs", dg.dag_id, run_id, "a", "--try", "2")
    assert missing.rc == 3, missing
    assert missing.err.startswith("dagd: 404: "), missing
    nosuch = srv.cli("logs", dg.dag_id, run_id, "zz", "-f", timeout=20)
    assert nosuch.rc == 3 and "no task 'zz'" in nosuch.err, nosuch


def test_trigger_json_and_date(srv, dg):
    srv.write(OK_DAG)
    res = srv.cli("trigger", dg.dag_id, "--date", "2025-03-04", "--json")
    assert res.rc == 0, res
    run = json.loads(res.out)
    assert run["dag_id"] == dg.dag_id
    assert run["logical_date"].startswith("2025-03-04T00:00:00")
    srv.wait_run(run["dag_run_id"])
    res = srv.cli("trigger", dg.dag_id, "--wait", "--json", timeout=90)
    assert res.rc == 0, res
    run2 = json.loads(res.out)  # exactly one document: the finished run
    assert run2["state"] == "success" and run2["dag_run_id"] != run["dag_run_id"]


def test_trigger_wait_failed_exits_1(srv, dg):
    srv.write(FAIL_DAG)
    res = srv.cli("trigger", dg.dag_id, "--wait", timeout=90)
    assert res.rc == 1, res
    run_id = res.out.splitlines()[0]
    assert res.out.splitlines()[-1] == "%s failed" % run_id
    assert "task b failed" in res.err and "exit 7" in res.err, res
    assert srv.run(run_id)["state"] == "failed"


# --------------------------------------------------------------------------- logs -f

def test_logs_follow_streams_a_running_task(srv, dg):
    srv.write(SLOW_DAG)
    run_id = srv.trigger()
    srv.wait("slow running", lambda: srv.tis(run_id)["slow"]["state"] == "running")
    t0 = time.monotonic()
    res = srv.cli("logs", dg.dag_id, run_id, "slow", "-f", timeout=60)
    assert res.rc == 0, res
    assert res.out.splitlines() == ["tick-%d" % i for i in range(1, 7)], res
    # it followed the live try to its end rather than printing what was there and leaving
    assert time.monotonic() - t0 > 1.5 or srv.tis(run_id)["slow"]["state"] == "success"
    assert srv.wait_run(run_id)["state"] == "success"


def test_logs_follow_waits_for_the_task_to_start(srv, dg):
    srv.write("""\
        dag: @DAG@
        tasks:
          first:
            image: @IMAGE@
            command: [sleep, "2"]
          second:
            image: @IMAGE@
            command: [sh, -c, "echo one; sleep 1; echo two"]
            depends_on: [first]
        """)
    run_id = srv.trigger()
    res = srv.cli("logs", dg.dag_id, run_id, "second", "-f", timeout=60)
    assert res.rc == 0, res
    assert res.out.splitlines() == ["one", "two"]


# --------------------------------------------------------------------------- clear, mark

def test_clear_failed_reruns_only_failed_tasks(srv, dg):
    srv.write(FAIL_DAG)
    res = srv.cli("trigger", dg.dag_id, "--wait", timeout=90)
    assert res.rc == 1, res
    run_id = res.out.splitlines()[0]
    before = srv.tis(run_id)
    assert before["a"]["state"] == "success" and before["b"]["state"] == "failed"

    res = srv.cli("clear", dg.dag_id, run_id, "--failed", "--json")
    assert res.rc == 0, res
    json.loads(res.out)  # one JSON document
    run = srv.wait_run(run_id, states=("success",), timeout=90)
    assert run["state"] == "success"
    after = srv.tis(run_id)
    assert after["a"]["try_number"] == 1 and after["a"]["state"] == "success", after
    assert after["b"]["try_number"] == 2 and after["b"]["state"] == "success", after
    assert srv.cli("logs", dg.dag_id, run_id, "b").out == "try 2\n"
    assert srv.cli("logs", dg.dag_id, run_id, "b", "--try", "1").out == "try 1\n"


def test_clear_named_task_reruns_it(srv, dg):
    srv.write(OK_DAG)
    res = srv.cli("trigger", dg.dag_id, "--wait", timeout=90)
    assert res.rc == 0, res
    run_id = res.out.splitlines()[0]
    res = srv.cli("clear", dg.dag_id, run_id, "b")
    assert res.rc == 0, res
    # what was cleared, by task id and run: not a table of task states the answer lacks
    assert res.out == "cleared 1 task of run %s: b\n" % run_id, res
    srv.wait("b rerun", lambda: srv.tis(run_id)["b"]["try_number"] == 2
             and srv.tis(run_id)["b"]["state"] == "success", timeout=90)
    assert srv.tis(run_id)["a"]["try_number"] == 1
    res = srv.cli("clear", dg.dag_id, run_id, "--failed")
    assert res.rc == 0 and res.out == "nothing cleared in run %s: no task matched\n" % run_id, res
    bad = srv.cli("clear", dg.dag_id, run_id, "no_such_task")
    assert bad.rc == 3 and bad.err.startswith("dagd: 4"), bad


def test_mark(srv, dg):
    srv.write(FAIL_DAG)
    res = srv.cli("trigger", dg.dag_id, "--wait", timeout=90)
    assert res.rc == 1, res
    run_id = res.out.splitlines()[0]
    res = srv.cli("mark", dg.dag_id, run_id, "b", "success", "--json")
    assert res.rc == 0, res
    ti = json.loads(res.out)
    assert ti["task_id"] == "b" and ti["state"] == "success"
    assert srv.tis(run_id)["b"]["state"] == "success"
    res = srv.cli("mark", dg.dag_id, run_id, "a", "failed")
    assert res.rc == 0, res
    assert res.out.split() == ["a", "failed"]
    assert srv.tis(run_id)["a"]["state"] == "failed"
    bad = srv.cli("mark", dg.dag_id, run_id, "a", "running")
    assert bad.rc == 2 and "success or failed" in bad.err, bad


# --------------------------------------------------------------------------- cancel, pause

def test_cancel_stops_the_container(srv, dg):
    srv.write(SLEEP_DAG)
    run_id = srv.trigger()
    srv.wait("nap running", lambda: srv.tis(run_id)["nap"]["state"] == "running"
             and containers(dg.dag_id, running_only=True))
    res = srv.cli("cancel", dg.dag_id, run_id)
    assert res.rc == 0, res
    assert res.out.split()[0] == run_id
    run = srv.wait_run(run_id, timeout=60)
    assert run["state"] == "failed"
    srv.wait("container stopped", lambda: not containers(dg.dag_id, running_only=True), timeout=30)
    assert srv.tis(run_id)["nap"]["state"] != "success"
    # a task the cancelled run never started has no log; -f does not wait for it forever
    res = srv.cli("logs", dg.dag_id, run_id, "after", "-f", timeout=30)
    assert res.rc == 3 and "has not run" in res.err, res


def test_cancel_prints_the_state_the_run_ends_in_and_tasks_say_why(srv, dg):
    """A task that exits 0 in its stop grace still ends failed (the run was cancelled):
    `cancel` waits for the run to end and prints that end, and `dagd tasks` says why each
    task ended, without --json."""
    srv.write("""\
        dag: @DAG@
        tasks:
          graceful:
            image: @IMAGE@
            command: [sh, -c, "trap 'echo got-term; exit 0' TERM; echo up; while true; do sleep 0.2; done"]
          after:
            image: @IMAGE@
            command: [sh, -c, "echo never"]
            depends_on: [graceful]
        """)
    run_id = srv.trigger()
    srv.wait("graceful up", lambda: srv.tis(run_id)["graceful"]["state"] == "running"
             and srv.cli("logs", dg.dag_id, run_id, "graceful").out.startswith("up"))
    res = srv.cli("cancel", dg.dag_id, run_id, timeout=60)
    assert res.rc == 0, res
    assert res.out == "%s failed\n" % run_id, res
    assert srv.run(run_id)["state"] == "failed"
    table = srv.cli("tasks", dg.dag_id, run_id)
    assert table.rc == 0, table
    rows = [l.split(None, 6) for l in table.out.splitlines()]
    assert rows[0] == ["TASK", "STATE", "TRY", "EXIT", "DURATION", "IMAGE_ID", "MESSAGE"], table.out
    got = {r[0]: r for r in rows[1:]}
    assert got["graceful"][1:4] == ["failed", "1", "0"] and got["graceful"][6] == "run cancelled", table.out
    assert got["after"][1] == "skipped" and got["after"][6] == "run cancelled", table.out
    assert srv.cli("logs", dg.dag_id, run_id, "graceful").out == "up\ngot-term\n"
    # a run that has ended cannot be cancelled again
    again = srv.cli("cancel", dg.dag_id, run_id)
    assert again.rc == 3 and "already finished" in again.err, again


def test_pause_unpause_reflected_in_dags(srv, dg):
    srv.write(OK_DAG)

    def paused():
        return [d for d in srv.json("dags")["dags"] if d["dag_id"] == dg.dag_id][0]["is_paused"]

    res = srv.cli("pause", dg.dag_id)
    assert res.rc == 0 and res.out.strip() == "%s paused" % dg.dag_id, res
    assert paused() is True
    assert srv.cli("dags").out.count(dg.dag_id) == 1
    res = srv.cli("unpause", dg.dag_id, "--json")
    assert res.rc == 0, res
    assert json.loads(res.out)["is_paused"] is False
    assert paused() is False
    res = srv.cli("pause", "no_such_dag_here")
    assert res.rc == 3 and res.err.startswith("dagd: 404: "), res


# --------------------------------------------------------------------------- backfill

def test_backfill(srv, dg):
    srv.write("""\
        dag: @DAG@
        schedule: "@daily"
        start_date: 2025-01-01
        paused: true
        tasks:
          a:
            image: @IMAGE@
            command: [sh, -c, "echo ds={{ ds }}"]
        """)
    res = srv.cli("backfill", dg.dag_id, "--from", "2025-01-01", "--to", "2025-01-03", "--json")
    assert res.rc == 0, res
    doc = json.loads(res.out)
    made = doc["dag_runs"]
    assert doc["total_entries"] == len(made) >= 2, doc
    for r in made:
        assert r["dag_id"] == dg.dag_id
        assert "2025-01-01" <= r["logical_date"][:10] <= "2025-01-03", r
    listed = {r["dag_run_id"] for r in srv.json("runs", dg.dag_id)["dag_runs"]}
    assert {r["dag_run_id"] for r in made} <= listed
    for r in made:
        assert srv.wait_run(r["dag_run_id"], timeout=90)["state"] == "success"
        logs = srv.cli("logs", dg.dag_id, r["dag_run_id"], "a")
        assert logs.rc == 0 and logs.out == "ds=%s\n" % r["logical_date"][:10], logs
    table = srv.cli("backfill", dg.dag_id, "--from", "2025-02-01", "--to", "2025-02-01")
    assert table.rc == 0, table
    assert table.out.splitlines()[0].split() == ["RUN_ID", "STATE", "LOGICAL_DATE", "START", "END", "BACKFILL"]
    rows = [l.split() for l in table.out.splitlines()[1:]]
    assert [(r[0], r[2], r[-1]) for r in rows] == \
        [("backfill__2025-02-01T00:00:00Z", "2025-02-01T00:00:00.000Z", "created")], table
    srv.wait_run("backfill__2025-02-01T00:00:00Z", timeout=90)
    bad = srv.cli("backfill", dg.dag_id, "--from", "2025-01-03", "--to", "2025-01-01")
    assert bad.rc == 3 and bad.err.startswith("dagd: 4"), bad
    assert srv.cli("backfill", dg.dag_id, "--from", "2025-01-01").rc == 2
    assert srv.cli("backfill", dg.dag_id, "--from", "someday", "--to", "2025-01-01").rc == 2


def test_one_logical_date_one_run(srv, dg):
    """`trigger --date` and `backfill` never make a second run for a logical date: the
    trigger fails (exit 3) naming the run that has the date, the backfill lists it as
    existing; `--rerun` (`--reset-dagruns` on backfill) clears that run to run again."""
    srv.write("""\
        dag: @DAG@
        schedule: "@daily"
        start_date: 2025-01-01
        paused: true
        tasks:
          a:
            image: @IMAGE@
            command: [sh, -c, "echo ds={{ ds }} try={{ try_number }}"]
        """)
    made = srv.cli("backfill", dg.dag_id, "--from", "2025-01-01", "--to", "2025-01-02")
    assert made.rc == 0, made
    assert [l.split()[-1] for l in made.out.splitlines()[1:]] == ["created", "created"], made
    for rid in ("backfill__2025-01-01T00:00:00Z", "backfill__2025-01-02T00:00:00Z"):
        assert srv.wait_run(rid, timeout=90)["state"] == "success"

    res = srv.cli("trigger", dg.dag_id, "--date", "2025-01-02")
    assert res.rc == 3 and res.out == "", res
    assert res.err.startswith("dagd: 409: ") and "backfill__2025-01-02T00:00:00Z" in res.err, res
    assert "--rerun" in res.err, res

    res = srv.cli("trigger", dg.dag_id, "--date", "2025-01-02", "--rerun", "--wait", timeout=90)
    assert res.rc == 0, res
    assert res.out.splitlines() == ["backfill__2025-01-02T00:00:00Z", "backfill__2025-01-02T00:00:00Z success"], res
    logs = srv.cli("logs", dg.dag_id, "backfill__2025-01-02T00:00:00Z", "a")
    assert logs.rc == 0 and logs.out == "ds=2025-01-02 try=2\n", logs

    again = srv.cli("backfill", dg.dag_id, "--from", "2025-01-01", "--to", "2025-01-03")
    assert again.rc == 0, again
    rows = [l.split() for l in again.out.splitlines()[1:]]
    assert [(r[0], r[-1]) for r in rows] == [("backfill__2025-01-01T00:00:00Z", "existing"),
                                             ("backfill__2025-01-02T00:00:00Z", "existing"),
                                             ("backfill__2025-01-03T00:00:00Z", "created")], again
    assert "2 runs existed already" in again.err and "--rerun" in again.err, again
    srv.wait_run("backfill__2025-01-03T00:00:00Z", timeout=90)
    reset = srv.cli("backfill", dg.dag_id, "--from", "2025-01-01", "--to", "2025-01-01", "--reset-dagruns",
                    "--json")
    assert reset.rc == 0, reset
    doc = json.loads(reset.out)
    assert doc["cleared"] == ["backfill__2025-01-01T00:00:00Z"] and doc["created"] == [] == doc["existing"], doc
    assert srv.wait_run("backfill__2025-01-01T00:00:00Z", timeout=90)["state"] == "success"
    runs = srv.json("runs", dg.dag_id)["dag_runs"]
    assert sorted(r["dag_run_id"] for r in runs) == ["backfill__2025-01-0%dT00:00:00Z" % i for i in (1, 2, 3)], runs


def test_trigger_date_gets_the_inferred_data_interval(srv, dg):
    """`trigger --date` on an @daily DAG: the day before, as Airflow infers it; tables show
    times with milliseconds."""
    srv.write("""\
        dag: @DAG@
        schedule: "@daily"
        start_date: 2025-01-01
        paused: true
        tasks:
          a:
            image: @IMAGE@
            command: [sh, -c, "echo {{ data_interval_start }} {{ data_interval_end }}"]
        """)
    res = srv.cli("trigger", dg.dag_id, "--date", "2025-01-15T13:30:00Z", "--wait", "--json", timeout=90)
    assert res.rc == 0, res
    run = json.loads(res.out)
    assert run["data_interval_start"] == "2025-01-14T00:00:00.000Z", run
    assert run["data_interval_end"] == "2025-01-15T00:00:00.000Z", run
    logs = srv.cli("logs", dg.dag_id, run["dag_run_id"], "a")
    assert logs.out == "2025-01-14T00:00:00Z 2025-01-15T00:00:00Z\n", logs
    table = srv.cli("runs", dg.dag_id)
    assert table.rc == 0, table
    row = table.out.splitlines()[1].split()
    assert row[:3] == [run["dag_run_id"], "success", "2025-01-15T13:30:00.000Z"], table
    assert all(re.fullmatch(r"[\dT:-]+\.\d{3}Z", t) for t in row[3:5]), table


# --------------------------------------------------------------------------- import errors

BROKEN_DAG = """\
dag: %s
tasks:
  a:
    image: %s
    comand: [sh, -c, "echo a"]
    retires: 3
"""


def test_import_errors_in_dags_import_errors_and_trigger(srv, dg):
    """Files that did not load are visible from the command line: `dags` counts them (on
    stderr), `import-errors` lists every error, and triggering the DAG a broken file
    declares names that file. Health and the metric count files, not errors."""
    srv.write(OK_DAG)
    broken_id = dg.dag_id + "_broken"
    broken = dg.write(BROKEN_DAG % (broken_id, IMAGE), name="dags/broken.yml", dedent=False)
    syntax = dg.write("dag: [unclosed\n", name="dags/syntax.yml", dedent=False)
    errs = srv.wait("both files in the import errors", lambda: (lambda d: d if {e["filename"] for e in
                    d["import_errors"]} == {str(broken), str(syntax)} else None)(srv.daemon.get("/import-errors")))
    assert errs["total_entries"] == 3, errs  # two in broken.yml, one in syntax.yml

    res = srv.cli("dags")
    assert res.rc == 0, res
    assert res.err.splitlines() == ["2 files have errors: dagd import-errors"], res
    assert [l.split()[0] for l in res.out.splitlines()] == ["DAG_ID", dg.dag_id], res
    res = srv.cli("dags", "--json")
    assert res.rc == 0 and json.loads(res.out)["total_entries"] == 1, res

    res = srv.cli("import-errors")
    assert res.rc == 0, res
    lines = res.out.splitlines()
    assert lines[0].split() == ["FILE", "ERROR"], res.out
    assert len(lines) == 4, res.out
    assert any(l.startswith("%s:5:5 " % broken) and "comand" in l for l in lines), res.out
    assert any(l.startswith("%s:6:5 " % broken) and "retires" in l for l in lines), res.out
    assert any(l.startswith("%s:" % syntax) for l in lines), res.out
    assert srv.json("import-errors") == errs

    assert srv.daemon.health()["import_errors"] == 2
    status, metrics = srv.daemon.request("GET", "/metrics", raw=True)
    assert status == 200 and "\ndagd_import_errors 2\n" in metrics, metrics

    res = srv.cli("trigger", broken_id)
    assert res.rc == 3, res
    assert "DAG '%s' is not loaded: its file %s has errors" % (broken_id, broken) in res.err, res
    assert "dagd import-errors" in res.err, res
    res = srv.cli("trigger", "no_such_dag_at_all")
    assert res.rc == 3 and "no DAG 'no_such_dag_at_all'" in res.err, res
    assert "2 files of the server's DAGs folder have errors" in res.err and "dagd import-errors" in res.err, res
    assert srv.json("runs", dg.dag_id)["total_entries"] == 0

    # fixed, the file loads and the count goes down
    dg.write(dag_text(broken_id, simple_task("a", "echo a")), name="dags/broken.yml", dedent=False)
    srv.wait_dag(broken_id)
    res = srv.cli("dags")
    assert res.err.splitlines() == ["1 file has errors: dagd import-errors"], res


# --------------------------------------------------------------------------- help

def test_help_on_every_verb(dg):
    """--help and -h print the verb's usage on stdout and exit 0, for every verb; so does
    `dagd help VERB`."""
    verbs = ["run", "validate", "test", "next", "serve", "health", "dags", "import-errors", "runs", "tasks", "logs",
             "trigger", "pause", "unpause", "cancel", "clear", "mark", "backfill", "version"]
    env = clean_env(DAGD_TOKEN="x", DAGD_SERVER="http://127.0.0.1:%d" % free_port())
    for verb in verbs:
        for flag in ("--help", "-h"):
            res = dg.exec(verb, flag, env=env, timeout=20)
            assert res.rc == 0, res
            assert res.out.startswith("usage: dagd %s" % verb), res
            assert res.err == "", res
        # also after arguments, and by `dagd help VERB`
        res = dg.exec(verb, "some_arg", "--help", env=env, timeout=20)
        assert res.rc == 0 and res.out.startswith("usage: dagd %s" % verb), res
        assert dg.exec("help", verb, env=env).out == dg.exec(verb, "--help", env=env).out
    for argv in (["help"], ["--help"], ["-h"]):
        res = dg.exec(*argv, env=env)
        assert res.rc == 0 and res.out.startswith("usage: dagd <command>") and "import-errors" in res.out, res
    res = dg.exec("help", "nosuchverb", env=env)
    assert res.rc == 2 and "unknown command" in res.err, res


# --------------------------------------------------------------------------- tokens, errors

def test_token_resolution(srv, dg, tmp_path):
    srv.write(OK_DAG)
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    # no --state and an empty default state dir: no token → 401 with a hint, exit 3
    env = clean_env(XDG_STATE_HOME=str(empty), HOME=str(empty))
    env.pop("STATE_DIRECTORY", None)
    res = srv.cli("dags", state=False, env=env)
    assert res.rc == 3, res
    assert res.err.startswith("dagd: 401: "), res
    assert "DAGD_TOKEN" in res.err and str(empty) in res.err, res
    # DAGD_TOKEN
    res = srv.cli("dags", "--json", state=False, env=dict(env, DAGD_TOKEN=srv.token))
    assert res.rc == 0 and dg.dag_id in res.out, res
    # DAGD_TOKEN wins over --state
    res = srv.cli("dags", env=dict(env, DAGD_TOKEN="not-the-token"))
    assert res.rc == 3 and "401" in res.err and "DAGD_TOKEN" in res.err, res
    # --token-file
    tf = tmp_path / "tok"
    tf.write_text(srv.token + "\n")
    res = srv.cli("dags", "--token-file", tf, state=False, env=env)
    assert res.rc == 0 and dg.dag_id in res.out, res
    # the default state dir from the environment
    (empty / "dagd").mkdir()
    (empty / "dagd" / "token").write_text(srv.token)
    res = srv.cli("dags", state=False, env=env)
    assert res.rc == 0 and dg.dag_id in res.out, res
    # a named token file that does not exist is an input error
    res = srv.cli("dags", "--token-file", tmp_path / "nope", state=False, env=env)
    assert res.rc == 2 and "nope" in res.err, res


def test_server_from_environment(srv, dg):
    srv.write(OK_DAG)
    res = srv.cli("dags", server=False, env=clean_env(DAGD_SERVER=srv.url))
    assert res.rc == 0 and dg.dag_id in res.out, res


def test_errors_and_usage(srv, dg):
    srv.write(OK_DAG)
    res = srv.cli("trigger", dg.dag_id, "--conf", "{not json")
    assert res.rc == 2 and "--conf" in res.err, res
    res = srv.cli("trigger", dg.dag_id, "--conf", "[1, 2]")
    assert res.rc == 2 and "object" in res.err, res
    res = srv.cli("trigger", dg.dag_id, "--date", "yesterday-ish")
    assert res.rc == 2, res
    assert srv.json("runs", dg.dag_id)["total_entries"] == 0  # none of those reached the server
    res = srv.cli("runs")
    assert res.rc == 2 and "usage: dagd runs" in res.err, res
    res = srv.cli("runs", dg.dag_id, "--wait")
    assert res.rc == 2 and "--wait" in res.err, res
    res = srv.cli("logs", dg.dag_id, "r", "t", "--try", "zero")
    assert res.rc == 2, res
    res = srv.cli("tasks", dg.dag_id, "manual__no:such+run")
    assert res.rc == 3 and res.err.startswith("dagd: 404: "), res
    res = srv.cli("runs", "no_such_dag")
    assert res.rc == 3 and res.err.startswith("dagd: 404: "), res
    res = srv.cli("trigger", "no_such_dag")
    assert res.rc == 3 and res.err.startswith("dagd: 404: "), res


def test_health_needs_no_token(srv, dg):
    """`dagd health` (what the image's HEALTHCHECK runs, docs/images.md) asks the server's
    health endpoint without a token: `ok <version>` and exit 0 from a running server, the
    API's object with --json, exit 3 when nothing answers."""
    env = clean_env(DAGD_SERVER=srv.url)
    res = dg.exec("health", env=env, timeout=20)
    assert res.rc == 0 and res.out == "ok 0.1.0\n", res
    res = dg.exec("health", "--json", env=env, timeout=20)
    assert res.rc == 0 and json.loads(res.out)["status"] == "ok", res
    port = free_port()
    res = dg.exec("health", "--server", "http://127.0.0.1:%d" % port, env=clean_env(), timeout=20)
    assert res.rc == 3 and "cannot reach the server at http://127.0.0.1:%d" % port in res.err, res


def test_unreachable_server(dg):
    port = free_port()
    res = dg.exec("dags", "--server", "http://127.0.0.1:%d" % port, env=clean_env(DAGD_TOKEN="x"))
    assert res.rc == 3, res
    assert "cannot reach the server at http://127.0.0.1:%d" % port in res.err, res
    res = dg.exec("trigger", "some_dag", "--wait", env=clean_env(DAGD_TOKEN="x",
                                                               DAGD_SERVER="http://127.0.0.1:%d" % port))
    assert res.rc == 3 and "cannot reach" in res.err, res
