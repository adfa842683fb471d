"""The REST API (docs/api.md) of a real `dagd serve`, through real HTTP (urllib), against a real
Docker engine: every endpoint, and every error class.

Readings where the contract leaves room:
- The token the server writes (no token configured) is <state>/token, mode 0600; surrounding
  whitespace is not part of it.
- Clearing answers the task instances it cleared ({"task_instances": [...], ...}); a cleared
  task runs again with the next try number.
- A backfill creates runs with run_type "backfill" for the scheduled logical dates in
  [from, to].
- /metrics has the gauges dagd_dag_runs{state=...} and dagd_task_instances{state=...}.
"""
import json
import re
import shutil
import socket
import stat
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

import serve_helpers
from conftest import IMAGE, TIME_SCALE

ERROR_CT = "application/json"


class Reply:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<HTTP %d %s>" % (self.status, self.text[:2000])


class Server:
    """A `dagd serve` (started by serve_helpers.Server) with raw HTTP access: every reply,
    whatever its status, comes back as a Reply."""

    def __init__(self, dg, dags_dir):
        self.dg = dg
        self.daemon = serve_helpers.Server(dg, dags_dir).start(timeout=30)
        self.port = self.daemon.port
        self.base = "http://127.0.0.1:%d" % self.port
        tok = dg.state / "token"
        assert tok.is_file(), "no token file at %s" % tok
        self.token_mode = stat.S_IMODE(tok.stat().st_mode)
        self.token = tok.read_text().strip()
        assert self.token

    def log(self):
        return self.daemon.stderr()[-6000:]

    def request(self, method, path, body=None, raw=None, auth=True, token=None, headers=None,
                timeout=30):
        url = self.base + path
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if auth:
            req.add_header("Authorization", "Bearer " + (token if token is not None else self.token))
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=timeout * TIME_SCALE) as resp:
                return Reply(resp.status, resp.headers, resp.read())
        except urllib.error.HTTPError as e:
            return Reply(e.code, e.headers, e.read())

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def ok(self, method, path, body=None, **kw):
        r = self.request(method, path, body, **kw)
        assert r.status == 200, "%s %s → %r\n%s" % (method, path, r, self.log())
        return r

    def ok_json(self, method, path, body=None, **kw):
        r = self.ok(method, path, body, **kw)
        assert r.headers["Content-Type"].startswith("application/json"), r.headers
        return r.json()

    def wait_run(self, dag, run, states=("success", "failed"), timeout=90):
        deadline = time.monotonic() + timeout * TIME_SCALE
        while True:
            got = self.ok_json("GET", "/api/v1/dags/%s/runs/%s" % (dag, q(run)))
            if got["state"] in states:
                return got
            assert time.monotonic() < deadline, "run %s still %s:\n%s" % (run, got, self.log())
            time.sleep(0.2)

    def wait_task(self, dag, run, task, states, timeout=90):
        deadline = time.monotonic() + timeout * TIME_SCALE
        while True:
            got = self.ok_json("GET", "/api/v1/dags/%s/runs/%s/tasks/%s" % (dag, q(run), task))
            if got["state"] in states:
                return got
            assert time.monotonic() < deadline, "task %s still %s:\n%s" % (task, got, self.log())
            time.sleep(0.1)


def q(s):
    return urllib.parse.quote(s, safe="")


def assert_error(r, status):
    assert r.status == status, r
    assert r.headers["Content-Type"].startswith(ERROR_CT), r.headers
    o = r.json()
    assert isinstance(o, dict) and set(o) >= {"error", "detail"}, o
    assert isinstance(o["error"], str) and o["error"], o
    assert isinstance(o["detail"], str), o
    return o


def dags_dir(dg):
    d = dg.tmp / "dags"
    d.mkdir(exist_ok=True)
    return d


CHAIN = """\
    dag: @DAG@
    description: chain for the API test
    tags: [api, test]
    tasks:
      a:
        image: @IMAGE@
        command: [sh, -c, "echo conf={{ dag_run.conf.x }}"]
      b:
        image: @IMAGE@
        command: [sh, -c, "echo from-b"]
        depends_on: [a]
    """


# --------------------------------------------------------------------------- errors and auth

def _curl_413(dg, srv, path):
    big = dg.tmp / "big.json"
    big.write_bytes(b"{\"conf\": {\"x\": \"" + b"a" * (1024 * 1024 + 10) + b"\"}}")
    cp = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
                         "-H", "Authorization: Bearer " + srv.token, "--data-binary", "@%s" % big,
                         srv.base + path], capture_output=True, text=True, timeout=60)
    assert cp.stdout == "413", cp


