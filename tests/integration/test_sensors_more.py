"""The dag, http and command sensors (docs/dags.md, "Sensor tasks").

Readings taken where the contract leaves room:
- A dag sensor looks at the other DAG's run at this run's logical date minus `delta`, in
  the same state database; two `dagd run` processes sharing a state folder see each other.
- A sensor's own lines (what it saw at each check) and a probe container's output go to
  the try's log.
- An http sensor treats "nothing answers" like a wrong status: it checks again.
"""
import http.server
import socketserver
import sqlite3
import threading
import time

import pytest

from conftest import TIME_SCALE, VALGRIND, epoch_ms

DATE = "2025-01-01"


def wait_proc(p, timeout):
    try:
        out, err = p.communicate(timeout=timeout * TIME_SCALE)
    except Exception:
        p.kill()
        out, err = p.communicate()
        pytest.fail("dagd run did not finish:\n%s\n%s" % (out.decode()[-3000:], err.decode()[-3000:]))
    return p.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


def upstream(dg, name, command):
    dag_id = dg.new_dag_id(name)
    f = dg.write("""\
        dag: %s
        tasks:
          load:
            image: @IMAGE@
            command: [sh, -c, "%s"]
        """ % (dag_id, command), name="%s.yml" % name)
    return dag_id, f


def sensor_dag(dg, sensor, *extra):
    """A sensor task `wait` (more task keys in extra) and a container task after it."""
    lines = ["dag: @DAG@", "tasks:", "  wait:", "    sensor: " + sensor]
    lines += ["    " + e for e in extra]
    lines += ["  after:", "    image: @IMAGE@", "    command: [echo, after]", "    depends_on: [wait]", ""]
    return dg.write("\n".join(lines), dedent=False)


# --------------------------------------------------------------------------- dag

def wait_log(dg, task_id, text, timeout):
    """Waits until the only run's log of task_id (try 1) holds text."""
    deadline = time.monotonic() + timeout * TIME_SCALE
    while time.monotonic() < deadline:
        try:
            if text in dg.log(task_id):
                return
        except (AssertionError, OSError, sqlite3.Error):
            pass  # dagd has not made its state database, its run or the log yet
        time.sleep(0.1)
    pytest.fail("no %r in the log of %s" % (text, task_id))


@pytest.mark.skipif(VALGRIND, reason="two dagd processes under valgrind take a minute; the sensor's code paths "
                    "(no run yet, a run in an allowed state) are covered by the other dag sensor tests")
def test_dag_sensor_waits_for_the_other_run(dg):
    """The sensor waits while the other DAG has no run at its date, then succeeds once
    that run succeeded (two dagd processes sharing a state folder)."""
    up_id, up = upstream(dg, "up", "exit 0")
    f = sensor_dag(dg, "{dag: %s, interval: 300ms, timeout: %ds}" % (up_id, 30 * TIME_SCALE))
    p = dg.popen("run", f, "--state", dg.state, "--date", DATE)
    wait_log(dg, "wait", "no run of DAG '%s' at %sT00:00:00Z yet" % (up_id, DATE), 20)
    assert p.poll() is None, "the sensor did not wait: %s" % (p.communicate(),)
    assert dg.run(up, "--date", DATE).rc == 0
    rc, out, err = wait_proc(p, 30)
    assert rc == 0, (out, err)
    tis = dg.tis()
    assert tis["wait"]["state"] == "success", tis
    assert tis["after"]["state"] == "success", tis
    up_run = dg.the_run(up_id)["run_id"]
    assert "DAG '%s' run '%s' is success" % (up_id, up_run) in dg.log_lines("wait"), dg.log("wait")
    assert dg.containers() == []


def test_dag_sensor_delta_task_states_fail_fast(dg):
    """The other DAG's task failed at this run's date and succeeded a day before: with
    delta 1d the sensor succeeds; without, its failed_states fail it at once, naming the
    other run's state."""
    up_id, up = upstream(dg, "up", "test {{ ds }} = 2024-12-31")
    assert dg.run(up, "--date", DATE).rc == 1
    assert dg.run(up, "--date", "2024-12-31").rc == 0
    f = dg.write("""\
        dag: @DAG@
        tasks:
          shifted:
            sensor: {dag: %s, task: load, delta: 1d, failed_states: [failed], interval: 300ms, timeout: 60s}
          same:
            sensor: {dag: %s, task: load, failed_states: [failed, upstream_failed], interval: 300ms, timeout: 60s}
          after:
            image: @IMAGE@
            command: [echo, after]
            depends_on: [same]
        """ % (up_id, up_id))
    res = dg.run(f, "--date", DATE)
    assert res.rc == 1, res
    assert res.elapsed < 30 * TIME_SCALE, res
    tis = dg.tis()
    assert tis["shifted"]["state"] == "success", tis
    assert tis["same"]["state"] == "failed", tis
    up_run = [r["run_id"] for r in dg.runs(up_id) if r["logical_ms"] == epoch_ms(DATE)][0]
    assert tis["same"]["message"] == ("task 'load' of DAG '%s' run '%s' is failed (one of the sensor's failed_states)"
                                      % (up_id, up_run)), tis["same"]
    assert tis["after"]["state"] == "upstream_failed", tis
    assert dg.containers() == []


