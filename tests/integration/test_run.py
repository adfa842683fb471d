"""`dagd run` against a real Docker engine: effects checked in the state DB, the task log
files and the engine itself.

Where the CLI contract leaves room, these tests take the Airflow-like reading:
- Trigger rules follow Airflow 2's trigger_rule_dep (table TRIGGER_EXPECTED below):
  e.g. one_success with only skipped upstreams → skipped, with only failed → upstream_failed;
  none_failed runs when every upstream was skipped, none_failed_min_one_success does not.
- A failed try that will be retried is recorded in task_tries with state "failed"
  (the task instance itself goes up_for_retry).
- A string command is rendered, then split like a shell splits words (DockerOperator
  renders the template, docker-py shlex-splits the string).
- A skipped task (skip_on_exit_code) keeps the container's exit code in exit_code.
- `output: {file: ...}` is the file's content as written (no trailing newline added or
  stripped by the test: the file is written without one).
- The test image's busybox `sleep` runs as PID 1 and ignores SIGTERM, so stopping it takes
  the 10 s grace before SIGKILL: timeouts below allow for that.
- The engine (20.10) accepts almost any network name ("bad name!" included); " " is one it
  refuses at create ("invalid name"), which is what the bad-network test uses. Refusing it
  at validation (exit 2 with file:line:col naming the network) is accepted too.
- `dagd run DAG` finds the DAG by its `dag:` id among the folder's files, whatever the
  file is called (dag ids are not file names, as in Airflow).
- `ti.xcom_pull('x')` for a task that does not exist fails that task naming 'x' (or the
  whole file is refused with exit 2 naming it).
- In the plain stdout lines, a failed container try carries `exit=N` and `— exit code N`.
- Cancelled by a signal: the running try ends failed; tasks not started never succeed.
"""
import json
import os
import re
import signal
import socket
import subprocess
import time

import pytest

from conftest import (IMAGE, RUN_ID_RE, TIME_SCALE, TS_RE, check_valgrind, containers, docker,
                      epoch_ms, inspect, Result)


def assert_no_containers(dg):
    left = dg.containers()
    assert left == [], "containers left behind: %s" % left


# --------------------------------------------------------------------------- basics

def test_chain_runs_in_order(dg):
    f = dg.write("""\
        dag: @DAG@
        tasks:
          a:
            image: @IMAGE@
            command: [sh, -c, "echo line-from-a"]
          b:
            image: @IMAGE@
            command: [sh, -c, "echo line-from-b"]
            depends_on: [a]
          c:
            image: @IMAGE@
            command: [sh, -c, "echo line-from-c"]
            depends_on: [b]
        """)
    res = dg.run(f)
    assert res.rc == 0, res
    run = dg.the_run()
    assert run["state"] == "success"
    assert re.fullmatch(RUN_ID_RE, run["run_id"]), run["run_id"]
    assert run["run_type"] == "manual"
    assert run["start_ms"] and run["end_ms"] and run["start_ms"] <= run["end_ms"]
    tis = dg.tis()
    assert set(tis) == {"a", "b", "c"}
    for t in "abc":
        ti = tis[t]
        assert ti["state"] == "success", ti
        assert ti["try_number"] == 1 and ti["max_tries"] == 1, ti
        assert ti["exit_code"] == 0, ti
        assert ti["image"] == IMAGE
        assert ti["start_ms"] <= ti["end_ms"]
        assert run["start_ms"] <= ti["start_ms"] and ti["end_ms"] <= run["end_ms"]
        assert dg.log_lines(t) == ["line-from-" + t]
        assert ti["output"] == "line-from-" + t
    assert tis["a"]["end_ms"] <= tis["b"]["start_ms"]
    assert tis["b"]["end_ms"] <= tis["c"]["start_ms"]
    assert_no_containers(dg)


def test_plain_stdout_lines(dg):
    f = dg.write("""\
        dag: @DAG@
        tasks:
          good:
            image: @IMAGE@
            command: ["true"]
          bad:
            image: @IMAGE@
            command: [sh, -c, "exit 3"]
        """)
    res = dg.run(f)
    assert res.rc == 1, res
    run_id = dg.the_run()["run_id"]
    lines = [l for l in res.out.splitlines() if l.strip()]
    task_re = re.compile(r"(%s) (\S+) (\S+) try=(\d+)(?: exit=(-?\d+))?(?: \u2014 (.*))?" % TS_RE)
    run_re = re.compile(r"(%s) run (\S+) (\S+)" % TS_RE)
    seen = []
    for l in lines:
        m = run_re.fullmatch(l)
        if m:
            assert m.group(2) == run_id, l
            seen.append(("run", m.group(3), None, None, None))
            continue
        m = task_re.fullmatch(l)
        assert m, "stdout line not in the contract's format: %r" % l
        seen.append((m.group(2), m.group(3), int(m.group(4)), m.group(5), m.group(6)))
    assert seen[-1] == ("run", "failed", None, None, None), lines
    assert ("good", "success", 1) in [s[:3] for s in seen], lines
    bad = [s for s in seen if s[0] == "bad" and s[1] == "failed"]
    assert len(bad) == 1, lines
    assert bad[0][3] == "3" and "exit code 3" in (bad[0][4] or ""), lines
    ts = [l.split(" ", 1)[0] for l in lines]
    assert ts == sorted(ts), "timestamps go backwards"
    assert dg.tis()["bad"]["message"] and "exit code 3" in dg.tis()["bad"]["message"]