def test_auth_token_and_error_classes(dg):
    d = dags_dir(dg)
    dg.write(CHAIN, name="dags/chain.yml")
    srv = Server(dg, d)
    assert srv.token_mode == 0o600, oct(srv.token_mode)

    # health needs no token
    h = srv.get("/api/v1/health", auth=False)
    assert h.status == 200 and h.json()["status"] == "ok", h
    assert h.json()["dags"] == 1

    # 401: missing, wrong, wrong scheme, on every kind of path (even unknown ones)
    for path in ["/api/v1/dags", "/metrics", "/api/v1/dags/" + dg.dag_id, "/api/v1/nope"]:
        for kw in [dict(auth=False), dict(token=srv.token + "x"), dict(token=srv.token[:-1]),
                   dict(auth=False, headers={"Authorization": "Basic " + srv.token})]:
            r = srv.get(path, **kw)
            assert_error(r, 401)
            assert r.headers["WWW-Authenticate"].startswith("Bearer"), r.headers
    assert_error(srv.request("PATCH", "/api/v1/dags/" + dg.dag_id, {"is_paused": True},
                             auth=False), 401)
    # the DAG was not paused by the refused request
    assert srv.ok_json("GET", "/api/v1/dags/" + dg.dag_id)["is_paused"] is False

    # 404: unknown path, dag, run, task, try
    assert_error(srv.get("/api/v1/nope"), 404)
    assert_error(srv.get("/api/v2/dags"), 404)
    assert_error(srv.get("/api/v1/dags/" + dg.dag_id + "/runs/x/y/z"), 404)
    assert_error(srv.get("/api/v1/dags/no_such_dag"), 404)
    assert_error(srv.get("/api/v1/dags/no_such_dag/runs"), 404)
    assert_error(srv.get("/api/v1/dags/no_such_dag/source"), 404)
    assert_error(srv.request("POST", "/api/v1/dags/no_such_dag/runs", {}), 404)
    assert_error(srv.get("/api/v1/dags/%s/runs/no_such_run" % dg.dag_id), 404)
    assert_error(srv.get("/api/v1/dags/%s/runs/no_such_run/tasks" % dg.dag_id), 404)
    assert_error(srv.get("/api/v1/dags/%s/runs/no_such_run/tasks/a/logs/1" % dg.dag_id), 404)

    # 405 with Allow
    for method, path, allow in [("DELETE", "/api/v1/dags/" + dg.dag_id, {"GET", "PATCH"}),
                                ("POST", "/api/v1/dags", {"GET"}),
                                ("PUT", "/api/v1/dags/%s/runs" % dg.dag_id, {"GET", "POST"}),
                                ("GET", "/api/v1/dags/%s/backfill" % dg.dag_id, {"POST"}),
                                ("POST", "/api/v1/health", {"GET"})]:
        r = srv.request(method, path)
        assert_error(r, 405)
        assert {m.strip() for m in r.headers["Allow"].split(",")} == allow, r.headers

    # 400: malformed JSON, non-object bodies, wrong types, unknown fields, bad limit/offset
    dag = "/api/v1/dags/" + dg.dag_id
    for raw in [b"{", b"{\"is_paused\": tru}", b"\xff\xfe", b"not json", b"{} {}"]:
        assert_error(srv.request("PATCH", dag, raw=raw), 400)
    for body in [[], [True], "x", 1, None]:
        assert_error(srv.request("PATCH", dag, raw=json.dumps(body).encode()), 400)
    for body in [{}, {"is_paused": "yes"}, {"is_paused": 1}, {"is_paused": None},
                 {"is_paused": True, "extra": 1}]:
        assert_error(srv.request("PATCH", dag, body), 400)
    o = assert_error(srv.request("PATCH", dag, {"is_pausd": True}), 400)
    assert "is_paused" in o["detail"], o
    runs = dag + "/runs"
    for body in [{"conf": "x"}, {"conf": []}, {"logical_date": 5}, {"logical_date": None}]:
        assert_error(srv.request("POST", runs, body), 400)
    for qs in ["limit=0", "limit=1001", "limit=-1", "limit=abc", "limit=", "limit=1.5",
               "offset=-1", "offset=x", "limit=99999999999999999999"]:
        assert_error(srv.get("/api/v1/dags?" + qs), 400)
        assert_error(srv.get(runs + "?" + qs), 400)
    assert srv.ok_json("GET", "/api/v1/dags?limit=1000&offset=0")["total_entries"] == 1
    assert srv.ok_json("GET", "/api/v1/dags?limit=1&offset=5")["dags"] == []
    assert_error(srv.get(dag + "/runs/r/tasks/a/logs/x"), 400)
    assert_error(srv.get(dag + "/runs/r/tasks/a/logs/0"), 400)
    assert_error(srv.get(dag + "/runs/r/tasks/a/logs/1?follow=maybe"), 400)

    # 413: declared and chunked
    # a declared length over the cap is refused from the headers alone, before any body
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sk:
        sk.sendall(("POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                    "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                    % (runs, srv.token, 1024 * 1024 + 1)).encode())
        head = sk.recv(65536).decode("latin-1")
    assert head.startswith("HTTP/1.1 413 "), head
    assert "application/json" in head and '"error"' in head, head
    # with "Expect: 100-continue" (as curl sends for big bodies) the answer is 413, not 100
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sk:
        sk.sendall(("POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                    "Expect: 100-continue\r\nContent-Length: %d\r\n\r\n"
                    % (runs, srv.token, 5 * 1024 * 1024)).encode())
        head = sk.recv(65536).decode("latin-1")
    assert head.startswith("HTTP/1.1 413 "), head
    if shutil.which("curl"):
        _curl_413(dg, srv, runs)


    def chunks():
        for _ in range(20):
            yield b"a" * 65536
    req = urllib.request.Request(srv.base + runs, data=chunks(), method="POST")
    req.add_header("Authorization", "Bearer " + srv.token)
    req.add_header("Transfer-Encoding", "chunked")
    try:
        urllib.request.urlopen(req, timeout=30)
        pytest.fail("a chunked body over 1 MiB was accepted")
    except urllib.error.HTTPError as e:
        assert e.code == 413, e
    # a body just under the cap is read (and refused for its content, not its size)
    under = b"{\"conf\": {\"x\": \"" + b"a" * (1024 * 1024 - 100) + b"\"}, \"bad\": 1}"
    assert_error(srv.request("POST", runs, raw=under), 400)

    # nothing of the above created a run, and the server still answers
    assert srv.ok_json("GET", runs)["total_entries"] == 0
    assert srv.get("/api/v1/health", auth=False).status == 200


