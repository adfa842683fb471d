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
import threading
import time

import pytest

from conftest import TIME_SCALE, VALGRIND

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

@pytest.mark.parametrize("delta", [None, "1d"])
def test_dag_sensor_waits_for_the_other_run(dg, delta):
    """The sensor waits while the other DAG has no run at the date, then succeeds once
    that run succeeded; with a delta, a run at this run's own date does not count."""
    up_id, up = upstream(dg, "up", "exit 0")
    up_date = "2024-12-31" if delta else DATE
    if delta:
        # a successful run of the other DAG at the sensor's own date: not the one it wants
        assert dg.run(up, "--date", DATE).rc == 0
    f = sensor_dag(dg, "{dag: %s, interval: 300ms, timeout: %ds%s}"
                   % (up_id, 30 * TIME_SCALE, ", delta: " + delta if delta else ""))
    p = dg.popen("run", f, "--state", dg.state, "--date", DATE)
    time.sleep(1.5 * TIME_SCALE)
    assert p.poll() is None, "the sensor did not wait: %s" % (p.communicate(),)
    assert dg.run(up, "--date", up_date).rc == 0
    rc, out, err = wait_proc(p, 30)
    assert rc == 0, (out, err)
    tis = dg.tis()
    assert tis["wait"]["state"] == "success", tis
    assert tis["after"]["state"] == "success", tis
    log = dg.log("wait")
    assert "no run of DAG '%s' at %sT00:00:00Z yet" % (up_id, up_date) in log, log
    assert "DAG '%s' run '" % up_id in log and "' is success" in log, log
    assert dg.containers() == []


def test_dag_sensor_task_state_and_fail_fast(dg):
    """A failed_state of the other run's task fails the sensor at once, naming the state."""
    up_id, up = upstream(dg, "up", "exit 3")
    assert dg.run(up, "--date", DATE).rc == 1
    f = sensor_dag(dg, "{dag: %s, task: load, failed_states: [failed, upstream_failed], interval: 300ms, "
                   "timeout: 60s}" % up_id)
    res = dg.run(f, "--date", DATE)
    assert res.rc == 1, res
    assert res.elapsed < 20 * TIME_SCALE, res
    tis = dg.tis()
    assert tis["wait"]["state"] == "failed", tis
    msg = tis["wait"]["message"]
    assert "task 'load' of DAG '%s'" % up_id in msg and "is failed" in msg, msg
    assert "failed_states" in msg, msg
    assert tis["after"]["state"] == "upstream_failed", tis
    assert dg.containers() == []


@pytest.mark.parametrize("mode", ["poke", "reschedule"])
def test_dag_sensor_soft_fail_times_out_skipped(dg, mode):
    """soft_fail: a timeout ends the sensor skipped (its downstream skipped too), the run
    succeeds; without it the sensor fails."""
    up_id, _ = upstream(dg, "up", "exit 0")
    f = sensor_dag(dg, "{dag: %s, interval: 300ms, timeout: 1s, mode: %s, soft_fail: true}" % (up_id, mode))
    res = dg.run(f, "--date", DATE)
    assert res.rc == 0, res
    tis = dg.tis()
    assert tis["wait"]["state"] == "skipped", tis
    assert "timed out" in tis["wait"]["message"] and "soft_fail" in tis["wait"]["message"], tis
    assert tis["after"]["state"] == "skipped", tis
    assert tis["after"]["start_ms"] is None, tis


def test_dag_sensor_timeout_without_soft_fail_fails_without_retry(dg):
    up_id, _ = upstream(dg, "up", "exit 0")
    f = sensor_dag(dg, "{dag: %s, interval: 300ms, timeout: 1s}" % up_id, "retries: 3", "retry_delay: 1s")
    res = dg.run(f, "--date", DATE)
    assert res.rc == 1, res
    tis = dg.tis()
    assert tis["wait"]["state"] == "failed", tis
    assert tis["wait"]["message"] == "sensor timed out after 1s", tis
    assert [t["try_number"] for t in dg.tries("wait")] == [1], dg.tries("wait")


# --------------------------------------------------------------------------- http

class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


@pytest.fixture
def flaky_http():
    """A GET server on 127.0.0.1: /ready answers 503 to the first `fail_first` requests,
    then 200 with body `body`; records the paths asked."""
    state = {"n": 0, "fail_first": 3, "body": b"status: ready\n", "paths": []}
    lock = threading.Lock()

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            with lock:
                state["paths"].append(self.path)
                state["n"] += 1
                n = state["n"]
            code, body = (503, b"starting\n") if n <= state["fail_first"] else (200, state["body"])
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