def test_fan_out_fan_in_runs_in_parallel(dg):
    f = dg.write("""\
        dag: @DAG@
        tasks:
          root:
            image: @IMAGE@
            command: ["true"]
          m1:
            image: @IMAGE@
            command: [sleep, "2"]
            depends_on: [root]
          m2:
            image: @IMAGE@
            command: [sleep, "2"]
            depends_on: [root]
          m3:
            image: @IMAGE@
            command: [sleep, "2"]
            depends_on: [root]
          join:
            image: @IMAGE@
            command: [echo, joined]
            depends_on: [m1, m2, m3]
        """)
    res = dg.run(f)
    assert res.rc == 0, res
    tis = dg.tis()
    assert all(ti["state"] == "success" for ti in tis.values()), tis
    mids = [tis[m] for m in ("m1", "m2", "m3")]
    for m in mids:
        assert m["start_ms"] >= tis["root"]["end_ms"]
        assert m["end_ms"] - m["start_ms"] >= 1500, m
    for i in range(3):
        for j in range(i + 1, 3):
            x, y = mids[i], mids[j]
            assert x["start_ms"] < y["end_ms"] and y["start_ms"] < x["end_ms"], (
                "m%d and m%d did not overlap: %r %r" % (i + 1, j + 1, x, y))
    assert tis["join"]["start_ms"] >= max(m["end_ms"] for m in mids)
    assert dg.log_lines("join") == ["joined"]


# --------------------------------------------------------------------------- retries

def test_retries_then_success(dg):
    f = dg.write("""\
        dag: @DAG@
        tasks:
          flaky:
            image: @IMAGE@
            command: [sh, -c, "echo try={{ try_number }}; test {{ try_number }} -ge 3"]
            retries: 3
            retry_delay: 1s
        """)
    res = dg.run(f, timeout=90)
    assert res.rc == 0, res
    assert dg.the_run()["state"] == "success"
    ti = dg.tis()["flaky"]
    assert ti["state"] == "success" and ti["try_number"] == 3 and ti["max_tries"] == 4, ti
    assert ti["exit_code"] == 0
    tries = dg.tries("flaky")
    assert [t["try_number"] for t in tries] == [1, 2, 3]
    assert [t["state"] for t in tries] == ["failed", "failed", "success"]
    assert [t["exit_code"] for t in tries] == [1, 1, 0]
    for n in (1, 2, 3):
        assert dg.log_lines("flaky", n) == ["try=%d" % n]
    # retry_delay is respected (some slack for clock granularity)
    for prev, nxt in zip(tries, tries[1:]):
        assert nxt["start_ms"] - prev["end_ms"] >= 900, (prev, nxt)
    # one container per try, each with its own name
    names = [t["container_name"] for t in tries]
    assert len(set(names)) == 3, names
    for n, name in zip((1, 2, 3), names):
        assert re.fullmatch(r"dagd-%s-flaky-%d-[0-9a-f]{6}" % (re.escape(dg.dag_id), n), name), name
    assert_no_containers(dg)


def test_retries_exhausted(dg):
    f = dg.write("""\
        dag: @DAG@
        tasks:
          boom:
            image: @IMAGE@
            command: [sh, -c, "echo attempt {{ try_number }}; exit 7"]
            retries: 1
            retry_delay: 1s
          after:
            image: @IMAGE@
            command: [echo, never]
            depends_on: [boom]
        """)
    res = dg.run(f, timeout=90)
    assert res.rc == 1, res
    assert dg.the_run()["state"] == "failed"
    tis = dg.tis()
    boom = tis["boom"]
    assert boom["state"] == "failed" and boom["try_number"] == 2 and boom["max_tries"] == 2, boom
    assert boom["exit_code"] == 7
    assert "exit code 7" in (boom["message"] or ""), boom
    assert [t["exit_code"] for t in dg.tries("boom")] == [7, 7]
    assert [t["state"] for t in dg.tries("boom")] == ["failed", "failed"]
    assert dg.log_lines("boom", 2) == ["attempt 2"]
    assert tis["after"]["state"] == "upstream_failed", tis["after"]
    assert not dg.log_path("after").exists()


# --------------------------------------------------------------------------- trigger rules

