"""Sensors (a glob on the dagd host, poke and reschedule modes, timeouts) and
notifications (webhooks to a local HTTP server, email to a local SMTP receiver).

Readings taken where the contract leaves room:
- A reschedule-mode sensor records one task_tries row per check, numbered from 1 without
  gaps; the task instance ends `success` with its try_number equal to the last check's and
  never above max_tries; checks never use up `retries`.
- Between checks a reschedule-mode sensor holds no slot, so with DAGD_PARALLELISM=1 a
  container task can run while it waits; a poke-mode sensor holds the only slot.
- DAG-level on_failure notifications are delivered before `dagd run` exits.
- The default webhook body is a JSON object with dag_id, run_id, task_id, state and ds;
  a notify task's `state` is `failed` when an upstream failed.
- on_retry fires once per failed try that is followed by another try; on_failure once when
  the last try fails.
"""
import json
import re
import sqlite3
import threading
import time

import pytest

from conftest import TIME_SCALE, env_with, free_port, wait_port

DATE = "2025-01-01"


def create_after_first_check(dg, task, mode, path):
    """Create `path` once the state DB shows that the file sensor `task` has checked once
    and found nothing: in reschedule mode a second try exists (made only after the first
    check answered "not yet"); in poke mode the instance is written as running (the first
    check is made in the same turn as the start, before that write). Returns the thread;
    its `.created_ms` is when the file was about to be written (None: it never was)."""
    def checked():
        try:
            if mode == "reschedule":
                return bool(dg.rows("SELECT 1 FROM task_tries WHERE dag_id = ? AND task_id = ?"
                                    " AND try_number >= 2", (dg.dag_id, task)))
            return bool(dg.rows("SELECT 1 FROM task_instances WHERE dag_id = ? AND task_id = ?"
                                " AND state = 'running'", (dg.dag_id, task)))
        except (AssertionError, sqlite3.Error):  # no DB yet, or its tables not made yet
            return False

    def go():
        deadline = time.monotonic() + 30 * TIME_SCALE
        while not checked():
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)
        th.created_ms = int(time.time() * 1000)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x\n")
    th = threading.Thread(target=go, daemon=True)
    th.created_ms = None
    th.start()
    return th


# --------------------------------------------------------------------------- sensors

@pytest.mark.parametrize("mode", ["poke", "reschedule"])
def test_file_sensor_waits_for_file(dg, mode):
    inbox = dg.tmp / "in"
    f = dg.write("""\
        dag: @DAG@
        tasks:
          wait:
            sensor: {file: "%s/{{ ds }}/*.csv", interval: 1s, timeout: 20s, mode: %s}
          use:
            image: @IMAGE@
            command: [echo, used]
            depends_on: [wait]
        """ % (inbox, mode))
    # a file that does not match the glob must not satisfy the sensor
    (inbox / DATE).mkdir(parents=True)
    (inbox / DATE / "data.txt").write_text("no\n")
    (inbox / "2025-01-02").mkdir()
    (inbox / "2025-01-02" / "other.csv").write_text("wrong day\n")
    th = create_after_first_check(dg, "wait", mode, inbox / DATE / "part-0.csv")
    res = dg.run(f, "--date", DATE, timeout=40)
    th.join()
    assert res.rc == 0, res
    tis = dg.tis()
    assert tis["wait"]["state"] == "success", tis
    assert tis["use"]["state"] == "success", tis
    assert tis["wait"]["end_ms"] <= tis["use"]["start_ms"]
    run = dg.the_run()
    # the file appeared only after a first check had found none, and the sensor ended
    # after it appeared: it waited for the file (and did not succeed at once)
    assert th.created_ms is not None, "the sensor's first check was never seen"
    assert tis["wait"]["end_ms"] >= th.created_ms > run["start_ms"], (th.created_ms, run, tis["wait"])
    assert dg.log_lines("use") == ["used"]
    tries = dg.tries("wait")
    nums = [t["try_number"] for t in tries]
    assert nums == list(range(1, len(nums) + 1)), tries
    assert tries[-1]["state"] == "success", tries
    assert tis["wait"]["try_number"] == nums[-1]
    assert tis["wait"]["try_number"] <= tis["wait"]["max_tries"], tis["wait"]
    if mode == "poke":
        assert nums == [1], tries
    else:
        # the first check found nothing, one a second later the file: two checks, not many more
        assert 2 <= len(nums) <= 8, tries
    assert dg.containers() == []