# --------------------------------------------------------------------------- dags

def test_dags_pause_source_import_errors(dg):
    d = dags_dir(dg)
    f = dg.write(CHAIN, name="dags/chain.yml")
    broken = d / "broken.yml"
    broken.write_text("dag: %s_broken\ntasks:\n  a:\n    image: %s\n    retries: lots\n"
                      % (dg.dag_id, IMAGE))
    srv = Server(dg, d)

    lst = srv.ok_json("GET", "/api/v1/dags")
    assert lst["total_entries"] == 1 and len(lst["dags"]) == 1, lst
    dag = lst["dags"][0]
    assert dag["dag_id"] == dg.dag_id
    for k in ["dag_id", "description", "tags", "schedule", "timezone", "is_paused",
              "next_run_logical_date", "file"]:
        assert k in dag, (k, dag)
    assert dag["description"] == "chain for the API test"
    assert dag["tags"] == ["api", "test"]
    assert dag["schedule"] is None and dag["next_run_logical_date"] is None
    assert dag["is_paused"] is False
    assert dag["file"].endswith("chain.yml")
    assert srv.ok_json("GET", "/api/v1/dags/" + dg.dag_id) == dag

    # pause / unpause, visible in get and list
    p = srv.ok_json("PATCH", "/api/v1/dags/" + dg.dag_id, {"is_paused": True})
    assert p["dag_id"] == dg.dag_id and p["is_paused"] is True
    assert srv.ok_json("GET", "/api/v1/dags/" + dg.dag_id)["is_paused"] is True
    assert srv.ok_json("GET", "/api/v1/dags")["dags"][0]["is_paused"] is True
    p = srv.ok_json("PATCH", "/api/v1/dags/" + dg.dag_id, {"is_paused": False})
    assert p["is_paused"] is False
    assert srv.ok_json("GET", "/api/v1/dags/" + dg.dag_id)["is_paused"] is False

    # source: the file's text
    s = srv.ok("GET", "/api/v1/dags/%s/source" % dg.dag_id)
    assert s.headers["Content-Type"].split(";")[0] in ("text/plain", "application/yaml")
    assert s.text == f.read_text()

    # import errors: the broken file with line and column of the bad value
    ie = srv.ok_json("GET", "/api/v1/import-errors")
    assert ie["total_entries"] == len(ie["import_errors"]) >= 1, ie
    mine = [e for e in ie["import_errors"] if e["filename"].endswith("broken.yml")]
    assert mine, ie
    e = mine[0]
    assert (e["line"], e["col"]) == (5, 14), e
    assert "retries" in e["message"], e
    assert "broken.yml:5:14" in e["stack_trace"], e

    # percent-encoded path segments decode to the same DAG
    enc = "".join("%%%02X" % ord(ch) for ch in dg.dag_id)
    assert srv.ok_json("GET", "/api/v1/dags/" + enc)["dag_id"] == dg.dag_id


# --------------------------------------------------------------------------- runs, tasks, logs