# Upstream combinations: S = a task that succeeds, F = one that fails (exit 1),
# K = one that is skipped (exit 99 with skip_on_exit_code: [99]).
COMBOS = ["SFK", "SK", "K", "F", "S"]
# Final state of a downstream task (itself `true`) per rule and combination, Airflow 2.
TRIGGER_EXPECTED = {
    #                              S,F,K              S,K        K          F                  S
    "all_success":                 ("upstream_failed", "skipped", "skipped", "upstream_failed", "success"),
    "all_failed":                  ("skipped",         "skipped", "skipped", "success",         "skipped"),
    "all_done":                    ("success",         "success", "success", "success",         "success"),
    "one_success":                 ("success",         "success", "skipped", "upstream_failed", "success"),
    "one_failed":                  ("success",         "skipped", "skipped", "success",         "skipped"),
    "one_done":                    ("success",         "success", "skipped", "success",         "success"),
    "none_failed":                 ("upstream_failed", "success", "success", "upstream_failed", "success"),
    "none_failed_min_one_success": ("upstream_failed", "success", "skipped", "upstream_failed", "success"),
    "none_skipped":                ("skipped",         "skipped", "skipped", "success",         "success"),
    "all_skipped":                 ("skipped",         "skipped", "success", "skipped",         "skipped"),
    "always":                      ("success",         "success", "success", "success",         "success"),
}
UPSTREAM = {
    "S": ("up_s", "success", '[sh, -c, "echo s"]', ""),
    "F": ("up_f", "failed", '[sh, -c, "exit 1"]', ""),
    "K": ("up_k", "skipped", '[sh, -c, "exit 99"]', "    skip_on_exit_code: [99]\n"),
}


@pytest.mark.parametrize("combo", COMBOS)
def test_trigger_rules(dg, combo):
    col = COMBOS.index(combo)
    text = "dag: @DAG@\nmax_active_tasks: 16\ntasks:\n"
    ups = []
    for c in combo:
        tid, _, cmd, extra = UPSTREAM[c]
        ups.append(tid)
        text += "  %s:\n    image: @IMAGE@\n    command: %s\n%s" % (tid, cmd, extra)
    for rule in TRIGGER_EXPECTED:
        text += ("  r_%s:\n    image: @IMAGE@\n    command: [\"true\"]\n"
                 "    depends_on: [%s]\n    trigger_rule: %s\n" % (rule, ", ".join(ups), rule))
    f = dg.write(text, dedent=False)
    res = dg.run(f, timeout=120)
    assert res.rc in (0, 1), res
    tis = dg.tis()
    for c in combo:
        tid, want, _, _ = UPSTREAM[c]
        assert tis[tid]["state"] == want, tis[tid]
    got = {rule: tis["r_" + rule]["state"] for rule in TRIGGER_EXPECTED}
    want = {rule: exp[col] for rule, exp in TRIGGER_EXPECTED.items()}
    assert got == want
    failed = any(t["state"] in ("failed", "upstream_failed") for t in tis.values())
    assert dg.the_run()["state"] == ("failed" if failed else "success")
    assert res.rc == (1 if failed else 0), res
    for rule, state in want.items():
        if state == "success":
            assert dg.log_path("r_" + rule).exists()
        else:
            assert not dg.log_path("r_" + rule).exists(), rule


# --------------------------------------------------------------------------- timeouts, signals

def test_timeout_stops_and_removes_container(dg):
    f = dg.write("""\
        dag: @DAG@
        tasks:
          slow:
            image: @IMAGE@
            command: [sleep, "300"]
            timeout: 2s
        """)
    t0 = time.monotonic()
    res = dg.run(f, timeout=60)
    elapsed = time.monotonic() - t0
    assert res.rc == 1, res
    assert elapsed < 45 * TIME_SCALE, "timeout took %.1fs" % elapsed
    ti = dg.tis()["slow"]
    assert ti["state"] == "failed", ti
    assert "timed out" in (ti["message"] or ""), ti
    assert ti["end_ms"] - ti["start_ms"] >= 1900, ti
    assert dg.the_run()["state"] == "failed"
    assert containers(dg.dag_id) == []


@pytest.mark.parametrize("sig,name", [(signal.SIGINT, "SIGINT"), (signal.SIGTERM, "SIGTERM")])
def test_interrupt_stops_run(dg, sig, name):
    f = dg.write("""\
        dag: @DAG@
        tasks:
          sleeper:
            image: @IMAGE@
            command: [sleep, "300"]
          after:
            image: @IMAGE@
            command: [echo, after]
            depends_on: [sleeper]
        """)
    p = dg.popen("run", f, "--state", dg.state)
    deadline = time.monotonic() + 60 * TIME_SCALE
    while not containers(dg.dag_id, running_only=True):
        assert p.poll() is None, "dagd exited early: %s" % (p.communicate(),)
        assert time.monotonic() < deadline, "the task's container never ran"
        time.sleep(0.2)
    t0 = time.monotonic()
    p.send_signal(sig)
    try:
        out, err = p.communicate(timeout=30 * TIME_SCALE)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        pytest.fail("dagd did not exit within 30s of %s:\n%s" % (name, err.decode(errors="replace")))
    res = Result(p.args, p.returncode, out.decode(errors="replace"), err.decode(errors="replace"),
                 time.monotonic() - t0)
    check_valgrind(res)
    assert res.rc == 130, res
    assert containers(dg.dag_id) == [], "containers left after %s" % name
    assert dg.the_run()["state"] == "failed"
    tis = dg.tis()
    assert tis["sleeper"]["state"] == "failed", tis["sleeper"]
    assert tis["after"]["state"] not in ("success", "running", "queued", "scheduled"), tis["after"]


