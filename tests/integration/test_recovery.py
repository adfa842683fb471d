"""Crash recovery of `dagd serve` (docs/daemon.md, §10): kill -9 and SIGTERM while a task's
container runs, containers that exit or vanish while dagd is down, kill -9 while a
container's start is in flight and at random moments, and a restart of the Docker daemon
under a running dagd. A command never runs twice, no log line is doubled, and a try whose
container never started is not failed: only a container that started and then vanished
is a lost try.
"""
import collections
import os
import random
import shutil
import signal
import subprocess
import threading
import time

import pytest

from conftest import IMAGE, TIME_SCALE, containers, docker, inspect
from serve_helpers import (Server, clean_env, dag_text, running_task_containers, simple_task,
                           wait_for)


def marked_dag(dg, command, retries=0, downstream=True, extra=""):
    """A DAG whose task `work` runs command with the host dir <tmp>/marks on /marks; extra:
    more keys of `work`, indented by four spaces."""
    marks = dg.tmp / "marks"
    marks.mkdir(exist_ok=True)
    os.chmod(marks, 0o777)
    dags = dg.tmp / "dags"
    body = ("dag: @DAG@\n"
            "tasks:\n"
            "  work:\n"
            "    image: @IMAGE@\n"
            "    command: [\"sh\", \"-c\", %s]\n"
            "    volumes: [\"%s:/marks\"]\n"
            "    retries: %d\n"
            "    retry_delay: 1s\n%s" % (_yaml_str(command), marks, retries, extra))
    if downstream:
        body += ("  after:\n"
                 "    image: @IMAGE@\n"
                 "    command: [\"sh\", \"-c\", \"echo after-ran\"]\n"
                 "    depends_on: [work]\n")
    dg.write(body, name="dags/dag.yml", dedent=False)
    return dags, marks


