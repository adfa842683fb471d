"""`dagd serve` end to end (docs/daemon.md, §6, §7, §9): the DAGs folder and its watch, import
errors, the schedule clock (catchup, pause), triggers with outputs between tasks, the token
file, global parallelism, and the offline `dagd next`.
"""
import datetime
import json
import os
import socket
import stat
import time

import pytest

from conftest import free_port
from serve_helpers import (ApiError, Server, clean_env, dag_text, read_port_file, running_task_containers,
                           simple_task, wait_for)


def rfc(dt):
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))


def minute_start(margin=12):
    """The current minute's start (UTC), after waiting out the minute's last `margin` seconds
    so that no interval boundary passes while the test looks."""
    now = datetime.datetime.now(datetime.timezone.utc)
    if now.second >= 60 - margin:
        time.sleep(60 - now.second - now.microsecond / 1e6 + 0.2)
        now = datetime.datetime.now(datetime.timezone.utc)
    return now.replace(second=0, microsecond=0)


def test_folder_import_errors_token_and_auth(dg):
    dags = dg.tmp / "dags"
    good = dg.write(dag_text("@DAG@", simple_task("a", "echo a")), name="dags/good.yml", dedent=False)
    bad = dg.write("dag: @DAG@_bad\ntasks:\n  x:\n    image: @IMAGE@\n    comand: [true]\n",
                   name="dags/broken.yml", dedent=False)
    dg.write("not: [a dag", name="dags/notes.txt", dedent=False)  # not *.yml: ignored
    srv = Server(dg, dags).start()

    mode = stat.S_IMODE(os.stat(dg.state / "token").st_mode)
    assert mode == 0o600, oct(mode)
    assert len(srv.token) >= 16

    status, body = srv.request("GET", "/api/v1/dags", auth=False, raw=True)
    assert status == 401, body
    assert "error" in json.loads(body)
    h = srv.health()
    assert h["status"] == "ok" and h["dags"] == 1 and h["import_errors"] >= 1, h

    assert srv.dag_ids() == [dg.dag_id]
    d = srv.dag(dg.dag_id)
    assert d["file"] == str(good) and d["task_ids"] == ["a"] and d["is_paused"] is False, d
    errs = srv.get("/import-errors")
    assert errs["total_entries"] == len(errs["import_errors"]) >= 1
    mine = [e for e in errs["import_errors"] if e["filename"] == str(bad)]
    assert mine, errs
    unknown = [e for e in mine if "comand" in e["message"]]
    assert unknown, mine
    e = unknown[0]
    assert (e["line"], e["col"]) == (5, 5), e
    assert "command" in e["message"], "the nearest valid key is suggested: %r" % e
    assert e["stack_trace"].startswith("%s:5:5: error: " % bad), e
    assert all(x["filename"] == str(bad) for x in errs["import_errors"]), errs
    with pytest.raises(ApiError) as ei:
        srv.dag(dg.dag_id + "_bad")
    assert ei.value.status == 404


def test_bad_option_exits_2_and_a_failed_start_says_only_why(dg):
    """A bad option (an unknown one, a --log or a listen address that does not parse) is a
    usage error, exit 2, before anything starts; a start that fails (an address in use) is
    exit 1 with the reason, without the re-adoption message of a normal stop."""
    dags = dg.tmp / "dags"
    dags.mkdir()
    env = clean_env()
    for bad in (["--listen", "nonsense"], ["--listen", "127.0.0.1:99999"], ["--bogus"], ["--log", "loud"]):
        res = dg.exec("serve", "--dags", dags, "--state", dg.state, *bad, env=env, timeout=20)
        assert res.rc == 2, res
        assert "re-adopted" not in res.err, res
    assert not (dg.state / "token").exists(), "nothing starts on a bad option"
    res = dg.exec("serve", "--dags", dags, "--state", dg.state, env=clean_env(DAGD_LISTEN="nowhere"), timeout=20)
    assert res.rc == 2 and "nowhere" in res.err, res

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = dg.exec("serve", "--dags", dags, "--state", dg.state, "--listen", "127.0.0.1:%d" % port, env=env,
                      timeout=20)
    assert res.rc == 1, res
    assert "cannot start" in res.err and "in use" in res.err, res
    assert "re-adopted" not in res.err, res