# --------------------------------------------------------------------------- logs and output

def test_many_lines_on_both_streams(dg):
    f = dg.write("""\
        dag: @DAG@
        tasks:
          chatty:
            image: @IMAGE@
            command: [sh, -c, "i=0; while [ $i -lt 20000 ]; do echo out$i; echo err$i >&2; i=$((i+1)); done"]
        """)
    res = dg.run(f, timeout=180)
    assert res.rc == 0, res
    lines = dg.log_lines("chatty")
    outs = [l for l in lines if l.startswith("out")]
    errs = [l for l in lines if l.startswith("err")]
    assert len(lines) == 40000, "log has %d lines" % len(lines)
    assert outs == ["out%d" % i for i in range(20000)]
    assert errs == ["err%d" % i for i in range(20000)]
    assert dg.tis()["chatty"]["output"] == "out19999"


def test_only_line_of_short_container_is_kept(dg):
    f = dg.write("""\
        dag: @DAG@
        tasks:
          quick:
            image: @IMAGE@
            command: [echo, only-line]
          nonl:
            image: @IMAGE@
            command: [printf, no-newline]
        """)
    res = dg.run(f)
    assert res.rc == 0, res
    assert dg.log("quick") in ("only-line\n", "only-line")
    tis = dg.tis()
    assert tis["quick"]["output"] == "only-line"
    assert dg.log_lines("nonl") == ["no-newline"]
    assert tis["nonl"]["output"] == "no-newline"


def test_long_and_utf8_lines(dg):
    f = dg.write("""\
        dag: @DAG@
        tasks:
          long:
            image: @IMAGE@
            command: [sh, -c, "head -c 40000 /dev/zero | tr '\\\\0' x; echo; echo 'h\u00e9llo \u2713 \u0434\u0430'"]
        """)
    res = dg.run(f)
    assert res.rc == 0, res
    lines = dg.log_lines("long")
    assert lines == ["x" * 40000, "h\u00e9llo \u2713 \u0434\u0430"]
    assert dg.tis()["long"]["output"] == "h\u00e9llo \u2713 \u0434\u0430"


def test_output_passed_downstream(dg):
    f = dg.write("""\
        dag: @DAG@
        tasks:
          a:
            image: @IMAGE@
            command: [sh, -c, "echo first; echo 42; echo; echo noise >&2"]
          b:
            image: @IMAGE@
            command: [sh, -c, "echo got {{ ti.xcom_pull('a') }}"]
            depends_on: [a]
          w:
            image: @IMAGE@
            command: [sh, -c, "printf from-file > /tmp/out.txt; echo stdout-line"]
            output: {file: /tmp/out.txt}
          r:
            image: @IMAGE@
            command: [sh, -c, "echo read {{ ti.xcom_pull('w') }}"]
            depends_on: [w]
        """)
    res = dg.run(f)
    assert res.rc == 0, res
    tis = dg.tis()
    assert tis["a"]["output"] == "42"
    assert dg.log_lines("b") == ["got 42"]
    assert tis["w"]["output"] == "from-file"
    assert dg.log_lines("w") == ["stdout-line"]
    assert dg.log_lines("r") == ["read from-file"]
    assert_no_containers(dg)


def test_xcom_pull_of_missing_output_fails_clearly(dg):
    f = dg.write("""\
        dag: @DAG@
        tasks:
          silent:
            image: @IMAGE@
            command: ["true"]
          needs:
            image: @IMAGE@
            command: [echo, "{{ ti.xcom_pull('nosuchtask') }}"]
            depends_on: [silent]
        """)
    res = dg.run(f)
    if res.rc == 2:
        # rejected up front: acceptable, as long as it names the task
        assert "nosuchtask" in res.err, res
        return
    assert res.rc == 1, res
    ti = dg.tis()["needs"]
    assert ti["state"] == "failed" and "nosuchtask" in (ti["message"] or ""), ti


# --------------------------------------------------------------------------- engine errors

def test_missing_image_pull_never(dg):
    f = dg.write("""\
        dag: @DAG@
        tasks:
          img:
            image: dagd-test/does-not-exist:1
            pull: never
            command: ["true"]
        """)
    res = dg.run(f, timeout=60)
    assert res.rc == 1, res
    ti = dg.tis()["img"]
    assert ti["state"] == "failed", ti
    assert "dagd-test/does-not-exist" in (ti["message"] or ""), ti
    assert dg.the_run()["state"] == "failed"
    assert_no_containers(dg)