@pytest.mark.parametrize("mode", ["poke", "reschedule"])
def test_file_sensor_times_out(dg, mode):
    f = dg.write("""\
        dag: @DAG@
        tasks:
          wait:
            sensor: {file: "%s/never/*.csv", interval: 1s, timeout: 3s, mode: %s}
            retries: 2
            retry_delay: 1s
          use:
            image: @IMAGE@
            command: [echo, used]
            depends_on: [wait]
        """ % (dg.tmp, mode))
    res = dg.run(f, "--date", DATE, timeout=40)
    assert res.rc == 1, res
    assert res.elapsed < 20 * TIME_SCALE, res
    tis = dg.tis()
    assert tis["wait"]["state"] == "failed", tis
    assert "timed out" in (tis["wait"]["message"] or ""), tis["wait"]
    assert tis["use"]["state"] == "upstream_failed", tis
    assert tis["use"]["start_ms"] is None, tis["use"]
    assert "timed out" in res.out, res
    assert dg.containers() == []


def run_sensor_beside_maker(dg, timeout, mode, make_cmd):
    """parallelism 1: a file sensor (higher weight, so it starts first) and a container
    task that makes the file in a shared folder; returns the run's result."""
    shared = dg.tmp / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    f = dg.write("""\
        dag: @DAG@
        tasks:
          wait:
            sensor: {file: "%s/ready", interval: 1s, timeout: %s, mode: %s}
            priority_weight: 100
          make:
            image: @IMAGE@
            command: [sh, -c, "%s"]
            volumes: ["%s:/shared"]
        """ % (shared, timeout, mode, make_cmd, shared))
    return dg.run(f, timeout=40, env=env_with(DAGD_PARALLELISM="1"))


def test_reschedule_sensor_frees_its_slot(dg):
    """In reschedule mode the container that makes the file can run between checks."""
    res = run_sensor_beside_maker(dg, "20s", "reschedule", "sleep 1; touch /shared/ready")
    assert res.rc == 0, res
    tis = dg.tis()
    assert tis["wait"]["state"] == "success" and tis["make"]["state"] == "success", tis
    first = dg.tries("wait")[0]
    assert first["start_ms"] <= tis["make"]["start_ms"], (first, tis["make"])
    assert dg.containers() == []


def test_poke_sensor_holds_its_slot(dg):
    """In poke mode the sensor keeps the only slot until it times out."""
    res = run_sensor_beside_maker(dg, "3s", "poke", "touch /shared/ready")
    assert res.rc == 1, res
    tis = dg.tis()
    assert tis["wait"]["state"] == "failed", tis
    assert "timed out" in tis["wait"]["message"], tis
    assert tis["make"]["state"] == "success", tis
    assert tis["make"]["start_ms"] >= tis["wait"]["end_ms"], tis
    assert dg.containers() == []


# --------------------------------------------------------------------------- webhooks

def test_webhook_notifications(dg, http_sink):
    f = dg.write("""\
        dag: @DAG@
        notifications:
          hook:
            webhook: {url: "%s/x"}
          custom:
            webhook:
              url: "%s/custom/{{ ds_nodash }}"
              body: '{"msg": "{{ dag_id }} {{ ds }} {{ state }} {{ task_id }} {{ params.who }}"}'
        params: {who: team-a}
        on_failure: [hook]
        tasks:
          bad:
            image: @IMAGE@
            command: [sh, -c, "exit 5"]
          good:
            image: @IMAGE@
            command: ["true"]
          alert:
            notify: hook
            depends_on: [bad]
            trigger_rule: one_failed
          tell:
            notify: custom
            depends_on: [good]
        """ % (http_sink.url, http_sink.url))
    res = dg.run(f, "--date", DATE, timeout=40)
    assert res.rc == 1, res
    run = dg.the_run()
    tis = dg.tis()
    assert tis["alert"]["state"] == "success", tis
    assert tis["tell"]["state"] == "success", tis
    got = http_sink.wait(3, timeout=5)
    assert len(got) == 3, got
    by_path = {}
    for g in got:
        by_path.setdefault(g["path"], []).append(g)
    assert set(by_path) == {"/x", "/custom/20250101"}, got
    for g in got:
        assert "json" in g["headers"].get("Content-Type", ""), g
    custom = json.loads(by_path["/custom/20250101"][0]["body"])
    assert custom == {"msg": "%s %s success tell team-a" % (dg.dag_id, DATE)}, custom
    hooks = [json.loads(g["body"]) for g in by_path["/x"]]
    for h in hooks:
        assert h["dag_id"] == dg.dag_id and h["ds"] == DATE, h
        assert h["run_id"] == run["run_id"], h
        assert h["state"] == "failed", h
    task_hooks = [h for h in hooks if h.get("task_id") == "alert"]
    assert len(task_hooks) == 1, hooks
    assert len([h for h in hooks if h.get("task_id") != "alert"]) == 1, hooks