def test_trigger_tasks_logs_metrics_conflict(dg):
    d = dags_dir(dg)
    dg.write(CHAIN, name="dags/chain.yml")
    srv = Server(dg, d)
    runs_path = "/api/v1/dags/%s/runs" % dg.dag_id

    run = srv.ok_json("POST", runs_path, {"conf": {"x": "hello api"}})
    assert run["dag_id"] == dg.dag_id and run["run_type"] == "manual", run
    rid = run["dag_run_id"]
    assert rid.startswith("manual__"), rid
    assert run["conf"] == {"x": "hello api"}
    assert run["state"] in ("queued", "running")
    for k in ["logical_date", "data_interval_start", "data_interval_end", "start_date",
              "end_date"]:
        assert k in run, (k, run)

    lst = srv.ok_json("GET", runs_path)
    assert [r["dag_run_id"] for r in lst["dag_runs"]] == [rid] and lst["total_entries"] == 1

    done = srv.wait_run(dg.dag_id, rid)
    assert done["state"] == "success", (done, srv.log())
    assert done["end_date"] and done["conf"] == {"x": "hello api"}
    ts = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z"
    for k in ["logical_date", "start_date", "end_date"]:
        assert re.fullmatch(ts, done[k]), (k, done[k])

    # the run id with ':' written raw and '+'-free, encoded fully: same run
    raw_path = "/api/v1/dags/%s/runs/%s" % (dg.dag_id, urllib.parse.quote(rid, safe=":"))
    assert srv.ok_json("GET", raw_path)["dag_run_id"] == rid

    tis = srv.ok_json("GET", "%s/%s/tasks" % (runs_path, q(rid)))
    assert tis["total_entries"] == 2
    by = {t["task_id"]: t for t in tis["task_instances"]}
    assert set(by) == {"a", "b"}
    a = srv.ok_json("GET", "%s/%s/tasks/a" % (runs_path, q(rid)))
    assert a == by["a"]
    for k in ["dag_id", "dag_run_id", "task_id", "state", "try_number", "max_tries",
              "start_date", "end_date", "duration", "exit_code", "container_id",
              "container_name", "image", "output"]:
        assert k in a, (k, a)
    assert a["state"] == "success" and a["try_number"] == 1 and a["exit_code"] == 0
    assert a["image"] == IMAGE and a["output"] == "conf=hello api"
    assert a["dag_run_id"] == rid and a["dag_id"] == dg.dag_id
    assert isinstance(a["duration"], (int, float)) and a["duration"] >= 0

    # logs: text, as the file on disk; unknown try / task → 404
    lg = srv.ok("GET", "%s/%s/tasks/a/logs/1" % (runs_path, q(rid)))
    assert lg.headers["Content-Type"].startswith("text/plain")
    assert lg.text == dg.log("a", 1, run_id=rid)
    assert "conf=hello api" in lg.text
    # follow on a finished try is the same text, and ends
    lf = srv.ok("GET", "%s/%s/tasks/b/logs/1?follow=1" % (runs_path, q(rid)))
    assert lf.text.strip() == "from-b"
    assert_error(srv.get("%s/%s/tasks/a/logs/2" % (runs_path, q(rid))), 404)
    assert_error(srv.get("%s/%s/tasks/nope" % (runs_path, q(rid))), 404)
    assert_error(srv.get("%s/%s/tasks/nope/logs/1" % (runs_path, q(rid))), 404)
    assert_error(srv.request("PATCH", "%s/%s/tasks/nope" % (runs_path, q(rid)),
                             {"state": "success"}), 404)

    # a logical date that already has a run → 409
    first = srv.ok_json("POST", runs_path, {"logical_date": "2025-03-04T05:06:07Z",
                                            "conf": {"x": "dated"}})
    assert first["logical_date"].startswith("2025-03-04T05:06:07")
    assert_error(srv.request("POST", runs_path, {"logical_date": "2025-03-04T05:06:07Z",
                                                 "conf": {"x": "again"}}), 409)
    srv.wait_run(dg.dag_id, first["dag_run_id"])
    assert srv.ok_json("GET", runs_path)["total_entries"] == 2
    page = srv.ok_json("GET", runs_path + "?limit=1&offset=1")
    assert len(page["dag_runs"]) == 1 and page["total_entries"] == 2

    # metrics: runs and task instances by state
    m = srv.ok("GET", "/metrics")
    assert m.headers["Content-Type"].startswith("text/plain")
    assert "version=0.0.4" in m.headers["Content-Type"]
    runs_ok = re.search(r'^dagd_dag_runs\{state="success"\} (\d+)', m.text, re.M)
    tis_ok = re.search(r'^dagd_task_instances\{state="success"\} (\d+)', m.text, re.M)
    assert runs_ok and int(runs_ok.group(1)) == 2, m.text
    assert tis_ok and int(tis_ok.group(1)) == 4, m.text

    h = srv.get("/api/v1/health", auth=False).json()
    assert h["runs_running"] == 0 and h["tasks_running"] == 0, h


COUNTER = """\
    dag: @DAG@
    tasks:
      count:
        image: @IMAGE@
        command: [sh, -c, "for i in 1 2 3; do echo $i; sleep 1; done"]
    """


def _follow(srv, dg, rid):
    """GET ...?follow=1 → [(seconds since start, line)], and whether it ended on its own."""
    url = srv.base + "/api/v1/dags/%s/runs/%s/tasks/count/logs/1?follow=1" % (dg.dag_id, q(rid))
    req = urllib.request.Request(url)
    req.add_header("Authorization", "Bearer " + srv.token)
    got = []
    t0 = time.monotonic()
    with urllib.request.urlopen(req, timeout=30 * TIME_SCALE) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        while True:
            line = resp.readline()
            if not line:
                break
            got.append((time.monotonic() - t0, line.decode().rstrip("\n")))
    return got