def test_missing_image_pull_missing(dg):
    engine = docker("pull", "dagd-test/does-not-exist:1", check=False, timeout=180)
    assert engine.returncode != 0, "the engine pulled an image that should not exist"
    engine_msg = engine.stderr.strip().replace("Error response from daemon: ", "")
    f = dg.write("""\
        dag: @DAG@
        tasks:
          img:
            image: dagd-test/does-not-exist:1
            command: ["true"]
        """)
    res = dg.run(f, timeout=180)
    assert res.rc == 1, res
    ti = dg.tis()["img"]
    assert ti["state"] == "failed", ti
    msg = ti["message"] or ""
    assert msg.strip(), ti
    assert "dagd-test/does-not-exist" in msg or engine_msg[:40] in msg, (msg, engine_msg)
    assert_no_containers(dg)


def test_bad_network_name(dg):
    f = dg.write("""\
        dag: @DAG@
        tasks:
          net:
            image: @IMAGE@
            network: " "
            command: ["true"]
        """)
    res = dg.run(f)
    if res.rc == 2:
        # refused by validation before any engine call: acceptable if it says where and what
        assert re.search(r"^%s:5:\d+: error: .*network" % re.escape(str(f)), res.err, re.M), res
        return
    assert res.rc == 1, res
    ti = dg.tis()["net"]
    assert ti["state"] == "failed", ti
    assert "invalid name" in (ti["message"] or ""), ti
    assert_no_containers(dg)


def test_network_created_if_missing(dg):
    net = dg.dag_id + "_net"
    dg.networks.append(net)
    f = dg.write("""\
        dag: @DAG@
        tasks:
          n:
            image: @IMAGE@
            network: %s
            command: ["true"]
            remove: never
        """ % net)
    res = dg.run(f)
    assert res.rc == 0, res
    info = json.loads(docker("network", "inspect", net).stdout)[0]
    assert info["Driver"] == "bridge"
    ids = containers(dg.dag_id)
    assert len(ids) == 1
    assert list(inspect(ids[0])["NetworkSettings"]["Networks"]) == [net]
    dg.remove_containers()
    # a second run finds the network already there
    res = dg.run(f)
    assert res.rc == 0, res
    dg.remove_containers()


# --------------------------------------------------------------------------- templates

TEMPLATES_DAG = """\
    dag: @DAG@
    params: {region: kr}
    tasks:
      dates:
        image: @IMAGE@
        command: [echo, "{{ ds }}", "{{ ds_nodash }}"]
      region:
        image: @IMAGE@
        command: [echo, "{{ params.region }}"]
      macros:
        image: @IMAGE@
        command: [echo, "{{ macros.ds_add(ds, 5) }}", "{{ macros.ds_add(ds, -4) }}"]
      fmt:
        image: @IMAGE@
        command: [echo, "{{ macros.ds_format(ds, '%Y-%m-%d', '%d/%m/%Y') }}"]
      ids:
        image: @IMAGE@
        command: [echo, "{{ dag_id }}", "{{ task_id }}", "{{ run_id }}", "{{ try_number }}"]
      ts:
        image: @IMAGE@
        command: [echo, "{{ ts }}"]
      envt:
        image: @IMAGE@
        command: [sh, -c, "echo $WHEN"]
        env: {WHEN: "day {{ ds_nodash }}"}
    """


def test_templates_with_date(dg):
    f = dg.write(TEMPLATES_DAG)
    res = dg.run(f, "--date", "2025-03-04")
    assert res.rc == 0, res
    run = dg.the_run()
    assert run["logical_ms"] == epoch_ms("2025-03-04")
    out = {t: r["output"] for t, r in dg.tis().items()}
    assert dg.log_lines("dates") == ["2025-03-04 20250304"]
    assert out["region"] == "kr"
    assert out["macros"] == "2025-03-09 2025-02-28"
    assert out["fmt"] == "04/03/2025"
    assert out["ids"] == "%s ids %s 1" % (dg.dag_id, run["run_id"])
    assert out["ts"].startswith("2025-03-04T00:00:00"), out["ts"]
    assert out["envt"] == "day 20250304"


def test_date_rfc3339_and_conf_override(dg):
    f = dg.write(TEMPLATES_DAG)
    res = dg.run(f, "--date", "2025-03-04T05:06:07Z", "--conf", '{"region": "us", "extra": 5}')
    assert res.rc == 0, res
    run = dg.the_run()
    assert run["logical_ms"] == epoch_ms("2025-03-04T05:06:07Z")
    assert json.loads(run["conf_json"]) == {"region": "us", "extra": 5}
    out = {t: r["output"] for t, r in dg.tis().items()}
    assert out["dates"] == "2025-03-04 20250304"
    assert out["region"] == "us"