def test_notifications_pull_xcom(dg, http_sink):
    """Notification fields are templates with ti.xcom_pull too; a task without output
    gives "" there, so the failure alert about it still goes out."""
    f = dg.write("""\
        dag: @DAG@
        notifications:
          rows:
            webhook:
              url: "%s/rows"
              body: 'rows={{ ti.xcom_pull(''count'') }} broken=[{{ ti.xcom_pull(''broken'') }}]'
        on_failure: [rows]
        tasks:
          count:
            image: @IMAGE@
            command: [sh, -c, "echo 42"]
          broken:
            image: @IMAGE@
            command: [sh, -c, "exit 3"]
          tell:
            notify: rows
            depends_on: [count]
        """ % http_sink.url)
    res = dg.run(f, "--date", DATE, timeout=40)
    assert res.rc == 1, res
    tis = dg.tis()
    assert tis["tell"]["state"] == "success", tis
    got = http_sink.wait(2, timeout=5)
    assert [g["body"] for g in got] == [b"rows=42 broken=[]"] * 2, got


def test_dag_on_success_notification(dg, http_sink):
    f = dg.write("""\
        dag: @DAG@
        notifications:
          hook:
            webhook: {url: "%s/ok"}
        on_success: [hook]
        on_failure: [hook]
        tasks:
          a:
            image: @IMAGE@
            command: ["true"]
        """ % http_sink.url)
    res = dg.run(f, "--date", DATE, timeout=40)
    assert res.rc == 0, res
    got = http_sink.wait(1, timeout=5)
    assert len(got) == 1, got
    body = json.loads(got[0]["body"])
    assert body["state"] == "success" and body["dag_id"] == dg.dag_id, body


@pytest.mark.parametrize("where", ["closed_port", "http_500"])
def test_webhook_failure_fails_notify_task(dg, http_sink, where):
    if where == "closed_port":
        port = free_port()
        assert wait_port(port, timeout=1, up=False)
        url = "http://127.0.0.1:%d/x" % port
    else:
        url = http_sink.url + "/fail"
    f = dg.write("""\
        dag: @DAG@
        notifications:
          hook:
            webhook: {url: "%s"}
        tasks:
          a:
            image: @IMAGE@
            command: ["true"]
          tell:
            notify: hook
            depends_on: [a]
        """ % url)
    res = dg.run(f, timeout=60)
    assert res.rc == 1, res
    assert res.elapsed < 35 * TIME_SCALE, res
    ti = dg.tis()["tell"]
    assert ti["state"] == "failed", ti
    msg = ti["message"] or ""
    assert "hook" in msg, ti
    if where == "closed_port":
        assert re.search(r"connect|refused", msg, re.I), ti
    else:
        assert "500" in msg, ti


def test_on_retry_fires_once_per_retry(dg, http_sink):
    f = dg.write("""\
        dag: @DAG@
        notifications:
          retry:
            webhook:
              url: "%s/retry"
              body: '{"task": "{{ task_id }}", "try": {{ try_number }}, "state": "{{ state }}"}'
          fail:
            webhook:
              url: "%s/fail-note"
              body: '{"task": "{{ task_id }}", "try": {{ try_number }}, "state": "{{ state }}"}'
        tasks:
          flaky:
            image: @IMAGE@
            command: [sh, -c, "exit 1"]
            retries: 2
            retry_delay: 1s
            on_retry: [retry]
            on_failure: [fail]
        """ % (http_sink.url, http_sink.url))
    # "/fail-note" contains "fail": the sink answers 500 there, which must not matter
    res = dg.run(f, timeout=60)
    assert res.rc == 1, res
    ti = dg.tis()["flaky"]
    assert ti["state"] == "failed" and ti["try_number"] == 3, ti
    got = http_sink.wait(3, timeout=5)
    retries = [json.loads(g["body"]) for g in got if g["path"] == "/retry"]
    fails = [json.loads(g["body"]) for g in got if g["path"] == "/fail-note"]
    assert len(retries) == 2, got
    assert sorted(r["try"] for r in retries) == [1, 2], retries
    assert all(r["task"] == "flaky" and r["state"] == "up_for_retry" for r in retries), retries
    assert len(fails) == 1 and fails[0]["try"] == 3 and fails[0]["state"] == "failed", fails


# --------------------------------------------------------------------------- email

def header(data, name):
    m = re.search(rb"^%s:\s*(.*?)\r?$" % name.encode(), data, re.M | re.I)
    return m.group(1).decode() if m else None