def test_port_file_is_written_once_the_api_listens_before_recovery(dg):
    """`--listen 127.0.0.1:0`: the bound port goes to <state>/api.port as digits and a
    newline, as soon as the API listens, before recovery (which waits for an engine that
    is not there yet) has finished; a stale file from an earlier daemon is replaced."""
    dags = dg.tmp / "dags"
    dags.mkdir()
    dg.state.mkdir()
    port_file = dg.state / "api.port"
    nobody = free_port()
    port_file.write_text("%d\n" % nobody)  # a stale file from an earlier daemon
    p = dg.popen("serve", "--dags", dags, "--state", dg.state, "--listen", "127.0.0.1:0",
                 env=clean_env(DOCKER_HOST="tcp://127.0.0.1:%d" % free_port()))

    def written():
        assert p.poll() is None, "dagd serve exited %s: %s" % (p.returncode, p.stderr.read1().decode())
        port = read_port_file(port_file)
        return port if port != nobody else None
    port = wait_for("dagd serve to replace the stale %s" % port_file, written, 20)
    assert port_file.read_text() == "%d\n" % port
    srv = Server(dg, dags)
    srv.port = port
    h = srv.health()
    assert h["status"] == "ok" and h["ready"] is False, "recovery cannot have finished: %r" % h
    left = sorted(f.name for f in dg.state.iterdir() if "api.port" in f.name and f.name != "api.port")
    assert not left, "a temporary file was left beside the port file: %s" % left


def test_edit_is_picked_up_without_disturbing_a_run_in_flight(dg):
    dags = dg.tmp / "dags"
    path = dg.write(dag_text("@DAG@", simple_task("slow", "echo begin; sleep 4; echo done")),
                    name="dags/d.yml", dedent=False)
    srv = Server(dg, dags).start()
    srv.wait_dag(dg.dag_id)
    first = srv.trigger(dg.dag_id)["dag_run_id"]
    wait_for("slow to run", lambda: running_task_containers(dg.dag_id, "slow"), 20)

    t0 = time.monotonic()
    path.write_text(dag_text(dg.dag_id, simple_task("slow", "echo begin; sleep 4; echo done"),
                             simple_task("extra", "echo extra", "    depends_on: [slow]\n")))
    wait_for("the edit to be picked up", lambda: srv.dag(dg.dag_id)["task_ids"] == ["slow", "extra"], 5)
    assert time.monotonic() - t0 < 5
    assert srv.run(dg.dag_id, first)["state"] == "running"

    r = srv.wait_run(dg.dag_id, first, timeout=30)
    tis = srv.tis(dg.dag_id, first)
    assert r["state"] == "success", (r, tis)
    assert set(tis) == {"slow"}, "the run in flight keeps the task set it started with: %r" % tis
    assert dg.log_lines("slow", run_id=first) == ["begin", "done"]

    second = srv.trigger(dg.dag_id)["dag_run_id"]
    r = srv.wait_run(dg.dag_id, second, timeout=30)
    tis = srv.tis(dg.dag_id, second)
    assert r["state"] == "success" and set(tis) == {"slow", "extra"}, (r, tis)
    assert tis["extra"]["output"] == "extra"


def test_catchup_false_creates_only_the_newest_interval(dg):
    dags = dg.tmp / "dags"
    m = minute_start()
    start = m - datetime.timedelta(minutes=5)
    dg.write(dag_text("@DAG@", simple_task("a", "echo {{ ds }} {{ data_interval_start }}"),
                      head='schedule: "every 1m"\nstart_date: %s\ncatchup: false\n' % rfc(start)),
             name="dags/d.yml", dedent=False)
    srv = Server(dg, dags).start()
    runs = wait_for("a scheduled run", lambda: srv.runs(dg.dag_id), 5)
    time.sleep(1.5)
    runs = srv.runs(dg.dag_id)
    assert len(runs) == 1, runs
    r = runs[0]
    logical = m - datetime.timedelta(minutes=1)
    assert r["run_type"] == "scheduled"
    assert parse(r["logical_date"]) == logical, r
    assert parse(r["data_interval_start"]) == logical and parse(r["data_interval_end"]) == m, r
    assert r["dag_run_id"].startswith("scheduled__")
    assert parse(r["dag_run_id"][len("scheduled__"):]) == logical, r
    d = srv.dag(dg.dag_id)
    assert parse(d["next_run_logical_date"]) == m, d
    done = srv.wait_run(dg.dag_id, r["dag_run_id"], timeout=30)
    assert done["state"] == "success"
    out = srv.tis(dg.dag_id, r["dag_run_id"])["a"]["output"]
    assert out.split()[0] == logical.strftime("%Y-%m-%d"), out
    assert parse(out.split()[1]) == logical, out