@pytest.mark.parametrize("schedule,date,start,end", [
    ('"@daily"', "2025-01-15", "2025-01-14T00:00:00Z", "2025-01-15T00:00:00Z"),
    ('"@daily"', "2025-01-15T13:30:00Z", "2025-01-14T00:00:00Z", "2025-01-15T00:00:00Z"),
    ('"every 2h"', "2025-01-15T13:30:00Z", "2025-01-15T11:30:00Z", "2025-01-15T13:30:00Z"),
    (None, "2025-01-15T13:30:00Z", "2025-01-15T13:30:00Z", "2025-01-15T13:30:00Z"),
])
def test_manual_run_data_interval(dg, schedule, date, start, end):
    """`dagd run --date` covers the interval Airflow 2.10 infers for a manual run: for a cron
    schedule the latest complete one ending at or before the date, for `every D` the D
    before it, without a schedule the instant alone. `dagd test` renders the same."""
    head = "schedule: %s\nstart_date: 2025-01-01\n" % schedule if schedule else ""
    f = dg.write("dag: @DAG@\n%stasks:\n  t:\n    image: @IMAGE@\n"
                 "    command: [echo, '{{ data_interval_start }}', '{{ data_interval_end }}']\n" % head,
                 dedent=False)
    res = dg.run(f, "--date", date)
    assert res.rc == 0, res
    run = dg.the_run()
    assert (run["interval_start_ms"], run["interval_end_ms"]) == (epoch_ms(start), epoch_ms(end)), run
    assert run["logical_ms"] == epoch_ms(date)
    assert dg.log_lines("t") == ["%s %s" % (start, end)]
    res = dg.exec("test", f, "t", "--date", date)
    assert res.rc == 0 and res.out.splitlines() == ["%s %s" % (start, end)], res


def test_dag_run_conf_in_template(dg):
    f = dg.write("""\
        dag: @DAG@
        tasks:
          c:
            image: @IMAGE@
            command: [echo, "{{ dag_run.conf.who }}"]
        """)
    res = dg.run(f, "--conf", '{"who": "world"}')
    assert res.rc == 0, res
    assert dg.tis()["c"]["output"] == "world"


def test_unknown_template_name_fails_task(dg):
    f = dg.write("""\
        dag: @DAG@
        params: {region: kr}
        tasks:
          bad:
            image: @IMAGE@
            command: [echo, "{{ params.nope }}"]
          fine:
            image: @IMAGE@
            command: [echo, "{{ params.region }}"]
        """)
    res = dg.run(f)
    assert res.rc == 1, res
    tis = dg.tis()
    assert tis["bad"]["state"] == "failed", tis["bad"]
    assert "params.nope" in (tis["bad"]["message"] or ""), tis["bad"]
    assert tis["fine"]["state"] == "success"
    assert dg.the_run()["state"] == "failed"
    assert "params.nope" in res.out
    assert_no_containers(dg)


def test_skip_on_exit_code(dg):
    f = dg.write("""\
        dag: @DAG@
        tasks:
          maybe:
            image: @IMAGE@
            command: [sh, -c, "echo skipping; exit 99"]
            skip_on_exit_code: [99]
          next:
            image: @IMAGE@
            command: [echo, next]
            depends_on: [maybe]
        """)
    res = dg.run(f)
    assert res.rc == 0, res
    assert dg.the_run()["state"] == "success"
    tis = dg.tis()
    assert tis["maybe"]["state"] == "skipped", tis["maybe"]
    assert tis["maybe"]["exit_code"] == 99
    assert dg.log_lines("maybe") == ["skipping"]
    assert tis["next"]["state"] == "skipped", tis["next"]
    assert_no_containers(dg)


# --------------------------------------------------------------------------- input errors

def test_conf_must_be_object(dg):
    f = dg.write("""\
        dag: @DAG@
        tasks:
          a:
            image: @IMAGE@
            command: ["true"]
        """)
    for conf in ("[1, 2]", "not json", '"str"', "42"):
        res = dg.run(f, "--conf", conf)
        assert res.rc == 2, (conf, res)
        assert res.err.strip(), res
    assert containers(dg.dag_id) == []


def test_invalid_dag_file_exit_2(dg):
    f = dg.write("""\
        dag: @DAG@
        tasks:
          a:
            image: @IMAGE@
            comand: [true]
        """)
    res = dg.run(f)
    assert res.rc == 2, res
    assert re.search(r"^%s:5:5: error: .*did you mean" % re.escape(str(f)), res.err, re.M), res
    assert containers(dg.dag_id) == []


def test_cycle_exit_2(dg):
    f = dg.write("""\
        dag: @DAG@
        tasks:
          a:
            image: @IMAGE@
            depends_on: [b]
          b:
            image: @IMAGE@
            depends_on: [a]
        """)
    res = dg.run(f)
    assert res.rc == 2, res
    assert re.search(r"^%s:\d+:\d+: error: " % re.escape(str(f)), res.err, re.M), res
    assert "a -> b -> a" in res.err or "b -> a -> b" in res.err, res