def _yaml_str(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def start_work(dg, srv, marks, lines=1):
    """Trigger a run and wait until work's container runs and has written its mark."""
    srv.wait_dag(dg.dag_id)
    run = srv.trigger(dg.dag_id)["dag_run_id"]
    wait_for("work's container to run", lambda: running_task_containers(dg.dag_id, "work"), 20)
    wait_for("the command to start", lambda: (marks / "ran").exists()
             and len((marks / "ran").read_text().splitlines()) >= lines, 20)
    return run


def _left(dg):
    out = []
    for d in dg.dag_ids:
        out += docker("ps", "-a", "--filter", "label=io.dagd.dag=" + d, "--format",
                      "{{.ID}} {{.State}} task={{.Label \"io.dagd.task\"}} try={{.Label \"io.dagd.try\"}}"
                      ).stdout.split("\n")
    return [x for x in out if x.strip()]


def no_containers_left(dg, stale_created_ok=True):
    """Every container of the run is removed. A downstream container that dagd created ahead
    of time and never started is leaked across a restart (see
    test_precreated_downstream_container_is_not_leaked); unless stale_created_ok is False
    such leftovers are removed here so that the other tests keep checking the rest."""
    def clean():
        left = _left(dg)
        if stale_created_ok:
            left = [x for x in left if x.split()[1] != "created"]
        return not left
    try:
        wait_for("every container of the run to be removed", clean, 20)
    except AssertionError as e:
        raise AssertionError("%s; left: %s" % (e, "; ".join(_left(dg))))
    dg.remove_containers()


def assert_log_once(dg, task, run, *lines, try_number=1):
    text = dg.log(task, try_number, run_id=run)
    got = text.splitlines()
    for want in lines:
        assert got.count(want) == 1, "%r appears %d times in the log:\n%s" % (want, got.count(want), text)
    return got


def test_kill9_while_task_runs_readopts_and_runs_once(dg):
    dags, marks = marked_dag(dg, "echo start; echo X >> /marks/ran; sleep 6; echo end")
    srv = Server(dg, dags).start()
    run = start_work(dg, srv, marks)
    cid = running_task_containers(dg.dag_id, "work")[0]
    srv.kill9()
    time.sleep(1)
    assert running_task_containers(dg.dag_id, "work") == [cid], "the container died with dagd"

    srv.start()
    r = srv.wait_run(dg.dag_id, run, timeout=40)
    assert r["state"] == "success", (r, srv.tis(dg.dag_id, run), srv.all_stderr())
    tis = srv.tis(dg.dag_id, run)
    assert tis["work"]["state"] == "success" and tis["work"]["try_number"] == 1, tis["work"]
    assert tis["work"]["exit_code"] == 0
    assert tis["work"]["output"] == "end"
    assert tis["work"]["container_id"] == cid, "the re-adopted container is the one that ran"
    assert tis["after"]["state"] == "success", tis["after"]
    assert dg.log("after", run_id=run).splitlines() == ["after-ran"]
    assert (marks / "ran").read_text().splitlines() == ["X"], "the command ran more than once"
    assert assert_log_once(dg, "work", run, "start", "end") == ["start", "end"]
    # the log written again from the first line starts again with its header, which image
    image_id = docker("image", "inspect", "--format", "{{.Id}}", IMAGE).stdout.strip()
    assert tis["work"]["image_id"] == image_id, tis["work"]
    head = dg.log_header("work", run_id=run)
    assert len(head) == 1 and head[0].startswith("[dagd] image ") and image_id in head[0], head
    adopted = [l for l in srv.stderr().splitlines() if "re-adopting container" in l]
    assert len(adopted) == 1 and "task=work try=1" in adopted[0], srv.stderr()
    assert len(dg.tries("work", run_id=run)) == 1
    no_containers_left(dg)


@pytest.mark.parametrize("case", ["exit0", "exit3", "exit3_retry"])
def test_container_exits_while_dagd_is_down(dg, case):
    retries = 1 if case == "exit3_retry" else 0
    code = 0 if case == "exit0" else 3
    cmd = ("echo start; echo X >> /marks/ran; test {{ try_number }} -ge 2 && { echo second; exit 0; }; "
           "sleep 2; echo end; exit %d" % code)
    dags, marks = marked_dag(dg, cmd, retries=retries)
    srv = Server(dg, dags).start()
    run = start_work(dg, srv, marks)
    cid = running_task_containers(dg.dag_id, "work")[0]
    srv.kill9()
    # the container finishes while dagd is down; the engine keeps it (dagd removes it later)
    state = wait_for("the container to exit", lambda: (lambda s: s if not s["Running"] else None)(
        inspect(cid)["State"]), 10)
    assert state["ExitCode"] == code
    time.sleep(max(0, 5 - 2))

    srv.start()
    r = srv.wait_run(dg.dag_id, run, timeout=40)
    tis = srv.tis(dg.dag_id, run)
    tries = dg.tries("work", run_id=run)
    assert tries[0]["exit_code"] == code, tries
    if case == "exit0":
        assert r["state"] == "success", (r, tis)
        assert tis["work"]["state"] == "success" and tis["work"]["exit_code"] == 0, tis["work"]
        assert tis["work"]["output"] == "end"
        assert tis["after"]["state"] == "success"
        assert (marks / "ran").read_text().splitlines() == ["X"]
    elif case == "exit3":
        assert r["state"] == "failed", (r, tis)
        assert tis["work"]["state"] == "failed", tis["work"]
        assert tis["work"]["exit_code"] == 3 and tis["work"]["try_number"] == 1, tis["work"]
        assert tis["after"]["state"] == "upstream_failed", tis["after"]
        assert (marks / "ran").read_text().splitlines() == ["X"]
    else:
        assert r["state"] == "success", (r, tis)
        assert tis["work"]["try_number"] == 2 and tis["work"]["exit_code"] == 0, tis["work"]
        assert [t["try_number"] for t in tries] == [1, 2]
        assert tries[0]["state"] in ("failed", "up_for_retry"), tries[0]
        assert (marks / "ran").read_text().splitlines() == ["X", "X"], "one line per try"
        assert dg.log("work", 2, run_id=run).splitlines() == ["start", "second"]
    assert assert_log_once(dg, "work", run, "start", "end") == ["start", "end"]
    no_containers_left(dg)


def test_container_vanishes_while_dagd_is_down_fails_into_retry(dg):
    cmd = "echo try {{ try_number }}; echo X >> /marks/ran; test {{ try_number }} -ge 2 || sleep 30"
    dags, marks = marked_dag(dg, cmd, retries=1)
    srv = Server(dg, dags).start()
    run = start_work(dg, srv, marks)
    srv.kill9()
    docker("rm", "-f", *running_task_containers(dg.dag_id, "work"))
    assert running_task_containers(dg.dag_id, "work") == []

    srv.start()
    r = srv.wait_run(dg.dag_id, run, timeout=40)
    tis = srv.tis(dg.dag_id, run)
    assert r["state"] == "success", (r, tis, srv.all_stderr())
    assert tis["work"]["try_number"] == 2 and tis["work"]["state"] == "success", tis["work"]
    tries = dg.tries("work", run_id=run)
    assert [t["try_number"] for t in tries] == [1, 2], tries
    assert tries[0]["state"] in ("failed", "up_for_retry"), tries[0]
    assert "container" in (tries[0]["message"] or ""), tries[0]
    assert tries[1]["state"] == "success" and tries[1]["exit_code"] == 0, tries[1]
    assert (marks / "ran").read_text().splitlines() == ["X", "X"]
    assert dg.log("work", 2, run_id=run).splitlines() == ["try 2"]
    assert tis["after"]["state"] == "success"
    no_containers_left(dg)


def test_sigterm_leaves_container_running_and_readopts(dg):
    dags, marks = marked_dag(dg, "echo start; echo X >> /marks/ran; sleep 5; echo end")
    srv = Server(dg, dags).start()
    run = start_work(dg, srv, marks)
    cid = running_task_containers(dg.dag_id, "work")[0]
    rc = srv.term()
    assert rc == 0, srv.stderr()
    assert running_task_containers(dg.dag_id, "work") == [cid], "SIGTERM stopped the container"
    time.sleep(0.5)

    srv.start()
    r = srv.wait_run(dg.dag_id, run, timeout=40)
    tis = srv.tis(dg.dag_id, run)
    assert r["state"] == "success", (r, tis)
    assert tis["work"]["try_number"] == 1 and tis["work"]["container_id"] == cid, tis["work"]
    assert tis["after"]["state"] == "success"
    assert (marks / "ran").read_text().splitlines() == ["X"], "the command ran more than once"
    assert assert_log_once(dg, "work", run, "start", "end") == ["start", "end"]
    no_containers_left(dg)


def test_precreated_downstream_container_is_not_leaked(dg):
    dags, marks = marked_dag(dg, "echo X >> /marks/ran; sleep 3; echo end")
    srv = Server(dg, dags).start()
    run = start_work(dg, srv, marks)
    srv.kill9()
    srv.start()
    r = srv.wait_run(dg.dag_id, run, timeout=40)
    assert r["state"] == "success", r
    no_containers_left(dg, stale_created_ok=False)


# --- kill -9 between a try's queueing and its container's start

def _task_containers(dg, task):
    return containers(dg.dag_id, extra=["label=io.dagd.task=" + task])


@pytest.mark.parametrize("held", ["dropped", "forwarded"])
def test_kill9_while_the_start_is_in_flight(dg, engine_proxy, held):
    """dagd talks to the engine through a proxy that holds the `start` of work's container
    (created, not started), and is killed while it waits for it. dropped: the engine never
    gets that start. forwarded: it gets it just before the kill, so the container starts
    while dagd dies and dagd never hears of it. Either way work has not failed: dagd,
    restarted straight on the engine, runs the try (its first and only one), the command
    runs once, and one container of work is left (remove: never), the one that ran."""
    dags, marks = marked_dag(dg, "echo X >> /marks/ran; sleep 1; echo end", extra="    remove: never\n")
    engine_proxy.hold_start(dg.dag_id, "work")
    srv = Server(dg, dags, env={"DOCKER_HOST": engine_proxy.docker_host}).start()
    srv.wait_dag(dg.dag_id)
    run = srv.trigger(dg.dag_id)["dag_run_id"]
    held_reqs = engine_proxy.held.wait(1, timeout=30)
    assert held_reqs, "dagd never started work's container; requests: %r" % engine_proxy.seen.get()[-20:]
    start = held_reqs[0]
    cid = inspect(start.path.split("/containers/")[1].split("/")[0])["Id"]
    assert inspect(cid)["State"]["Status"] == "created"
    if held == "forwarded":
        answer = {}
        sender = threading.Thread(target=lambda: answer.update(status=start.send_detached()))
        sender.start()
        srv.kill9()
        sender.join(60)
        assert answer.get("status") == 204, "the engine did not start the container: %r" % answer
        assert inspect(cid)["State"]["Status"] in ("running", "exited")
    else:
        srv.kill9()
        start.drop()
        assert inspect(cid)["State"]["Status"] == "created"
        assert not (marks / "ran").exists()
    engine_proxy.close()

    srv.env = clean_env()  # straight to the engine
    srv.start()
    r = srv.wait_run(dg.dag_id, run, timeout=40)
    tis = srv.tis(dg.dag_id, run)
    tries = dg.tries("work", run_id=run)
    assert r["state"] == "success", "the run ended %s: work %s (%s); tries of work: %r\n--- dagd stderr\n%s" % (
        r["state"], tis["work"]["state"], tis["work"]["message"],
        [(t["try_number"], t["state"], t["message"]) for t in tries], srv.all_stderr()[-3000:])
    assert tis["work"]["state"] == "success" and tis["work"]["try_number"] == 1, tis["work"]
    assert [t["try_number"] for t in tries] == [1], tries
    assert tis["after"]["state"] == "success", tis["after"]
    assert (marks / "ran").read_text().splitlines() == ["X"], "the command did not run exactly once"
    made = _task_containers(dg, "work")
    assert made == [tis["work"]["container_id"]], \
        "work's containers %s; the try ran in %s" % (made, tis["work"]["container_id"])
    if held == "forwarded":
        assert made == [cid], "the started container was not adopted: %s, not %s" % (made, cid)
    state = inspect(made[0])["State"]
    assert state["Status"] == "exited" and state["ExitCode"] == 0, state
    docker("rm", "-f", *made)
    no_containers_left(dg, stale_created_ok=False)


# A ten-task DAG (two chains of three, two single tasks, a fan-in and one after it); each
# task's command appends "<run_id> <task_id>" to /out/ran.
CHAOS_TASKS = {"a1": [], "a2": ["a1"], "a3": ["a2"], "b1": [], "b2": ["b1"], "b3": ["b2"],
               "c1": [], "c2": [], "join": ["a3", "b3", "c1", "c2"], "final": ["join"]}


def test_kill9_at_random_moments_never_fails_or_repeats_a_try(dg):
    """`dagd serve` is killed (SIGKILL) at random moments while runs of a DAG with
    retries: 0 go on, and restarted on the same state dir each time: every run still
    succeeds, every task's command ran exactly once per run, every try is the first, and no
    container is left. The moments come from a seeded RNG (DAGD_TEST_SEED replays one)."""
    seed = int(os.environ.get("DAGD_TEST_SEED") or random.randrange(1 << 32))
    rng = random.Random(seed)
    out = dg.tmp / "out"
    out.mkdir()
    os.chmod(out, 0o777)
    vol = '    volumes: ["%s:/out"]\n' % out
    tasks = [simple_task(t, 'echo "{{ run_id }} {{ task_id }}" >> /out/ran; sleep 0.2',
                         vol + ("    depends_on: [%s]\n" % ", ".join(up) if up else ""))
             for t, up in CHAOS_TASKS.items()]
    dags = dg.tmp / "dags"
    dg.write(dag_text("@DAG@", *tasks, head="defaults: {retries: 0}\n"), name="dags/dag.yml", dedent=False)

    srv = Server(dg, dags)
    kills, runs = [], []
    n_kills = 24 if TIME_SCALE == 1 else 8  # fewer under valgrind, where each moment lasts longer
    n_runs = n_kills // 3
    for i in range(n_kills):
        srv.start(wait_ready=False)
        if i % 3 == 0 and len(runs) < n_runs:
            wait_for("health ready", lambda: srv.health().get("ready") is True, 20)
            srv.wait_dag(dg.dag_id)
            runs.append(srv.trigger(dg.dag_id)["dag_run_id"])
        up, down = rng.uniform(0.0, 1.5) * TIME_SCALE, rng.uniform(0.0, 0.5)
        time.sleep(up)
        srv.kill9()
        kills.append("%.2f+%.2f" % (up, down))
        time.sleep(down)
    srv.start()
    how = "seed %d (DAGD_TEST_SEED=%d replays it); kills after (up+down) seconds: %s" % (
        seed, seed, " ".join(kills))

    ends = {}
    for run in runs:
        try:
            ends[run] = srv.wait_run(dg.dag_id, run, timeout=90)
        except AssertionError as e:
            raise AssertionError("%s\n%s" % (e, how))
    lines = (out / "ran").read_text().splitlines() if (out / "ran").exists() else []
    ran = collections.Counter(tuple(l.split()) for l in lines)
    problems = []
    for run, r in ends.items():
        tis = srv.tis(dg.dag_id, run)
        if r["state"] != "success":
            problems.append("run %s ended %s (%d tasks upstream_failed)" % (
                run, r["state"], sum(ti["state"] == "upstream_failed" for ti in tis.values())))
        for t in CHAOS_TASKS:
            ti = tis[t]
            if ti["state"] == "upstream_failed":
                continue
            if ti["state"] != "success" or ti["try_number"] != 1 or ran[(run, t)] != 1:
                tries = [(x["try_number"], x["state"], x["message"]) for x in dg.tries(t, run_id=run)]
                problems.append("%s %s: %s, try %s, its command ran %d times; tries: %s" % (
                    run, t, ti["state"], ti["try_number"], ran[(run, t)], tries))
    assert not problems, "after %d kills:\n%s\n%s" % (len(kills), "\n".join(problems), how)
    try:
        no_containers_left(dg, stale_created_ok=False)
    except AssertionError as e:
        raise AssertionError("%s\n%s" % (e, how))


# --- the Docker daemon restarting under a running dagd

def _dockerd_pid():
    try:
        with open("/var/run/docker.pid") as f:
            pid = int(f.read().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def _restart_dockerd(logdir):
    """Stop the local dockerd by its pid and start it again with the same command line."""
    pid = _dockerd_pid()
    assert pid, "no dockerd pid in /var/run/docker.pid"
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        argv = [a.decode() for a in f.read().split(b"\0") if a]
    os.kill(pid, signal.SIGTERM)
    wait_for("dockerd to exit", lambda: not os.path.exists("/proc/%d" % pid), 60)
    log = open(os.path.join(logdir, "dockerd.log"), "ab")
    subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                     start_new_session=True)
    wait_for("dockerd to answer", lambda: docker("version", check=False, timeout=10).returncode == 0, 60,
             interval=0.5)


@pytest.mark.skipif(os.environ.get("DAGD_TEST_DOCKERD_RESTART") != "1",
                    reason="restarts the machine's dockerd (disturbing every other user of it); "
                           "set DAGD_TEST_DOCKERD_RESTART=1 where that is safe")
def test_docker_daemon_restart_under_running_dagd(dg):
    if not shutil.which("dockerd") or os.environ.get("DOCKER_HOST"):
        pytest.skip("needs the local dockerd")
    cmd = "echo try {{ try_number }}; echo X >> /marks/ran; test {{ try_number }} -ge 2 || sleep 20"
    dags, marks = marked_dag(dg, cmd, retries=1)
    srv = Server(dg, dags).start()
    run = start_work(dg, srv, marks)
    _restart_dockerd(str(dg.tmp))
    assert srv.alive(), srv.stderr()
    assert srv.health()["status"] == "ok"
    r = srv.wait_run(dg.dag_id, run, timeout=90)
    tis = srv.tis(dg.dag_id, run)
    assert srv.health()["status"] == "ok"
    assert r["state"] == "success", (r, tis, srv.stderr())
    assert tis["work"]["state"] == "success"
    tries = dg.tries("work", run_id=run)
    # the first container was stopped with the engine (live-restore off): it ended by its
    # exit code or failed into the retry; either way the second try finished the task
    assert [t["try_number"] for t in tries] == [1, 2], tries
    assert tis["after"]["state"] == "success"
    no_containers_left(dg)


def test_engine_out_of_reach_at_start(dg, socat_procs):
    """The engine does not answer when the server starts: the API answers, a run
    triggered meanwhile waits queued, the server keeps trying the engine, and once it
    answers the run runs once (settled by recovery, not restored a second time)."""
    from conftest import Socat, free_port
    port = free_port()
    (dg.tmp / "dags").mkdir()
    dag_id = dg.dag_id
    (dg.tmp / "dags" / "d.yml").write_text(dag_text(
        dag_id, simple_task("one", "echo one-ran"), simple_task("two", "echo two-ran", "    depends_on: [one]\n")))
    srv = Server(dg, dg.tmp / "dags", env={"DOCKER_HOST": "tcp://127.0.0.1:%d" % port,
                                           "DOCKER_TLS_VERIFY": "", "DOCKER_CERT_PATH": ""})
    srv.start(wait_ready=False)
    srv.wait_dag(dag_id)
    assert srv.health()["ready"] is False
    run_id = srv.trigger(dag_id)["dag_run_id"]
    time.sleep(1.5 * TIME_SCALE)
    assert srv.run(dag_id, run_id)["state"] == "queued"
    socat_procs.append(Socat(port).start())
    run = srv.wait_run(dag_id, run_id, timeout=60)
    assert run["state"] == "success", (run, srv.all_stderr()[-3000:])
    runs = srv.runs(dag_id)
    assert [r["dag_run_id"] for r in runs] == [run_id], runs
    tis = srv.tis(dag_id, run_id)
    assert {t: (ti["state"], ti["try_number"]) for t, ti in tis.items()} == \
        {"one": ("success", 1), "two": ("success", 1)}, tis
    assert "trying again in" in srv.stderr(), srv.stderr()[-3000:]
    wait_for("the run's containers to be removed", lambda: not containers(dg.dag_id), 30)
    srv.term()


def test_secrets_stay_redacted_after_readoption(dg):
    """A secret env value printed before and after a restart of dagd: the re-adopted try's
    log (read again from its first line), the API's log and the server's log never show it."""
    secret = "s3cr3t-" + dg.dag_id[-6:]
    dags, marks = marked_dag(dg, "echo before=$S; echo X >> /marks/ran; sleep 4; echo after=$S",
                             extra="    env: {S: {secret: %s}}\n" % secret)
    srv = Server(dg, dags).start()
    run = start_work(dg, srv, marks)
    assert srv.term() == 0, srv.stderr()
    srv.start()
    r = srv.wait_run(dg.dag_id, run, timeout=40)
    assert r["state"] == "success", (r, srv.tis(dg.dag_id, run))
    text = dg.log("work", 1, run_id=run)
    assert text.splitlines() == ["before=***", "after=***"], text
    status, body = srv.request("GET", "/api/v1/dags/%s/runs/%s/tasks/work/logs/1"
                               % (dg.dag_id, run), raw=True)
    assert status == 200 and "before=***" in body and "after=***" in body and secret not in body, (status, body)
    assert secret not in srv.all_stderr()
    no_containers_left(dg)