@pytest.mark.parametrize("mode", ["poke", "reschedule"])
def test_http_sensor_waits_for_status(dg, flaky_http, mode):
    f = sensor_dag(dg, '{http: "%s/ready/{{ ds }}", interval: 200ms, timeout: %ds, mode: %s}'
                   % (flaky_http["url"], 20 * TIME_SCALE, mode))
    res = dg.run(f, "--date", DATE)
    assert res.rc == 0, res
    tis = dg.tis()
    assert tis["wait"]["state"] == "success", tis
    assert tis["after"]["state"] == "success", tis
    # templated URL; three 503s, then the 200
    assert flaky_http["paths"] == ["/ready/%s" % DATE] * 4, flaky_http["paths"]
    if mode == "poke":
        assert dg.log_lines("wait").count("GET: status 503, waiting for 200") == 3, dg.log("wait")
    else:
        assert len(dg.tries("wait")) == 4, dg.tries("wait")
        assert dg.log_lines("wait", 1) == ["GET: status 503, waiting for 200"]


def test_http_sensor_body_match(dg, flaky_http):
    """The body must match: the 200s with the wrong body do not count."""
    flaky_http["fail_first"] = 0
    flaky_http["body"] = b"status: warming\n"

    def later():
        time.sleep(1.0 * TIME_SCALE)
        flaky_http["body"] = b"status: ready\n"
    th = threading.Thread(target=later, daemon=True)
    th.start()
    f = sensor_dag(dg, '{http: "%s/x", status: 200, body: "^status: (ready|done)$", interval: 200ms, timeout: %ds}'
                   % (flaky_http["url"], 20 * TIME_SCALE))
    res = dg.run(f, "--date", DATE)
    th.join()
    assert res.rc == 0, res
    assert dg.tis()["wait"]["state"] == "success"
    assert len(flaky_http["paths"]) >= 2, flaky_http["paths"]
    assert "does not match yet" in dg.log("wait")


def test_http_sensor_times_out_and_unreachable_is_not_yet(dg, flaky_http):
    """A wrong status until the timeout fails the sensor; so does a port nobody answers on,
    after checking again until the timeout."""
    flaky_http["fail_first"] = 10 ** 6
    f = dg.write("""\
        dag: @DAG@
        tasks:
          wait:
            sensor: {http: "%s/x", status: 204, interval: 200ms, timeout: 1s}
          nobody:
            sensor: {http: "http://127.0.0.1:9/x", interval: 200ms, timeout: 1s, request_timeout: 1s}
        """ % flaky_http["url"])
    res = dg.run(f, "--date", DATE)
    assert res.rc == 1, res
    tis = dg.tis()
    for t in ("wait", "nobody"):
        assert tis[t]["state"] == "failed", tis
        assert tis[t]["message"] == "sensor timed out after 1s", tis
    assert len(flaky_http["paths"]) >= 3, flaky_http["paths"]
    assert "GET: status 503, waiting for 204" in dg.log("wait")
    assert dg.log_lines("nobody")[0].startswith("GET: "), dg.log("nobody")


# --------------------------------------------------------------------------- command

@pytest.mark.parametrize("mode", ["poke", "reschedule"])
def test_command_sensor_probe_container(dg, mode):
    """The probe (the task's image, volumes and env) runs once per check until it exits 0:
    it counts its runs in a bind-mounted folder and succeeds on the 3rd."""
    shared = dg.tmp / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    f = dg.write("""\
        dag: @DAG@
        tasks:
          wait:
            sensor:
              image: @IMAGE@
              command: [sh, -c, 'echo probe $WHO {{ ds }} >> /data/runs; echo checking; test $(wc -l < /data/runs) -ge 3']
              interval: 200ms
              timeout: %ds
              mode: %s
            volumes: ["%s:/data"]
            env: {WHO: me}
          after:
            image: @IMAGE@
            command: [echo, after]
            depends_on: [wait]
        """ % (60 * TIME_SCALE, mode, shared))
    res = dg.run(f, "--date", DATE)
    assert res.rc == 0, res
    tis = dg.tis()
    assert tis["wait"]["state"] == "success", tis
    assert tis["after"]["state"] == "success", tis
    assert (shared / "runs").read_text() == ("probe me %s\n" % DATE) * 3
    if mode == "poke":
        lines = dg.log_lines("wait")
        assert lines.count("checking") == 3, lines
        assert lines.count("probe exited with code 1") == 2, lines
    else:
        assert [t["try_number"] for t in dg.tries("wait")] == [1, 2, 3], dg.tries("wait")
        assert dg.log_lines("wait", 3) == ["checking"]
    assert dg.containers() == []


def test_command_sensor_bad_image_fails(dg):
    f = sensor_dag(dg, "{image: 'dagd-test/no-such-image:0', command: ['true'], interval: 200ms, timeout: 10s}",
                   "pull: never")
    res = dg.run(f, "--date", DATE)
    assert res.rc == 1, res
    tis = dg.tis()
    assert tis["wait"]["state"] == "failed", tis
    assert "no-such-image" in tis["wait"]["message"], tis
    assert dg.containers() == []