def test_nonexistent_file_exit_2(dg):
    res = dg.run(dg.tmp / "nope.yml")
    assert res.rc == 2, res
    assert res.err.strip()
    res = dg.exec("run")
    assert res.rc == 2, res
    res = dg.exec("run", dg.tmp / "nope.yml", "--bogus-flag")
    assert res.rc == 2, res


@pytest.mark.parametrize("verb", ["run", "test"])
def test_unreachable_engine_names_the_endpoint_and_exits_3(dg, verb):
    """An engine that cannot be reached is not a failed run (1): exit 3, as for an
    unreachable server, with the socket (and why) or the host and port that were tried."""
    f = dg.write("""\
        dag: @DAG@
        tasks:
          a:
            image: @IMAGE@
            command: [sh, -c, "echo a"]
        """)
    args = ["run", f, "--state", dg.state] if verb == "run" else ["test", f, "a"]
    env = dict(os.environ, DOCKER_HOST="unix:///nonexistent.sock")
    env.pop("DAGD_DOCKER_HOST", None)
    res = dg.exec(*args, env=env, timeout=30)
    assert res.rc == 3, res
    assert "Docker engine at unix:///nonexistent.sock could not be reached: " \
           "socket /nonexistent.sock: No such file or directory" in res.err, res
    assert "port 80" not in res.err, res
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env["DOCKER_HOST"] = "tcp://127.0.0.1:%d" % port
    res = dg.exec(*args, env=env, timeout=30)
    assert res.rc == 3, res
    assert "Docker engine at tcp://127.0.0.1:%d could not be reached" % port in res.err, res
    assert "127.0.0.1 port %d" % port in res.err, res
    assert dg.containers() == []


# --------------------------------------------------------------------------- state, lookup

def test_state_survives_runs(dg):
    f = dg.write("""\
        dag: @DAG@
        tasks:
          a:
            image: @IMAGE@
            command: [sh, -c, "echo {{ run_id }}"]
        """)
    assert dg.run(f).rc == 0
    assert dg.run(f).rc == 0
    runs = dg.runs()
    assert len(runs) == 2, runs
    assert runs[0]["run_id"] != runs[1]["run_id"]
    assert all(r["state"] == "success" for r in runs)
    for r in runs:
        assert dg.log_lines("a", run_id=r["run_id"]) == [r["run_id"]]
        assert dg.tis(run_id=r["run_id"])["a"]["output"] == r["run_id"]


def test_run_by_dag_id(dg):
    dags = dg.tmp / "dags"
    dg.write("""\
        dag: @DAG@
        tasks:
          a:
            image: @IMAGE@
            command: [echo, by-id]
        """, name="dags/some_file_name.yaml")
    res = dg.run(dg.dag_id, "--dags", dags)
    assert res.rc == 0, res
    assert dg.tis()["a"]["output"] == "by-id"
    # the same through $DAGD_DAGS_FOLDER
    env = dict(os.environ, DAGD_DAGS_FOLDER=str(dags))
    res = dg.run(dg.dag_id, env=env)
    assert res.rc == 0, res
    assert len(dg.runs()) == 2
    res = dg.run("no_such_dag_id", "--dags", dags)
    assert res.rc == 2, res


@pytest.mark.parametrize("how", ["STATE_DIRECTORY", "XDG_STATE_HOME", "HOME"])
def test_default_state_dir(dg, how):
    f = dg.write("""\
        dag: @DAG@
        tasks:
          a:
            image: @IMAGE@
            command: [echo, hi]
        """)
    env = {k: v for k, v in os.environ.items()
           if k not in ("STATE_DIRECTORY", "XDG_STATE_HOME")}
    base = dg.tmp / "base"
    env["HOME"] = str(dg.tmp / "home")
    if how == "STATE_DIRECTORY":
        env["STATE_DIRECTORY"] = str(base)
        state = base
    elif how == "XDG_STATE_HOME":
        env["XDG_STATE_HOME"] = str(base)
        state = base / "dagd"
    else:
        state = dg.tmp / "home" / ".local" / "state" / "dagd"
    res = dg.run(f, env=env, state=False)
    assert res.rc == 0, res
    assert (state / "dagd.db").is_file(), list(dg.tmp.rglob("*"))
    assert dg.tis(state=state)["a"]["output"] == "hi"
    assert not dg.state.exists()


# --------------------------------------------------------------------------- container shape