def test_log_follow_streams_until_the_try_ends(dg):
    d = dags_dir(dg)
    dg.write(COUNTER, name="dags/counter.yml")
    srv = Server(dg, d)
    rid = srv.ok_json("POST", "/api/v1/dags/%s/runs" % dg.dag_id, {})["dag_run_id"]
    srv.wait_task(dg.dag_id, rid, "count", ("running",))
    got = _follow(srv, dg, rid)
    assert [l for _, l in got] == ["1", "2", "3"], got
    # the stream ended because the try ended, not before
    ti = srv.ok_json("GET", "/api/v1/dags/%s/runs/%s/tasks/count" % (dg.dag_id, q(rid)))
    assert ti["state"] == "success", ti
    assert srv.get("/api/v1/health", auth=False).status == 200


def test_log_follow_is_incremental(dg):
    """Lines reach a follower as the container writes them (about a second apart), not all
    at the end of the try."""
    d = dags_dir(dg)
    dg.write(COUNTER, name="dags/counter.yml")
    srv = Server(dg, d)
    rid = srv.ok_json("POST", "/api/v1/dags/%s/runs" % dg.dag_id, {})["dag_run_id"]
    srv.wait_task(dg.dag_id, rid, "count", ("running",))
    got = _follow(srv, dg, rid)
    assert [l for _, l in got] == ["1", "2", "3"], got
    spread = got[-1][0] - got[0][0]
    assert spread >= 1.0, "all lines arrived together (%.2fs apart): %r" % (spread, got)


def test_follow_client_going_away_and_many_followers(dg):
    d = dags_dir(dg)
    dg.write(COUNTER.replace("1 2 3", "1 2 3 4"), name="dags/counter.yml")
    srv = Server(dg, d)
    rid = srv.ok_json("POST", "/api/v1/dags/%s/runs" % dg.dag_id, {})["dag_run_id"]
    srv.wait_task(dg.dag_id, rid, "count", ("running",))
    path = "/api/v1/dags/%s/runs/%s/tasks/count/logs/1?follow=1" % (dg.dag_id, q(rid))
    # clients that hang up mid-stream
    for _ in range(5):
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n"
                   % (path, srv.token)).encode())
        s.settimeout(2)
        try:
            s.recv(100)
        except socket.timeout:
            pass
        s.close()
    # while streams are open, the API keeps answering other requests promptly
    t0 = time.monotonic()
    assert srv.ok_json("GET", "/api/v1/dags")["total_entries"] == 1
    assert time.monotonic() - t0 < 2
    got = _follow(srv, dg, rid)
    assert [l for _, l in got][-1] == "4", got
    assert srv.get("/api/v1/health", auth=False).status == 200


# --------------------------------------------------------------------------- cancel, clear, mark

def test_cancel_clear_mark(dg):
    d = dags_dir(dg)
    dg.write("""\
        dag: @DAG@
        tasks:
          slow:
            image: @IMAGE@
            command: [sh, -c, "echo started; sleep 300"]
          after:
            image: @IMAGE@
            command: [sh, -c, "echo after"]
            depends_on: [slow]
        """, name="dags/slow.yml")
    srv = Server(dg, d)
    runs_path = "/api/v1/dags/%s/runs" % dg.dag_id
    rid = srv.ok_json("POST", runs_path, {})["dag_run_id"]
    srv.wait_task(dg.dag_id, rid, "slow", ("running",))
    assert dg.containers(running_only=True), "no container running for the slow task"

    c = srv.ok_json("POST", "%s/%s/cancel" % (runs_path, q(rid)))
    assert c["dag_run_id"] == rid
    done = srv.wait_run(dg.dag_id, rid, timeout=60)
    assert done["state"] == "failed", done
    deadline = time.monotonic() + 30 * TIME_SCALE
    while dg.containers(running_only=True):
        assert time.monotonic() < deadline, "the cancelled task's container still runs"
        time.sleep(0.5)
    tis = {t["task_id"]: t for t in srv.ok_json("GET", "%s/%s/tasks" % (runs_path, q(rid)))
           ["task_instances"]}
    assert tis["slow"]["state"] == "failed", tis
    assert tis["after"]["state"] != "success", tis
    # cancelling a finished run conflicts
    assert_error(srv.request("POST", "%s/%s/cancel" % (runs_path, q(rid))), 409)

    # mark: PATCH state
    assert_error(srv.request("PATCH", "%s/%s/tasks/slow" % (runs_path, q(rid)),
                             {"state": "bogus"}), 422)
    assert_error(srv.request("PATCH", "%s/%s/tasks/slow" % (runs_path, q(rid)),
                             {"state": 1}), 400)
    m = srv.ok_json("PATCH", "%s/%s/tasks/slow" % (runs_path, q(rid)), {"state": "success"})
    assert m["task_id"] == "slow" and m["state"] == "success", m
    assert srv.ok_json("GET", "%s/%s/tasks/slow" % (runs_path, q(rid)))["state"] == "success"

    # clear "slow" with its downstream: it runs again as try 2 (cancel it again afterwards)
    assert_error(srv.request("POST", "%s/%s/clear" % (runs_path, q(rid)), {"tasks": "slow"}), 400)
    assert_error(srv.request("POST", "%s/%s/clear" % (runs_path, q(rid)),
                             {"downstream": "yes"}), 400)
    cl = srv.ok_json("POST", "%s/%s/clear" % (runs_path, q(rid)),
                     {"tasks": ["slow"], "downstream": True})
    assert {t["task_id"] for t in cl["task_instances"]} == {"slow", "after"}, cl
    ti = srv.wait_task(dg.dag_id, rid, "slow", ("running",))
    assert ti["try_number"] == 2, ti
    srv.ok_json("POST", "%s/%s/cancel" % (runs_path, q(rid)))
    assert srv.wait_run(dg.dag_id, rid, timeout=60)["state"] == "failed"
    # both tries keep their own log
    for n in (1, 2):
        lg = srv.ok("GET", "%s/%s/tasks/slow/logs/%d" % (runs_path, q(rid), n))
        assert lg.text.startswith("started"), (n, lg)
    assert_error(srv.get("%s/%s/tasks/slow/logs/3" % (runs_path, q(rid))), 404)