def test_catchup_true_creates_one_run_per_missed_interval(dg):
    dags = dg.tmp / "dags"
    m = minute_start()
    start = m - datetime.timedelta(minutes=5)
    dg.write(dag_text("@DAG@", simple_task("a", "echo {{ ds_nodash }}"),
                      head='schedule: "every 1m"\nstart_date: %s\ncatchup: true\n' % rfc(start)),
             name="dags/d.yml", dedent=False)
    srv = Server(dg, dags).start()
    wait_for("5 scheduled runs", lambda: len(srv.runs(dg.dag_id)) >= 5, 5)
    time.sleep(1)
    runs = sorted(srv.runs(dg.dag_id), key=lambda r: r["logical_date"])
    assert len(runs) == 5, [r["dag_run_id"] for r in runs]
    for k, r in enumerate(runs):
        assert r["run_type"] == "scheduled"
        assert parse(r["data_interval_start"]) == start + datetime.timedelta(minutes=k), r
        assert parse(r["data_interval_end"]) == start + datetime.timedelta(minutes=k + 1), r
        assert parse(r["logical_date"]) == parse(r["data_interval_start"])
        assert parse(r["dag_run_id"][len("scheduled__"):]) == parse(r["logical_date"]), r
    for a, b in zip(runs, runs[1:]):
        assert a["data_interval_end"] == b["data_interval_start"], "intervals are contiguous"
    assert parse(srv.dag(dg.dag_id)["next_run_logical_date"]) == m
    for r in runs:
        assert srv.wait_run(dg.dag_id, r["dag_run_id"], timeout=40)["state"] == "success"


def test_max_active_runs_bounds_catchup(dg):
    dags = dg.tmp / "dags"
    m = minute_start(margin=20)
    start = m - datetime.timedelta(minutes=4)
    dg.write(dag_text("@DAG@", simple_task("a", "sleep 2"),
                      head='schedule: "every 1m"\nstart_date: %s\ncatchup: true\nmax_active_runs: 1\n'
                           % rfc(start)),
             name="dags/d.yml", dedent=False)
    srv = Server(dg, dags).start()
    seen_max = 0
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        runs = srv.runs(dg.dag_id)
        active = [r for r in runs if r["state"] in ("queued", "running")]
        seen_max = max(seen_max, len(active))
        if len(runs) == 4 and not active:
            break
        time.sleep(0.2)
    runs = sorted(srv.runs(dg.dag_id), key=lambda r: r["logical_date"])
    assert [parse(r["logical_date"]) for r in runs] == [start + datetime.timedelta(minutes=k) for k in range(4)]
    assert all(r["state"] == "success" for r in runs), runs
    assert seen_max == 1, "max_active_runs: 1 allowed %d active runs" % seen_max
    for a, b in zip(runs, runs[1:]):
        assert parse(a["end_date"]) <= parse(b["start_date"]), (a, b)