def test_dag_sensor_timeout_soft_fail(dg):
    """soft_fail: a timeout ends the sensor skipped (in both modes), its downstream skipped;
    without soft_fail it fails, and is not retried."""
    up_id, _ = upstream(dg, "up", "exit 0")
    t = TIME_SCALE
    f = dg.write("""\
        dag: @DAG@
        tasks:
          soft_poke:
            sensor: {dag: %s, interval: 300ms, timeout: %ds, soft_fail: true}
          soft_resched:
            sensor: {dag: %s, interval: 300ms, timeout: %ds, mode: reschedule, soft_fail: true}
          hard:
            sensor: {dag: %s, interval: 300ms, timeout: %ds}
            retries: 3
            retry_delay: 1s
          after:
            image: @IMAGE@
            command: [echo, after]
            depends_on: [soft_poke, soft_resched]
        """ % (up_id, t, up_id, t, up_id, t))
    res = dg.run(f, "--date", DATE)
    assert res.rc == 1, res
    tis = dg.tis()
    for s in ("soft_poke", "soft_resched"):
        assert tis[s]["state"] == "skipped", tis
        assert tis[s]["message"] == "skipped: sensor timed out after %ds (soft_fail)" % t, tis[s]
    assert tis["after"]["state"] == "skipped", tis
    assert tis["after"]["start_ms"] is None, tis
    assert tis["hard"]["state"] == "failed", tis
    assert tis["hard"]["message"] == "sensor timed out after %ds" % t, tis
    assert [r["try_number"] for r in dg.tries("hard")] == [1], dg.tries("hard")
    assert len(dg.tries("soft_resched")) >= 2, dg.tries("soft_resched")


# --------------------------------------------------------------------------- http

class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


@pytest.fixture
def flaky_http():
    """A GET server on 127.0.0.1. Per path: the first `fails[path]` requests get 503, the
    next `warm[path]` get 200 "status: warming", the rest 200 "status: ready"; every path
    asked is recorded."""
    state = {"fails": {}, "warm": {}, "paths": []}
    lock = threading.Lock()

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            with lock:
                state["paths"].append(self.path)
                n = state["paths"].count(self.path)
            fails = state["fails"].get(self.path, 0)
            if n <= fails:
                code, body = 503, b"starting\n"
            elif n <= fails + state["warm"].get(self.path, 0):
                code, body = 200, b"status: warming\n"
            else:
                code, body = 200, b"status: ready\n"
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = _Server(("127.0.0.1", 0), H)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    state["url"] = "http://127.0.0.1:%d" % srv.server_address[1]
    yield state
    srv.shutdown()
    srv.server_close()


def test_http_sensor_waits_for_status_and_body(dg, flaky_http):
    """Three 503s, then 200, in both modes (the URL templated); and a body that must match:
    200s with the wrong body do not count."""
    u = flaky_http["url"]
    flaky_http["fails"] = {"/poke/%s" % DATE: 3, "/resched/%s" % DATE: 3}
    flaky_http["warm"] = {"/body": 2}
    f = dg.write("""\
        dag: @DAG@
        tasks:
          poke:
            sensor: {http: "%s/poke/{{ ds }}", interval: 200ms, timeout: %ds}
          resched:
            sensor: {http: "%s/resched/{{ ds }}", interval: 200ms, timeout: %ds, mode: reschedule}
          body:
            sensor: {http: "%s/body", status: 200, body: "^status: (ready|done)$", interval: 200ms, timeout: %ds}
          after:
            image: @IMAGE@
            command: [echo, after]
            depends_on: [poke, resched, body]
        """ % (u, 30 * TIME_SCALE, u, 30 * TIME_SCALE, u, 30 * TIME_SCALE))
    res = dg.run(f, "--date", DATE)
    assert res.rc == 0, res
    tis = dg.tis()
    assert all(t["state"] == "success" for t in tis.values()), tis
    paths = flaky_http["paths"]
    assert paths.count("/poke/%s" % DATE) == 4, paths
    assert paths.count("/resched/%s" % DATE) == 4, paths
    assert paths.count("/body") == 3, paths
    assert dg.log_lines("poke").count("GET: status 503, waiting for 200") == 3, dg.log("poke")
    assert len(dg.tries("resched")) == 4, dg.tries("resched")
    assert dg.log_lines("resched", 1) == ["GET: status 503, waiting for 200"]
    assert dg.log_lines("body").count("GET: status 200, the body (16 bytes) does not match yet") == 2, dg.log("body")
    assert dg.containers() == []