# --------------------------------------------------------------------------- backfill

def test_backfill(dg):
    d = dags_dir(dg)
    dg.write("""\
        dag: @DAG@
        schedule: "@daily"
        start_date: 2025-01-01
        catchup: false
        tasks:
          t:
            image: @IMAGE@
            command: [sh, -c, "echo {{ ds }}"]
        """, name="dags/daily.yml")
    srv = Server(dg, d)
    path = "/api/v1/dags/%s/backfill" % dg.dag_id
    assert_error(srv.request("POST", path, {"from": "2025-01-01"}), 400)
    assert_error(srv.request("POST", path, {"from": 1, "to": 2}), 400)
    assert_error(srv.request("POST", path, {"from": "2025-01-05", "to": "2025-01-01"}), 422)
    assert_error(srv.request("POST", "/api/v1/dags/nope/backfill",
                             {"from": "2025-01-01", "to": "2025-01-02"}), 404)

    bf = srv.ok_json("POST", path, {"from": "2025-01-01", "to": "2025-01-03"})
    assert bf["total_entries"] == 3 == len(bf["dag_runs"]), bf
    assert sorted(r["logical_date"][:10] for r in bf["dag_runs"]) == \
        ["2025-01-01", "2025-01-02", "2025-01-03"], bf
    assert {r["run_type"] for r in bf["dag_runs"]} == {"backfill"}, bf
    for r in bf["dag_runs"]:
        done = srv.wait_run(dg.dag_id, r["dag_run_id"])
        assert done["state"] == "success", done
        lg = srv.ok("GET", "/api/v1/dags/%s/runs/%s/tasks/t/logs/1"
                    % (dg.dag_id, q(r["dag_run_id"])))
        assert lg.text.strip() == r["logical_date"][:10]
    # the same range again never duplicates runs: it answers the existing ones, nothing new,
    # or a conflict
    again = srv.request("POST", path, {"from": "2025-01-01", "to": "2025-01-03"})
    assert again.status in (200, 409), again
    if again.status == 200:
        assert {r["dag_run_id"] for r in again.json()["dag_runs"]} <= \
            {r["dag_run_id"] for r in bf["dag_runs"]}, again
    runs = srv.ok_json("GET", "/api/v1/dags/%s/runs" % dg.dag_id)["dag_runs"]
    assert len([r for r in runs if r["run_type"] == "backfill"]) == 3


# --------------------------------------------------------------------------- one run per date

DAILY = """\
    dag: @DAG@
    schedule: "@daily"
    start_date: 2025-01-01
    paused: true
    tasks:
      t:
        image: @IMAGE@
        command: [sh, -c, "echo {{ ds }} {{ data_interval_start }} {{ data_interval_end }}"]
    """