def test_pause_stops_scheduling(dg):
    dags = dg.tmp / "dags"
    m = minute_start(margin=25)
    start = m - datetime.timedelta(minutes=5)
    dg.write(dag_text("@DAG@", simple_task("a", "sleep 1"),
                      head='schedule: "every 1m"\nstart_date: %s\ncatchup: true\nmax_active_runs: 1\n'
                           'paused: true\n' % rfc(start)),
             name="dags/d.yml", dedent=False)
    srv = Server(dg, dags).start()
    assert srv.dag(dg.dag_id)["is_paused"] is True
    assert parse(srv.dag(dg.dag_id)["next_run_logical_date"]) == start
    time.sleep(2)
    assert srv.runs(dg.dag_id) == [], "a paused DAG got scheduled runs"

    assert srv.patch("/dags/" + dg.dag_id, {"is_paused": False})["is_paused"] is False
    first = wait_for("a run after unpausing", lambda: srv.runs(dg.dag_id), 5)
    assert srv.patch("/dags/" + dg.dag_id, {"is_paused": True})["is_paused"] is True
    assert len(first) == 1 and parse(first[0]["logical_date"]) == start, first
    assert srv.wait_run(dg.dag_id, first[0]["dag_run_id"], timeout=30)["state"] == "success"
    time.sleep(7)  # more than the sweep that frees the max_active_runs slot
    assert len(srv.runs(dg.dag_id)) == 1, "a paused DAG got more scheduled runs"
    assert srv.dag(dg.dag_id)["is_paused"] is True

    # the pause is kept in the state DB across restarts (the file's `paused:` is only the first state)
    dg.write(dag_text("@DAG@", simple_task("a", "sleep 1"),
                      head='schedule: "every 1m"\nstart_date: %s\ncatchup: true\nmax_active_runs: 1\n'
                           % rfc(start)),
             name="dags/d.yml", dedent=False)
    srv.term()
    srv.start()
    assert srv.dag(dg.dag_id)["is_paused"] is True
    time.sleep(1.5)
    assert len(srv.runs(dg.dag_id)) == 1


def test_paused_dag_without_catchup_shows_its_newest_interval(dg):
    """NEXT_RUN of a paused `catchup: false` DAG is what unpausing would create: the newest
    due interval, not start_date; once that date has a run, the one after it."""
    dags = dg.tmp / "dags"
    m = minute_start(margin=20)
    start = m - datetime.timedelta(minutes=5)
    newest = m - datetime.timedelta(minutes=1)
    dg.write(dag_text("@DAG@", simple_task("a", "echo {{ ds }}"),
                      head='schedule: "every 1m"\nstart_date: %s\ncatchup: false\npaused: true\n' % rfc(start)),
             name="dags/d.yml", dedent=False)
    srv = Server(dg, dags).start()
    d = srv.dag(dg.dag_id)
    assert d["is_paused"] is True
    assert parse(d["next_run_logical_date"]) == newest and parse(d["next_run_after"]) == m, d
    res = dg.exec("dags", "--server", "http://127.0.0.1:%d" % srv.port, "--state", dg.state, env=clean_env())
    assert res.rc == 0, res
    row = [l.split() for l in res.out.splitlines()[1:] if l.split()[0] == dg.dag_id]
    assert row == [[dg.dag_id, "yes", "every", "1m", newest.strftime("%Y-%m-%dT%H:%M:%S.000Z")]], res.out
    run = srv.trigger(dg.dag_id, logical_date=rfc(newest))
    assert parse(srv.dag(dg.dag_id)["next_run_logical_date"]) == m
    assert srv.wait_run(dg.dag_id, run["dag_run_id"], timeout=30)["state"] == "success"


def test_schedule_clock_adds_no_run_for_a_date_that_has_one(dg):
    """A logical date that got a run by hand gets no scheduled run besides it."""
    dags = dg.tmp / "dags"
    m = minute_start(margin=20)
    start = m - datetime.timedelta(minutes=5)
    newest = m - datetime.timedelta(minutes=1)
    dg.write(dag_text("@DAG@", simple_task("a", "echo {{ ds }}"),
                      head='schedule: "every 1m"\nstart_date: %s\ncatchup: false\npaused: true\n' % rfc(start)),
             name="dags/d.yml", dedent=False)
    srv = Server(dg, dags).start()
    run = srv.trigger(dg.dag_id, logical_date=rfc(newest))
    assert srv.patch("/dags/" + dg.dag_id, {"is_paused": False})["is_paused"] is False
    time.sleep(2)
    runs = srv.runs(dg.dag_id)
    assert [r["dag_run_id"] for r in runs] == [run["dag_run_id"]], "a second run for one date: %r" % runs
    assert parse(srv.dag(dg.dag_id)["next_run_logical_date"]) == m
    assert srv.wait_run(dg.dag_id, run["dag_run_id"], timeout=30)["state"] == "success"