def test_email_on_failure(dg, smtp_sink):
    f = dg.write("""\
        dag: @DAG@
        notifications:
          ops:
            email:
              to: [a@example.com, b@example.com]
              subject: "{{ dag_id }} {{ ds }} {{ state }}"
              body: "Task {{ task_id }} of run {{ run_id }} ended {{ state }}."
        tasks:
          bad:
            image: @IMAGE@
            command: [sh, -c, "exit 2"]
            on_failure: [ops]
          good:
            image: @IMAGE@
            command: ["true"]
            on_failure: [ops]
        """)
    res = dg.run(f, "--date", DATE, timeout=60,
                 env=env_with(DAGD_SMTP_URL=smtp_sink.url, DAGD_SMTP_FROM="dagd@example.org"))
    assert res.rc == 1, res
    run_id = dg.the_run()["run_id"]
    mails = smtp_sink.wait(1, timeout=5)
    time.sleep(0.3)
    mails = smtp_sink.get()
    assert len(mails) == 1, mails
    m = mails[0]
    assert m["from"].strip("<>") == "dagd@example.org", m
    assert sorted(r.strip("<>") for r in m["to"]) == ["a@example.com", "b@example.com"], m
    assert header(m["data"], "Subject") == "%s %s failed" % (dg.dag_id, DATE), m
    assert "a@example.com" in (header(m["data"], "To") or ""), m
    assert ("Task bad of run %s ended failed." % run_id).encode() in m["data"], m


def test_email_to_is_a_template(dg, smtp_sink):
    """An email's recipients are rendered like its subject (params, a run's conf)."""
    f = dg.write("""\
        dag: @DAG@
        params: {team: data}
        notifications:
          report:
            email: {to: ["{{ params.team }}@example.com", "{{ dag_run.conf.cc | default('x') }}@example.org"]}
        tasks:
          mail:
            notify: report
        """)
    res = dg.run(f, "--date", DATE, "--conf", '{"cc": "boss"}', timeout=60,
                 env=env_with(DAGD_SMTP_URL=smtp_sink.url, DAGD_SMTP_FROM="dagd@example.org"))
    assert res.rc == 0, res
    mails = smtp_sink.wait(1, timeout=5)
    assert len(mails) == 1, mails
    assert sorted(r.strip("<>") for r in mails[0]["to"]) == ["boss@example.org", "data@example.com"], mails
    assert header(mails[0]["data"], "To") == "data@example.com, boss@example.org", mails
    bad = dg.write("""\
        dag: @DAG@
        notifications:
          report:
            email: {to: ["{{ next_ds }}@example.com"]}
        tasks:
          mail:
            notify: report
        """, name="bad.yml")
    res = dg.exec("validate", bad)
    assert res.rc != 0 and "email to" in res.out + res.err and "next_ds" in res.out + res.err, res


def test_email_notify_task_without_smtp_fails_clearly(dg):
    f = dg.write("""\
        dag: @DAG@
        notifications:
          ops:
            email: {to: [a@example.com]}
        tasks:
          tell:
            notify: ops
        """)
    res = dg.run(f, timeout=40, env=env_with(DAGD_SMTP_URL=None))
    assert res.rc == 1, res
    ti = dg.tis()["tell"]
    assert ti["state"] == "failed", ti
    assert re.search(r"smtp", ti["message"] or "", re.I), ti


def test_dag_email_to_unreachable_smtp_does_not_hang(dg):
    port = free_port()
    assert wait_port(port, timeout=1, up=False)
    f = dg.write("""\
        dag: @DAG@
        notifications:
          ops:
            email: {to: [a@example.com]}
        on_failure: [ops]
        tasks:
          bad:
            image: @IMAGE@
            command: [sh, -c, "exit 1"]
        """)
    res = dg.run(f, timeout=60,
                 env=env_with(DAGD_SMTP_URL="smtp://127.0.0.1:%d" % port))
    assert res.rc == 1, res
    assert res.elapsed < 35 * TIME_SCALE, res
    assert "ops" in res.err, res
    assert dg.tis()["bad"]["state"] == "failed"


def test_notification_template_error_names_the_name(dg, http_sink):
    f = dg.write("""\
        dag: @DAG@
        notifications:
          hook:
            webhook: {url: "%s/{{ params.nope }}"}
        tasks:
          tell:
            notify: hook
        """ % http_sink.url)
    res = dg.run(f, timeout=40)
    assert res.rc == 1, res
    ti = dg.tis()["tell"]
    assert ti["state"] == "failed" and "params.nope" in (ti["message"] or ""), ti
    assert http_sink.get() == []