def test_one_logical_date_one_run(dg):
    """A trigger or a backfill for a logical date that has a run makes no second run: the
    trigger is refused with 409 naming the run, the backfill reports it as existing; asked
    for a rerun, that run is cleared and runs again under its own id."""
    d = dags_dir(dg)
    dg.write(DAILY, name="dags/daily.yml")
    srv = Server(dg, d)
    runs_path = "/api/v1/dags/%s/runs" % dg.dag_id
    path = "/api/v1/dags/%s/backfill" % dg.dag_id

    bf = srv.ok_json("POST", path, {"from": "2025-01-01", "to": "2025-01-02"})
    ids = ["backfill__2025-01-01T00:00:00Z", "backfill__2025-01-02T00:00:00Z"]
    assert [r["dag_run_id"] for r in bf["dag_runs"]] == ids, bf
    assert bf["created"] == ids and bf["existing"] == [] and bf["cleared"] == [], bf
    for rid in ids:
        assert srv.wait_run(dg.dag_id, rid)["state"] == "success"

    # a trigger for a backfilled date: 409, naming the run that has it
    e = assert_error(srv.request("POST", runs_path, {"logical_date": "2025-01-02"}), 409)
    assert "backfill__2025-01-02T00:00:00Z" in e["detail"] and "rerun" in e["detail"], e
    # a trigger for a new date, then a backfill over it and over the backfilled dates
    manual = srv.ok_json("POST", runs_path, {"logical_date": "2025-01-03T00:00:00Z"})
    assert manual["dag_run_id"] == "manual__2025-01-03T00:00:00Z", manual
    srv.wait_run(dg.dag_id, manual["dag_run_id"])
    bf = srv.ok_json("POST", path, {"from": "2024-12-30", "to": "2025-01-04"})
    assert [r["dag_run_id"] for r in bf["dag_runs"]] == ids + [manual["dag_run_id"],
                                                               "backfill__2025-01-04T00:00:00Z"], bf
    assert bf["created"] == ["backfill__2025-01-04T00:00:00Z"], bf
    assert bf["existing"] == ids + [manual["dag_run_id"]] and bf["cleared"] == [], bf
    assert bf["total_entries"] == 4
    srv.wait_run(dg.dag_id, "backfill__2025-01-04T00:00:00Z")

    # rerun: the run at the date is cleared and runs again, keeping its id; conf, when given,
    # replaces its conf
    again = srv.ok_json("POST", runs_path, {"logical_date": "2025-01-02", "rerun": True,
                                            "conf": {"x": 1}})
    assert again["dag_run_id"] == ids[1] and again["run_type"] == "backfill", again
    assert again["state"] in ("queued", "running") and again["conf"] == {"x": 1}, again
    # while it runs, another rerun is refused
    busy = srv.request("POST", runs_path, {"logical_date": "2025-01-02", "rerun": True})
    assert busy.status == 200 or "still running" in assert_error(busy, 409)["detail"], busy
    assert srv.wait_run(dg.dag_id, ids[1])["state"] == "success"
    ti = srv.ok_json("GET", "%s/%s/tasks/t" % (runs_path, q(ids[1])))
    assert ti["try_number"] >= 2, ti
    bf = srv.ok_json("POST", path, {"from": "2025-01-01", "to": "2025-01-01", "rerun": True})
    assert bf["cleared"] == [ids[0]] and bf["created"] == [] and bf["existing"] == [], bf
    assert srv.wait_run(dg.dag_id, ids[0])["state"] == "success"
    assert_error(srv.request("POST", runs_path, {"logical_date": "2025-01-02", "rerun": 1}), 400)
    assert_error(srv.request("POST", path, {"from": "2025-01-01", "to": "2025-01-02", "rerun": "yes"}), 400)

    runs = srv.ok_json("GET", runs_path)["dag_runs"]
    dates = [r["logical_date"] for r in runs]
    assert len(dates) == len(set(dates)) == 4, runs


def test_manual_runs_get_the_inferred_data_interval(dg):
    """A run made by hand covers what Airflow 2.10 infers for it: for a cron schedule the
    latest complete interval ending at or before the logical date, for `every D` the D
    before it, without a schedule the instant alone. Times carry milliseconds."""
    d = dags_dir(dg)
    dg.write(DAILY, name="dags/daily.yml")
    every = dg.dag_id + "_every"
    dg.write(DAILY.replace('"@daily"', '"every 6h"'), name="dags/every.yml", dag_id=every)
    none = dg.dag_id + "_none"
    dg.write(DAILY.replace('    schedule: "@daily"\n    start_date: 2025-01-01\n', ""),
             name="dags/none.yml", dag_id=none)
    srv = Server(dg, d)
    cases = [  # DAG, logical date given, as answered, data interval
        (dg.dag_id, "2025-01-15", "2025-01-15T00:00:00.000Z", "2025-01-14T00:00:00.000Z", "2025-01-15T00:00:00.000Z"),
        (dg.dag_id, "2025-01-20T13:30:00Z", "2025-01-20T13:30:00.000Z", "2025-01-19T00:00:00.000Z",
         "2025-01-20T00:00:00.000Z"),
        (every, "2025-01-15T13:30:00Z", "2025-01-15T13:30:00.000Z", "2025-01-15T07:30:00.000Z",
         "2025-01-15T13:30:00.000Z"),
        (none, "2025-01-15T13:30:00Z", "2025-01-15T13:30:00.000Z", "2025-01-15T13:30:00.000Z",
         "2025-01-15T13:30:00.000Z"),
    ]
    for dag, when, logical, start, end in cases:
        run = srv.ok_json("POST", "/api/v1/dags/%s/runs" % dag, {"logical_date": when})
        assert (run["data_interval_start"], run["data_interval_end"]) == (start, end), (dag, when, run)
        assert run["logical_date"] == logical, run
        done = srv.wait_run(dag, run["dag_run_id"])
        assert done["state"] == "success", done
        for k in ("logical_date", "data_interval_start", "data_interval_end", "start_date", "end_date"):
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", done[k]), (k, done)
        out = srv.ok_json("GET", "/api/v1/dags/%s/runs/%s/tasks/t" % (dag, q(run["dag_run_id"])))["output"]
        assert out.split()[1:] == [start[:19] + "Z", end[:19] + "Z"], (dag, out)