def test_deleting_a_file_removes_the_dag_and_its_scheduling(dg):
    dags = dg.tmp / "dags"
    m = minute_start(margin=25)
    start = m - datetime.timedelta(minutes=5)
    head = 'schedule: "every 1m"\nstart_date: %s\ncatchup: true\nmax_active_runs: 1\n' % rfc(start)
    gone_id = dg.new_dag_id("gone")
    gone = dg.write(dag_text(gone_id, simple_task("a", "sleep 1"), head=head), name="dags/gone.yml",
                    dedent=False)
    dg.write(dag_text("@DAG@", simple_task("a", "sleep 1"), head=head), name="dags/kept.yml", dedent=False)
    srv = Server(dg, dags).start()
    wait_for("gone's first run", lambda: dg.runs(gone_id), 5)
    gone.unlink()
    wait_for("the DAG to leave /dags", lambda: gone_id not in srv.dag_ids(), 3)
    assert dg.dag_id in srv.dag_ids()
    with pytest.raises(ApiError) as ei:
        srv.dag(gone_id)
    assert ei.value.status == 404
    n_gone = len(dg.runs(gone_id))
    # the kept DAG goes on creating runs (one at a time) while the deleted one creates none
    wait_for("the kept DAG's second run", lambda: len(dg.runs()) >= 2, 20)
    time.sleep(1)
    assert len(dg.runs(gone_id)) == n_gone == 1, dg.runs(gone_id)
    wait_for("the deleted DAG's run in flight to finish",
             lambda: dg.runs(gone_id)[0]["state"] in ("success", "failed"), 20)
    srv.patch("/dags/" + dg.dag_id, {"is_paused": True})
    wait_for("the kept DAG's runs to finish",
             lambda: all(r["state"] in ("success", "failed") for r in dg.runs()), 20)
    wait_for("no containers", lambda: dg.containers() == [], 10)


def test_trigger_passes_conf_and_outputs(dg):
    dags = dg.tmp / "dags"
    dg.write(dag_text("@DAG@",
                      simple_task("produce", "echo noise; echo value-{{ dag_run.conf.x }}-{{ params.p }}"),
                      simple_task("consume", "echo got {{ ti.xcom_pull('produce') }}",
                                  "    depends_on: [produce]\n"),
                      head="params: {p: dflt}\n"),
             name="dags/d.yml", dedent=False)
    srv = Server(dg, dags).start()
    srv.wait_dag(dg.dag_id)
    r = srv.trigger(dg.dag_id, conf={"x": 42})
    assert r["run_type"] == "manual" and r["conf"] == {"x": 42}, r
    assert r["dag_run_id"].startswith("manual__")
    done = srv.wait_run(dg.dag_id, r["dag_run_id"], timeout=30)
    tis = srv.tis(dg.dag_id, r["dag_run_id"])
    assert done["state"] == "success", (done, tis)
    assert tis["produce"]["output"] == "value-42-dflt"
    assert tis["consume"]["output"] == "got value-42-dflt"
    assert tis["consume"]["exit_code"] == 0 and tis["consume"]["try_number"] == 1
    assert parse(done["start_date"]) <= parse(done["end_date"])
    status, text = srv.request("GET", "/api/v1/dags/%s/runs/%s/tasks/consume/logs/1"
                               % (dg.dag_id, r["dag_run_id"]), raw=True)
    assert status == 200 and text.strip() == "got value-42-dflt", text
    # an explicit logical date
    r2 = srv.trigger(dg.dag_id, conf={"x": 1}, logical_date="2025-03-04T05:06:07Z")
    assert parse(r2["logical_date"]) == parse("2025-03-04T05:06:07Z"), r2
    assert srv.wait_run(dg.dag_id, r2["dag_run_id"], timeout=30)["state"] == "success"
    with pytest.raises(ApiError) as ei:
        srv.trigger(dg.dag_id + "_nope")
    assert ei.value.status == 404