def test_http_sensor_times_out(dg, flaky_http):
    """A wrong status until the timeout fails the sensor; so does a port nobody answers on,
    which is checked again until the timeout."""
    flaky_http["fails"] = {"/x": 10 ** 6}
    t = TIME_SCALE
    f = dg.write("""\
        dag: @DAG@
        tasks:
          wait:
            sensor: {http: "%s/x", status: 204, interval: 200ms, timeout: %ds}
          nobody:
            sensor: {http: "http://127.0.0.1:9/x", interval: 200ms, timeout: %ds, request_timeout: 1s}
        """ % (flaky_http["url"], t, t))
    res = dg.run(f, "--date", DATE)
    assert res.rc == 1, res
    tis = dg.tis()
    for k in ("wait", "nobody"):
        assert tis[k]["state"] == "failed", tis
        assert tis[k]["message"] == "sensor timed out after %ds" % t, tis
    assert len(flaky_http["paths"]) >= 2, flaky_http["paths"]
    assert "GET: status 503, waiting for 204" in dg.log_lines("wait")
    nobody = dg.log_lines("nobody")
    assert len(nobody) >= 2 and all(l.startswith("GET: ") for l in nobody), nobody


# --------------------------------------------------------------------------- command

def test_command_sensor_probe_container(dg):
    """The probe (the sensor's image and command, the task's volumes and env) runs once
    per check until it exits 0: it counts its runs in a bind-mounted folder and succeeds
    on the 3rd, in both modes. A probe image that does not exist fails the sensor."""
    dirs = {}
    for mode in ("poke", "reschedule"):
        d = dirs[mode] = dg.tmp / mode
        d.mkdir()
        d.chmod(0o777)
    probe = "\n".join([
        "  %s:",
        "    sensor:",
        "      image: @IMAGE@",
        "      command: [sh, -c, 'echo probe $WHO {{ ds }} >> /data/runs; echo checking; test $(wc -l < /data/runs) -ge 3']",
        "      interval: 200ms",
        "      timeout: %ds",
        "      mode: %s",
        '    volumes: ["%s:/data"]',
        "    env: {WHO: me}",
        ""])
    f = dg.write("dag: @DAG@\ntasks:\n"
                 + "".join(probe % (m, 60 * TIME_SCALE, m, dirs[m]) for m in dirs)
                 + "  missing:\n"
                 + "    sensor: {image: 'dagd-test/no-such-image:0', command: ['true'], interval: 200ms, timeout: 10s}\n"
                 + "    pull: never\n"
                 + "  after:\n    image: @IMAGE@\n    command: [echo, after]\n    depends_on: [poke, reschedule]\n",
                 dedent=False)
    res = dg.run(f, "--date", DATE)
    assert res.rc == 1, res
    tis = dg.tis()
    assert tis["poke"]["state"] == "success", tis
    assert tis["reschedule"]["state"] == "success", tis
    assert tis["after"]["state"] == "success", tis
    for d in dirs.values():
        assert (d / "runs").read_text() == ("probe me %s\n" % DATE) * 3
    lines = dg.log_lines("poke")
    assert lines.count("checking") == 3, lines
    assert lines.count("probe exited with code 1") == 2, lines
    assert [t["try_number"] for t in dg.tries("reschedule")] == [1, 2, 3], dg.tries("reschedule")
    assert dg.log_lines("reschedule", 1) == ["checking", "probe exited with code 1"]
    assert dg.log_lines("reschedule", 3) == ["checking"]
    assert tis["missing"]["state"] == "failed", tis
    assert "no-such-image" in tis["missing"]["message"], tis
    assert dg.containers() == []