def test_container_settings_and_labels(dg):
    f = dg.write("""\
        dag: @DAG@
        tasks:
          probe:
            image: @IMAGE@
            command: "sh -c 'echo $FOO-$BAR; pwd; id -u; id -g; echo {{ ds_nodash }}'"
            env:
              FOO: hello
              BAR: "{{ ds }}"
            working_dir: /tmp
            user: "1234:5678"
            labels: {com.example.team: data, com.example.tier: "2"}
            remove: never
        """)
    res = dg.run(f, "--date", "2025-03-04")
    assert res.rc == 0, res
    run_id = dg.the_run()["run_id"]
    assert dg.log_lines("probe") == ["hello-2025-03-04", "/tmp", "1234", "5678", "20250304"]
    ti = dg.tis()["probe"]
    ids = containers(dg.dag_id)
    assert len(ids) == 1, ids
    c = inspect(ids[0])
    assert c["Id"].startswith(ti["container_id"]) and len(ti["container_id"]) >= 12, ti
    name = c["Name"].lstrip("/")
    assert name == ti["container_name"]
    assert re.fullmatch(r"dagd-%s-probe-1-[0-9a-f]{6}" % re.escape(dg.dag_id), name), name
    labels = c["Config"]["Labels"]
    assert labels["com.example.team"] == "data" and labels["com.example.tier"] == "2"
    assert labels["io.dagd.dag"] == dg.dag_id
    assert labels["io.dagd.run"] == run_id
    assert labels["io.dagd.task"] == "probe"
    assert labels["io.dagd.try"] == "1"
    assert labels.get("io.dagd.instance"), labels
    assert c["Config"]["WorkingDir"] == "/tmp"
    assert c["Config"]["User"] == "1234:5678"
    assert "FOO=hello" in c["Config"]["Env"] and "BAR=2025-03-04" in c["Config"]["Env"]
    assert c["Config"]["Cmd"] == ["sh", "-c", "echo $FOO-$BAR; pwd; id -u; id -g; echo 20250304"]
    assert c["Config"]["Tty"] is False
    assert c["State"]["Status"] == "exited" and c["State"]["ExitCode"] == 0
    assert c["HostConfig"].get("AutoRemove") is False
    assert dg.tries("probe")[0]["container_id"] == ti["container_id"]
    assert dg.remove_containers() == ids


def test_container_names_unique_per_try(dg):
    f = dg.write("""\
        dag: @DAG@
        tasks:
          t:
            image: @IMAGE@
            command: [sh, -c, "exit 5"]
            retries: 1
            retry_delay: 1s
            remove: never
        """)
    res = dg.run(f, timeout=90)
    assert res.rc == 1, res
    tries = dg.tries("t")
    assert len(tries) == 2
    by_try = {}
    for cid in containers(dg.dag_id):
        c = inspect(cid)
        by_try[c["Config"]["Labels"]["io.dagd.try"]] = c
        assert c["State"]["ExitCode"] == 5
    assert set(by_try) == {"1", "2"}
    for t in tries:
        c = by_try[str(t["try_number"])]
        assert c["Name"].lstrip("/") == t["container_name"]
        assert c["Id"].startswith(t["container_id"])
    assert tries[0]["container_name"] != tries[1]["container_name"]
    assert dg.tis()["t"]["container_name"] == tries[1]["container_name"]
    dg.remove_containers()


def test_remove_on_success(dg):
    f = dg.write("""\
        dag: @DAG@
        tasks:
          ok:
            image: @IMAGE@
            command: ["true"]
            remove: on_success
          ko:
            image: @IMAGE@
            command: [sh, -c, "exit 3"]
            remove: on_success
          gone:
            image: @IMAGE@
            command: [sh, -c, "exit 4"]
        """)
    res = dg.run(f)
    assert res.rc == 1, res
    left = [inspect(c) for c in containers(dg.dag_id)]
    assert [c["Config"]["Labels"]["io.dagd.task"] for c in left] == ["ko"], left
    assert left[0]["State"]["ExitCode"] == 3
    dg.remove_containers()


def test_state_is_private(dg):
    """The database (run confs, task outputs) is its owner's only, and a state directory
    others can read is pointed out."""
    import stat as st
    f = dg.write("""\
        dag: @DAG@
        tasks:
          a:
            image: @IMAGE@
            command: ["true"]
        """)
    dg.state.mkdir(parents=True, exist_ok=True)
    os.chmod(dg.state, 0o755)
    db = dg.state / "dagd.db"
    db.write_bytes(b"")
    os.chmod(db, 0o644)
    res = dg.run(f)
    assert res.rc == 0, res
    assert st.S_IMODE(db.stat().st_mode) == 0o600, oct(db.stat().st_mode)
    for side in ("dagd.db-wal", "dagd.db-shm"):
        p = dg.state / side
        if p.exists():
            assert st.S_IMODE(p.stat().st_mode) == 0o600, (side, oct(p.stat().st_mode))
    assert "can be read by others (mode 755)" in res.err and "chmod 700" in res.err, res
    os.chmod(dg.state, 0o700)
    res = dg.run(f)
    assert res.rc == 0 and "can be read by others" not in res.err, res
