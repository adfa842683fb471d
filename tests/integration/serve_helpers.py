"""Helpers for integration tests of `dagd serve`: a Server that starts the daemon on a free
port (`--listen 127.0.0.1:0`, the port read back from the file <state>/api.port that the
daemon writes once its API listens), talks to the REST API with the token the daemon wrote,
and can stop it gracefully (SIGTERM) or brutally (kill -9) and start it again on the same
state directory.

Every process is registered with the Harness, so the `dg` fixture stops it after the test.
"""
import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request

from conftest import IMAGE, TIME_SCALE, docker, wrap

# The port file's whole content: the bound port in decimal and a newline (written
# atomically, so a reader never sees a part of it).
PORT_FILE_RE = re.compile(r"(\d+)\n")


def read_port_file(path):
    """The port in the daemon's port file, or None while there is no such file; fails on a
    file that holds anything but the port and a newline."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    m = PORT_FILE_RE.fullmatch(text)
    assert m and 0 < int(m.group(1)) < 65536, \
        "%s holds %r, not a port in decimal and a newline" % (path, text)
    return int(m.group(1))


class ApiError(AssertionError):
    def __init__(self, method, path, status, body):
        super().__init__("%s %s -> %d: %s" % (method, path, status, body))
        self.status, self.body = status, body


def clean_env(extra=None, **kw):
    """The test's environment without any DAGD_* setting of the caller, plus extra and kw."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGD_")}
    env.update(extra or {})
    env.update(kw)
    return env


def simple_task(name, cmd, extra=""):
    """A DAG file's task `name` running `sh -c cmd` in the test image; extra: more keys,
    indented by four spaces."""
    return ("  %s:\n    image: %s\n    command: [\"sh\", \"-c\", %s]\n%s"
            % (name, IMAGE, json.dumps(cmd), extra))


def dag_text(dag_id, *tasks, head=""):
    return "dag: %s\n%stasks:\n%s" % (dag_id, head, "".join(tasks))


def wait_for(what, fn, timeout, interval=0.1):
    """Poll fn until it returns something truthy; fail with what (and the last value)."""
    deadline = time.monotonic() + timeout * TIME_SCALE
    last = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %ss waiting for %s (last: %r)"
                                 % (timeout * TIME_SCALE, what, last))
        time.sleep(interval)


class Server:
    def __init__(self, dg, dags, state=None, env=None, args=()):
        self.dg = dg
        self.dags = dags
        self.state = state or dg.state
        self.env = clean_env(env)
        self.args = list(args)
        self.proc = None
        self.port = None
        self.starts = 0
        self.err_path = None

    # --- lifecycle
    def start(self, wait_ready=True, timeout=20):
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        self.err_path = self.dg.tmp / ("serve-%d.err" % self.starts)
        argv = [self.dg.bin, "serve", "--dags", str(self.dags), "--state", str(self.state),
                "--listen", "127.0.0.1:0", *self.args]
        # a port file left by an earlier daemon on this state dir names a port nobody listens on
        try:
            self.port_file.unlink()
        except FileNotFoundError:
            pass
        with open(self.err_path, "wb") as err, open(self.dg.tmp / ("serve-%d.out" % self.starts), "wb") as out:
            self.proc = subprocess.Popen(wrap(argv), stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                         env=self.env, cwd=self.dg.tmp)
        self.dg.procs.append(self.proc)

        def port():
            assert self.proc.poll() is None, "dagd serve exited %s:\n%s" % (self.proc.returncode, self.stderr())
            return read_port_file(self.port_file)

        try:
            self.port = wait_for("dagd serve to listen (to write %s)" % self.port_file, port, timeout)
        except AssertionError as e:
            if not str(e).startswith("timed out"):
                raise
            raise AssertionError("%s\n--- dagd stderr\n%s" % (e, self.stderr()[-4000:])) from None
        if wait_ready:
            wait_for("health ready", lambda: self.health().get("ready") is True, timeout)
        return self

    @property
    def port_file(self):
        return self.state / "api.port"

    def stderr(self):
        if not self.err_path or not self.err_path.exists():
            return ""
        return self.err_path.read_bytes().decode("utf-8", "replace")

    def all_stderr(self):
        return "".join((self.dg.tmp / ("serve-%d.err" % i)).read_text(errors="replace")
                       for i in range(1, self.starts + 1))

    def kill9(self):
        self.proc.kill()
        self.proc.wait(timeout=10)
        assert self.proc.returncode == -signal.SIGKILL

    def term(self, timeout=20):
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=timeout * TIME_SCALE)
        return rc

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    # --- API
    @property
    def token(self):
        return (self.state / "token").read_text().strip()

    def request(self, method, path, body=None, auth=True, raw=False):
        url = "http://127.0.0.1:%d%s" % (self.port, path)
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if auth:
            req.add_header("Authorization", "Bearer " + self.token)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                status, text = r.status, r.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode("utf-8", "replace")
        if raw:
            return status, text
        if status >= 300:
            raise ApiError(method, path, status, text)
        return json.loads(text) if text else None

    def get(self, path, **kw):
        return self.request("GET", "/api/v1" + path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", "/api/v1" + path, {} if body is None else body, **kw)

    def patch(self, path, body, **kw):
        return self.request("PATCH", "/api/v1" + path, body, **kw)

    def health(self):
        return self.request("GET", "/api/v1/health", auth=False)

    def dag(self, dag_id):
        return self.get("/dags/" + dag_id)

    def wait_dag(self, dag_id, timeout=5):
        """Wait until dag_id is loaded; fail with the import errors otherwise."""
        try:
            wait_for("DAG %s to be loaded" % dag_id, lambda: dag_id in self.dag_ids(), timeout)
        except AssertionError as e:
            raise AssertionError("%s\nimport errors: %r" % (e, self.get("/import-errors")))

    def dag_ids(self):
        return [d["dag_id"] for d in self.get("/dags?limit=1000")["dags"]]

    def trigger(self, dag_id, conf=None, logical_date=None):
        body = {"conf": conf or {}}
        if logical_date:
            body["logical_date"] = logical_date
        return self.post("/dags/%s/runs" % dag_id, body)

    def runs(self, dag_id):
        return self.get("/dags/%s/runs?limit=1000" % dag_id)["dag_runs"]

    def run(self, dag_id, run_id):
        return self.get("/dags/%s/runs/%s" % (dag_id, run_id))

    def tis(self, dag_id, run_id):
        items = self.get("/dags/%s/runs/%s/tasks" % (dag_id, run_id))["task_instances"]
        return {t["task_id"]: t for t in items}

    def wait_run(self, dag_id, run_id, states=("success", "failed"), timeout=60):
        def done():
            r = self.run(dag_id, run_id)
            return r if r["state"] in states else None
        try:
            return wait_for("run %s to reach %s" % (run_id, states), done, timeout, interval=0.2)
        except AssertionError as e:
            raise AssertionError("%s\ntasks: %r\n--- dagd stderr\n%s"
                                 % (e, self.tis(dag_id, run_id), self.all_stderr()[-4000:]))


def running_task_containers(dag_id, task_id=None):
    """Ids of running containers of dag_id (and task_id), from the engine's labels."""
    args = ["ps", "-q", "--no-trunc", "--filter", "label=io.dagd.dag=" + dag_id]
    if task_id:
        args += ["--filter", "label=io.dagd.task=" + task_id]
    return docker(*args).stdout.split()