def test_parallelism_one_never_overlaps_containers(dg):
    dags = dg.tmp / "dags"
    marks = dg.tmp / "marks"
    marks.mkdir()
    os.chmod(marks, 0o777)
    dg.write(dag_text("@DAG@", simple_task(
        "a", "echo start-{{ dag_run.conf.n }} >> /marks/seq; sleep 2; echo end-{{ dag_run.conf.n }} >> /marks/seq",
        '    volumes: ["%s:/marks"]\n' % marks)), name="dags/d.yml", dedent=False)
    srv = Server(dg, dags, env={"DAGD_PARALLELISM": "1"}).start()
    srv.wait_dag(dg.dag_id)
    runs = [srv.trigger(dg.dag_id, conf={"n": n})["dag_run_id"] for n in (1, 2)]
    most = 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        most = max(most, len(running_task_containers(dg.dag_id)))
        if all(srv.run(dg.dag_id, r)["state"] in ("success", "failed") for r in runs):
            break
        time.sleep(0.1)
    for r in runs:
        assert srv.run(dg.dag_id, r)["state"] == "success"
    seq = (marks / "seq").read_text().split()
    assert sorted(seq) == ["end-1", "end-2", "start-1", "start-2"], seq
    assert seq[0].startswith("start") and seq[1] == seq[0].replace("start", "end"), \
        "two containers overlapped with parallelism 1: %r" % seq
    assert most == 1, most


def test_next_prints_the_next_runs_offline(dg):
    path = dg.write(dag_text("@DAG@", simple_task("a", "true"),
                             head='schedule: "0 2 * * *"\nstart_date: 2024-01-01\n'),
                    name="n.yml", dedent=False)
    res = dg.exec("next", path, "--from", "2025-01-01T00:00:00Z", "-n", "3")
    assert res.rc == 0, res
    assert res.out.splitlines() == [
        "2024-12-31T02:00:00Z 2025-01-01T02:00:00Z",
        "2025-01-01T02:00:00Z 2025-01-02T02:00:00Z",
        "2025-01-02T02:00:00Z 2025-01-03T02:00:00Z",
    ], res
    res = dg.exec("next", path, "--from", "2025-01-01T03:00:00Z", "-n", "2", "--json")
    assert res.rc == 0, res
    doc = json.loads(res.out)
    assert [x["logical_date"] for x in doc["next"]] == ["2025-01-01T02:00:00Z", "2025-01-02T02:00:00Z"], doc
    assert not (dg.tmp / "state").exists(), "next is offline and keeps no state"
    path = dg.write(dag_text("@DAG@", simple_task("a", "true"),
                             head='schedule: "every 1m"\nstart_date: 2025-01-01T00:00:00Z\n'),
                    name="n.yml", dedent=False)
    res = dg.exec("next", path, "--from", "2025-01-01T00:00:30Z", "-n", "4")
    assert res.rc == 0, res
    assert len(res.out.splitlines()) == 4, res
    assert res.out.splitlines()[0] == "2025-01-01T00:00:00Z 2025-01-01T00:01:00Z", res
    res = dg.exec("next", dg.tmp / "missing.yml")
    assert res.rc != 0, res


def test_the_folder_watch_survives_the_folder_made_anew(dg):
    """The DAGs folder removed and made again (rm -r, a checkout) is watched again by
    itself; SIGHUP also watches it anew. Nothing else has to be restarted."""
    import shutil
    import signal
    dags = dg.tmp / "dags"
    dg.write(dag_text("@DAG@", simple_task("a", "true")), name="dags/one.yml", dedent=False)
    srv = Server(dg, dags).start()
    srv.wait_dag(dg.dag_id)
    shutil.rmtree(dags)
    wait_for("the DAG to leave with its folder", lambda: dg.dag_id not in srv.dag_ids(), 5)
    dags.mkdir()
    two = dg.new_dag_id("two")
    dg.write(dag_text(two, simple_task("a", "true")), name="dags/two.yml", dedent=False)
    wait_for("the folder made anew to be watched and loaded", lambda: two in srv.dag_ids(), 15)
    # a file written after that comes through the new watch, not a rescan
    three = dg.new_dag_id("three")
    dg.write(dag_text(three, simple_task("a", "true")), name="dags/three.yml", dedent=False)
    wait_for("a file in the new folder", lambda: three in srv.dag_ids(), 3)
    # SIGHUP watches anew too: replace the folder and signal at once
    shutil.rmtree(dags)
    dags.mkdir()
    srv.proc.send_signal(signal.SIGHUP)
    time.sleep(1)
    four = dg.new_dag_id("four")
    dg.write(dag_text(four, simple_task("a", "true")), name="dags/four.yml", dedent=False)
    wait_for("a file after SIGHUP", lambda: four in srv.dag_ids(), 3)
    assert srv.term() == 0, srv.stderr()