def test_times_carry_milliseconds(dg):
    """Every time in the JSON has milliseconds, .000 included."""
    d = dags_dir(dg)
    dg.write(CHAIN, name="dags/chain.yml")
    srv = Server(dg, d)
    runs_path = "/api/v1/dags/%s/runs" % dg.dag_id
    run = srv.ok_json("POST", runs_path, {"logical_date": "2025-03-04", "conf": {"x": "y"}})
    assert run["logical_date"] == "2025-03-04T00:00:00.000Z", run
    assert run["dag_run_id"] == "manual__2025-03-04T00:00:00Z", "run ids keep their form: %r" % run
    assert srv.wait_run(dg.dag_id, run["dag_run_id"])["state"] == "success"
    text = srv.ok("GET", "%s/%s/tasks" % (runs_path, q(run["dag_run_id"]))).text
    text += srv.ok("GET", runs_path).text
    times = re.findall(r'"(?:start_date|running_date|end_date|logical_date|data_interval_start|data_interval_end)":'
                       r'\s*"([^"]*)"', text)
    # 5 of the run, 2 of each task instance and 3 of its one try
    assert len(times) == 5 + 2 * (2 + 3), text
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", t) for t in times), text


def test_durations_are_rounded_to_milliseconds(dg):
    """A task instance's duration has at most three decimals: 3.013, never
    3.0129999999999999."""
    d = dags_dir(dg)
    dg.write(CHAIN, name="dags/chain.yml")
    srv = Server(dg, d)
    runs_path = "/api/v1/dags/%s/runs" % dg.dag_id
    run = srv.ok_json("POST", runs_path, {"conf": {"x": "y"}})
    assert srv.wait_run(dg.dag_id, run["dag_run_id"])["state"] == "success"
    text = srv.ok("GET", "%s/%s/tasks" % (runs_path, q(run["dag_run_id"]))).text
    text += srv.ok("GET", "%s/%s/tasks/a" % (runs_path, q(run["dag_run_id"]))).text
    durations = re.findall(r'"duration":\s*([^,}]+)', text)
    assert len(durations) == 3, text
    for v in durations:
        assert re.fullmatch(r"\d+(\.\d{1,3})?", v), text
    ti = srv.ok_json("GET", "%s/%s/tasks/a" % (runs_path, q(run["dag_run_id"])))
    assert ti["duration"] > 0, ti


def test_concurrent_triggers_get_their_own_runs(dg):
    """Triggers without a date that arrive in the same millisecond each get a run of their
    own (the next free millisecond), instead of 409 for a second run of one date."""
    import concurrent.futures
    d = dags_dir(dg)
    dg.write("""\
        dag: @DAG@
        paused: true
        tasks:
          a:
            image: @IMAGE@
            command: ["true"]
        """, name="dags/dag.yml")
    srv = Server(dg, d)
    runs_path = "/api/v1/dags/%s/runs" % dg.dag_id
    n = 24
    with concurrent.futures.ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(lambda _: srv.request("POST", runs_path, {}), range(n)))
    statuses = [a.status for a in answers]
    assert statuses == [200] * n, [(a.status, a.text[:200]) for a in answers if a.status != 200]
    ids = [a.json()["dag_run_id"] for a in answers]
    dates = [a.json()["logical_date"] for a in answers]
    assert len(set(ids)) == n and len(set(dates)) == n, ids
    # every one of them runs, and ends; no container outlives its run
    for rid in ids:
        assert srv.wait_run(dg.dag_id, rid, timeout=180)["state"] == "success", rid
    deadline = time.monotonic() + 30 * TIME_SCALE
    while dg.containers() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert dg.containers() == []


def test_secrets_redacted_in_outputs_and_source(dg):
    """An inline secret never comes back through the API: not in an output read from the
    task's output file, not in the task's log, not in the DAG's source."""
    secret = "pa55-" + dg.dag_id[-6:]
    d = dags_dir(dg)
    f = dg.write("""\
        dag: @DAG@
        tasks:
          a:
            image: @IMAGE@
            env: {S: {secret: "%s"}}
            output: {file: /tmp/out}
            command: [sh, -c, "echo value=$S > /tmp/out; echo log=$S"]
        """ % secret, name="dags/dag.yml")
    srv = Server(dg, d)
    run = srv.ok_json("POST", "/api/v1/dags/%s/runs" % dg.dag_id, {})["dag_run_id"]
    assert srv.wait_run(dg.dag_id, run)["state"] == "success"
    ti = srv.ok_json("GET", "/api/v1/dags/%s/runs/%s/tasks/a" % (dg.dag_id, q(run)))
    assert ti["output"] == "value=***\n", ti
    log = srv.ok("GET", "/api/v1/dags/%s/runs/%s/tasks/a/logs/1" % (dg.dag_id, q(run))).text
    assert log.strip() == "log=***", log
    src = srv.ok("GET", "/api/v1/dags/%s/source" % dg.dag_id).text
    assert secret not in src and '{secret: "***"}' in src, src
    assert src == f.read_text().replace(secret, "***")
    deadline = time.monotonic() + 30 * TIME_SCALE
    while dg.containers() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert dg.containers() == []
