"""Integration harness for dagd: the real binary against a real Docker engine and real SQLite.

Fixtures:
  docker_engine  (session) an engine that answers `docker version`: the configured one, or
                 a dockerd started here; skips with a reason when there is none (fails when
                 $CI is set), never passes silently.
  test_image     (session) dagd-test/busybox:1 built from images/test/Dockerfile with the
                 host's static busybox; nothing is pulled from any registry.
  dagd_bin       (session) $DAGD_BIN, else build/dagd.
  dg             (per test) a Harness: a unique dag id, a state dir, helpers to write DAG
                 files, run dagd, read the state DB, the task logs and the engine's containers.
                 After the test no container labelled with the test's dag ids may remain.

DAGD_VALGRIND=1 runs every dagd invocation under valgrind (exit 99 = valgrind error) with
ten times longer timeouts.
"""
import datetime
import json
import os
import pathlib
import re
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import textwrap
import time
import uuid

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
IMAGE = "dagd-test/busybox:1"
VALGRIND = os.environ.get("DAGD_VALGRIND") == "1"
TIME_SCALE = 10 if VALGRIND else 1

# Sanitizer reports from any dagd this suite starts (run, test, serve; built by
# `make check`) go to files here instead of a stderr that a test may not read; every
# test fails if one appeared while it ran.
SAN_DIR = pathlib.Path(tempfile.mkdtemp(prefix="dagd-sanitizer-"))
for _var in ("ASAN_OPTIONS", "UBSAN_OPTIONS"):
    _opts = os.environ.get(_var, "")
    os.environ[_var] = (_opts + ":" if _opts else "") + "log_path=%s/%s" % (SAN_DIR, _var[:5].lower())
VALGRIND_RC = 99
VALGRIND_CMD = ["valgrind", "-q", "--error-exitcode=%d" % VALGRIND_RC, "--leak-check=full",
                "--errors-for-leak-kinds=definite"]

TS_RE = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
RUN_ID_RE = r"manual__\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(?:Z|\+00:00)"


def _unavailable(msg):
    if os.environ.get("CI"):
        pytest.fail("Docker engine not available (and $CI is set): " + msg, pytrace=False)
    pytest.skip("Docker engine not available: " + msg)


def docker(*args, check=True, timeout=120, input=None):
    """Run the docker CLI; returns the CompletedProcess (text)."""
    p = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                       input=input, stdin=None if input is not None else subprocess.DEVNULL)
    if check and p.returncode != 0:
        raise AssertionError("docker %s failed (%d): %s" % (" ".join(args), p.returncode,
                                                            p.stderr.strip()))
    return p


def _engine_answers():
    try:
        p = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"],
                           capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return False, "the docker CLI is not installed"
    except subprocess.TimeoutExpired:
        return False, "`docker version` did not answer within 20s"
    if p.returncode == 0 and p.stdout.strip():
        return True, p.stdout.strip()
    return False, (p.stderr.strip() or "`docker version` exited %d" % p.returncode)


@pytest.fixture(scope="session")
def docker_engine():
    ok, why = _engine_answers()
    if ok:
        yield why
        return
    if why == "the docker CLI is not installed" or not shutil.which("dockerd"):
        _unavailable(why + "; no dockerd to start")
    if os.environ.get("DOCKER_HOST"):
        _unavailable("DOCKER_HOST=%s does not answer: %s" % (os.environ["DOCKER_HOST"], why))
    logf = tempfile.NamedTemporaryFile(prefix="dagd-itest-dockerd-", suffix=".log", delete=False)
    proc = subprocess.Popen(["dockerd"], stdout=logf, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        ok, _ = _engine_answers()
        if ok:
            break
        time.sleep(1)
    if not ok:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)
        with open(logf.name, errors="replace") as f:
            tail = f.read()[-2000:]
        _unavailable("%s; started dockerd did not answer within 60s (log %s):\n%s"
                     % (why, logf.name, tail))
    try:
        yield "started dockerd pid %d" % proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def test_image(docker_engine):
    busybox = shutil.which("busybox") or "/bin/busybox"
    if not os.path.exists(busybox):
        pytest.fail("busybox (Debian's busybox-static) is needed to build " + IMAGE)
    with tempfile.TemporaryDirectory(prefix="dagd-itest-image-") as ctx:
        shutil.copy(REPO / "images" / "test" / "Dockerfile", ctx)
        shutil.copy(busybox, os.path.join(ctx, "busybox"))
        env = dict(os.environ, DOCKER_BUILDKIT="0")
        p = subprocess.run(["docker", "build", "-q", "-t", IMAGE, ctx], capture_output=True,
                           text=True, timeout=300, env=env, stdin=subprocess.DEVNULL)
        if p.returncode != 0:
            pytest.fail("building %s failed:\n%s\n%s" % (IMAGE, p.stdout, p.stderr))
    smoke = docker("run", "--rm", IMAGE, "sh", "-c", "echo ok", check=False)
    if smoke.returncode != 0 or smoke.stdout.strip() != "ok":
        pytest.fail("%s does not run: %s" % (IMAGE, smoke.stderr))
    return IMAGE


@pytest.fixture(scope="session")
def dagd_bin():
    path = os.environ.get("DAGD_BIN") or str(REPO / "build" / "dagd")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        msg = "dagd binary not found at %s (set DAGD_BIN or run `make`)" % path
        if os.environ.get("CI"):
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    if VALGRIND and not shutil.which("valgrind"):
        pytest.fail("DAGD_VALGRIND=1 but valgrind is not installed")
    return os.path.abspath(path)


def wrap(argv):
    return VALGRIND_CMD + list(argv) if VALGRIND else list(argv)


class Result:
    def __init__(self, argv, rc, out, err, elapsed):
        self.argv, self.rc, self.out, self.err, self.elapsed = argv, rc, out, err, elapsed

    def __repr__(self):
        return "<dagd %s rc=%s %.1fs>\n--- stdout\n%s\n--- stderr\n%s" % (
            " ".join(self.argv[1:]), self.rc, self.elapsed, self.out[-4000:], self.err[-4000:])


def check_valgrind(res):
    if VALGRIND:
        assert res.rc != VALGRIND_RC, "valgrind reported errors: %r" % res


def make_dag_id(name):
    base = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")[:32]
    return "it_%s_%s" % (base, uuid.uuid4().hex[:6])


def containers(dag_id, running_only=False, extra=()):
    args = ["ps", "-q", "--no-trunc", "--filter", "label=io.dagd.dag=" + dag_id]
    if not running_only:
        args.insert(1, "-a")
    for f in extra:
        args += ["--filter", f]
    return docker(*args).stdout.split()


def inspect(ref):
    return json.loads(docker("inspect", ref).stdout)[0]


def epoch_ms(s):
    """'2025-03-04' or '2025-03-04T05:06:07Z' → ms since the epoch (UTC)."""
    if "T" not in s:
        s += "T00:00:00Z"
    d = datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))
    return int(d.timestamp() * 1000)


class Harness:
    def __init__(self, bin_path, tmp_path, name):
        self.bin = bin_path
        self.tmp = tmp_path
        self.state = tmp_path / "state"
        self.dag_id = make_dag_id(name)
        self.dag_ids = [self.dag_id]  # every dag id whose containers the test may create
        self.networks = []            # networks the test expects dagd to create
        self.procs = []               # dagd processes started with popen()

    # --- files
    def new_dag_id(self, suffix):
        d = "%s_%s" % (self.dag_id, suffix)
        self.dag_ids.append(d)
        return d

    def write(self, body, name="dag.yml", dag_id=None, dedent=True):
        """Write a DAG file; @DAG@ and @IMAGE@ in body become the dag id and test image."""
        text = textwrap.dedent(body) if dedent else body
        text = text.replace("@DAG@", dag_id or self.dag_id).replace("@IMAGE@", IMAGE)
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    # --- processes
    def exec(self, *args, timeout=60, env=None, cwd=None):
        argv = [self.bin, *[str(a) for a in args]]
        cwd = cwd or self.tmp
        t0 = time.monotonic()
        try:
            p = subprocess.run(wrap(argv), capture_output=True, timeout=timeout * TIME_SCALE,
                               env=env, cwd=cwd, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            out = (e.stdout or b"").decode("utf-8", "replace")
            err = (e.stderr or b"").decode("utf-8", "replace")
            pytest.fail("dagd %s did not finish within %ss\n--- stdout\n%s\n--- stderr\n%s"
                        % (" ".join(argv[1:]), timeout * TIME_SCALE, out[-4000:], err[-4000:]))
        res = Result(argv, p.returncode, p.stdout.decode("utf-8", "replace"),
                     p.stderr.decode("utf-8", "replace"), time.monotonic() - t0)
        check_valgrind(res)
        assert res.rc >= 0, "dagd died of signal %d: %r" % (-res.rc, res)
        return res

    def run(self, target, *args, timeout=60, env=None, state=True):
        extra = ["--state", str(self.state)] if state else []
        return self.exec("run", target, *extra, *args, timeout=timeout, env=env)

    def popen(self, *args, env=None):
        argv = [self.bin, *[str(a) for a in args]]
        p = subprocess.Popen(wrap(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             stdin=subprocess.DEVNULL, env=env, cwd=self.tmp)
        self.procs.append(p)
        return p

    # --- state DB
    def rows(self, sql, params=(), state=None):
        db = (state or self.state) / "dagd.db"
        assert db.exists(), "no state DB at %s" % db
        con = sqlite3.connect(str(db), timeout=10)
        try:
            con.row_factory = sqlite3.Row
            return [dict(r) for r in con.execute(sql, params)]
        finally:
            con.close()

    def runs(self, dag_id=None, state=None):
        return self.rows("SELECT * FROM dag_runs WHERE dag_id = ? ORDER BY start_ms, rowid",
                         (dag_id or self.dag_id,), state=state)

    def the_run(self, dag_id=None, state=None):
        runs = self.runs(dag_id, state=state)
        assert len(runs) == 1, "expected exactly one dag run, got %r" % runs
        return runs[0]

    def tis(self, run_id=None, dag_id=None, state=None):
        """task_id → task_instances row of the run (the only run when run_id is None)."""
        dag_id = dag_id or self.dag_id
        run_id = run_id or self.the_run(dag_id, state=state)["run_id"]
        rows = self.rows("SELECT * FROM task_instances WHERE dag_id = ? AND run_id = ?",
                         (dag_id, run_id), state=state)
        return {r["task_id"]: r for r in rows}

    def tries(self, task_id, run_id=None, dag_id=None):
        dag_id = dag_id or self.dag_id
        run_id = run_id or self.the_run(dag_id)["run_id"]
        return self.rows("SELECT * FROM task_tries WHERE dag_id = ? AND run_id = ? AND task_id = ?"
                         " ORDER BY try_number", (dag_id, run_id, task_id))

    def log_path(self, task_id, try_number=1, run_id=None, dag_id=None):
        dag_id = dag_id or self.dag_id
        run_id = run_id or self.the_run(dag_id)["run_id"]
        return self.state / "logs" / dag_id / run_id / task_id / ("%d.log" % try_number)

    def log_header_len(self, task_id, try_number=1, run_id=None, dag_id=None):
        """The bytes of the header dagd writes at the start of a try's log: the lines marked
        'd' in <try>.streams (docs/dags.md, "Tries")."""
        p = self.log_path(task_id, try_number, run_id, dag_id)
        marks = p.with_suffix(".streams").read_bytes() if p.with_suffix(".streams").exists() else b""
        n = len(marks) - len(marks.lstrip(b"d"))
        raw = p.read_bytes()
        return len(b"".join(raw.splitlines(keepends=True)[:n]))

    def log_header(self, *a, **kw):
        raw = self.log_path(*a, **kw).read_bytes()
        return raw[:self.log_header_len(*a, **kw)].decode("utf-8", "replace").splitlines()

    def log(self, task_id, try_number=1, run_id=None, dag_id=None):
        """The try's log as the container wrote it (the header left out, as the API does)."""
        p = self.log_path(task_id, try_number, run_id, dag_id)
        assert p.is_file(), "no log file %s" % p
        skip = self.log_header_len(task_id, try_number, run_id, dag_id)
        return p.read_bytes()[skip:].decode("utf-8", "replace")

    def log_lines(self, *a, **kw):
        return self.log(*a, **kw).splitlines()

    # --- engine
    def containers(self, running_only=False):
        out = []
        for d in self.dag_ids:
            out += containers(d, running_only)
        return out

    def remove_containers(self):
        ids = self.containers()
        if ids:
            docker("rm", "-f", "-v", *ids, check=False)
        return ids


def _stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGINT)
        try:
            p.communicate(timeout=30 * TIME_SCALE)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()


@pytest.fixture(autouse=True)
def no_sanitizer_reports():
    yield
    reports = sorted(SAN_DIR.iterdir())
    if reports:
        text = "\n".join("--- %s\n%s" % (r.name, r.read_text(errors="replace")[-6000:]) for r in reports)
        for r in reports:
            r.unlink()
        pytest.fail("a sanitizer reported errors in dagd:\n" + text, pytrace=False)


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture
def dg(request, docker_engine, test_image, dagd_bin, tmp_path):
    h = Harness(dagd_bin, tmp_path, request.node.name)
    yield h
    for p in h.procs:
        _stop(p)
    left = h.remove_containers()
    for n in h.networks:
        docker("network", "rm", n, check=False)
    call = getattr(request.node, "rep_call", None)
    if left and call is not None and call.passed:
        pytest.fail("containers labelled io.dagd.dag in %s were left behind: %s"
                    % (h.dag_ids, left), pytrace=False)


# --------------------------------------------------------------------------- local servers
# Helpers for the transport, recovery, sensor and notification tests: proxies in front of
# the engine's socket (socat, which relays bytes, and EngineProxy, which sees each request
# and can hold one), TLS material made with the openssl CLI, and small HTTP and SMTP sinks
# that record what dagd sends them.

import http.server
import socket
import socketserver
import threading

ENGINE_SOCKET = "/var/run/docker.sock"


def env_with(**kw):
    """os.environ plus kw (a None value removes the variable)."""
    env = dict(os.environ)
    for k, v in kw.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = str(v)
    return env


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10.0, up=True):
    """Wait until 127.0.0.1:port accepts (up) or refuses (not up) connections."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                if up:
                    return True
        except OSError:
            if not up:
                return True
        time.sleep(0.05)
    return False


class Socat:
    """socat listening on 127.0.0.1:port (fork) and relaying to the engine's socket.
    `listen` is the socat listen address without the port, e.g. "TCP-LISTEN" or
    "OPENSSL-LISTEN", `opts` extra listen options."""

    def __init__(self, port, listen="TCP-LISTEN", opts=""):
        self.port, self.listen, self.opts = port, listen, opts
        self.proc = None
        self.log = tempfile.NamedTemporaryFile(prefix="dagd-itest-socat-", suffix=".log",
                                               delete=False)

    def start(self, timeout=10.0):
        if not shutil.which("socat"):
            pytest.fail("socat is needed for the transport tests")
        addr = "%s:%d,bind=127.0.0.1,reuseaddr,fork%s" % (self.listen, self.port, self.opts)
        self.proc = subprocess.Popen(["socat", addr, "UNIX-CONNECT:" + ENGINE_SOCKET],
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail("socat exited %d: %s" % (self.proc.returncode, self.logtext()))
            if _listening(self.port):
                return self
            time.sleep(0.05)
        pytest.fail("socat did not listen on %d: %s" % (self.port, self.logtext()))

    def kill(self):
        """Kill socat and every connection it forked (its whole process group)."""
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)
        self.proc = None

    def logtext(self):
        with open(self.log.name, errors="replace") as f:
            return f.read()[-2000:]


def _listening(port):
    """True when a socket listens on 127.0.0.1:port, checked without connecting (a
    connection to a TLS listener would leave socat a failed handshake to log)."""
    try:
        with open("/proc/net/tcp") as f:
            rows = f.read().splitlines()[1:]
    except OSError:
        return wait_port(port, timeout=0.1)
    want = "0100007F:%04X" % port
    return any(r.split()[1] == want and r.split()[3] == "0A" for r in rows)


@pytest.fixture
def socat_procs():
    """Collects Socat instances and kills them after the test."""
    procs = []
    yield procs
    for p in procs:
        p.kill()
        try:
            os.unlink(p.log.name)
        except OSError:
            pass


class HeldRequest:
    """A request that an EngineProxy did not forward: the test drops it, lets it through on
    its connection, or sends it to the engine on a connection of its own (the response
    then never reaches the client)."""

    def __init__(self, conn, method, path, raw):
        self.conn, self.method, self.path, self.raw = conn, method, path, raw
        self.decided = threading.Event()
        self.decision = None

    def _decide(self, what):
        assert self.decision is None, "already %s" % self.decision
        self.decision = what
        self.decided.set()

    def drop(self):
        """Never forward it: its connection is closed (the engine never sees the request)."""
        self._decide("drop")
        self.conn.close()

    def release(self):
        """Forward it on its connection, as if it had never been held."""
        self._decide("release")

    def send_detached(self, timeout=60):
        """Send it to the engine on a connection of its own and return the engine's HTTP
        status; the client's connection stays open, unanswered, until the client goes."""
        self._decide("detached")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(ENGINE_SOCKET)
            s.sendall(self.raw)
            head = b""
            while b"\r\n" not in head:
                chunk = s.recv(4096)
                if not chunk:
                    break
                head += chunk
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        assert line.startswith("HTTP/"), "the engine answered %r" % head[:200]
        return int(line.split()[1])


class _ProxyConn:
    def __init__(self, client, engine):
        self.client, self.engine = client, engine

    def close(self):
        for sk in (self.client, self.engine):
            try:
                sk.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sk.close()


class EngineProxy:
    """A plain-HTTP proxy on 127.0.0.1 in front of the engine's socket (point DOCKER_HOST at
    `docker_host`). Unlike Socat, which relays bytes, it reads the requests it relays: each
    one's method and path goes to `seen`, and a request that `hold_if(method, path)` picks
    is held, not forwarded, and put in `held` until the test decides (see HeldRequest).
    Responses and streams (events, logs) are relayed as they come."""

    def __init__(self):
        self.hold_if = None
        self.seen = Recorder()
        self.held = Recorder()
        self._conns = []
        self._lock = threading.Lock()
        self._closed = False
        self._lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._lsock.bind(("127.0.0.1", 0))
        self._lsock.listen(64)
        self.port = self._lsock.getsockname()[1]
        self.docker_host = "tcp://127.0.0.1:%d" % self.port
        threading.Thread(target=self._accept, daemon=True).start()

    def hold_start(self, dag_id, task_id):
        """Hold the first `POST /containers/{id}/start` of a container labelled with dag_id
        and task_id (the labels are read from the engine); let every other request pass."""
        def pick(method, path):
            m = re.match(r"(?:/v[0-9.]+)?/containers/([^/?]+)/start(?:\?|$)", path)
            if method != "POST" or not m:
                return False
            labels = inspect(m.group(1))["Config"]["Labels"] or {}
            if labels.get("io.dagd.dag") == dag_id and labels.get("io.dagd.task") == task_id:
                self.hold_if = None  # only the first one
                return True
            return False
        self.hold_if = pick

    def close(self):
        self._closed = True
        self._lsock.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            c.close()
        for h in self.held.get():
            if h.decision is None:
                h.decision = "drop"
                h.decided.set()

    def _accept(self):
        while not self._closed:
            try:
                client, _ = self._lsock.accept()
            except OSError:
                return
            engine = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                engine.connect(ENGINE_SOCKET)
            except OSError:
                client.close()
                engine.close()
                continue
            conn = _ProxyConn(client, engine)
            with self._lock:
                self._conns.append(conn)
            threading.Thread(target=self._responses, args=(conn,), daemon=True).start()
            threading.Thread(target=self._requests, args=(conn,), daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass

    def _responses(self, conn):
        self._pump(conn.engine, conn.client)
        conn.close()

    def _requests(self, conn):
        buf = b""

        def need(n):
            nonlocal buf
            while len(buf) < n:
                data = conn.client.recv(65536)
                if not data:
                    raise EOFError
                buf += data

        def take_until(sep):
            nonlocal buf
            while sep not in buf:
                data = conn.client.recv(65536)
                if not data:
                    raise EOFError
                buf += data
            i = buf.index(sep) + len(sep)
            out, buf = buf[:i], buf[i:]
            return out

        def take(n):
            nonlocal buf
            need(n)
            out, buf = buf[:n], buf[n:]
            return out

        try:
            while True:
                head = take_until(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path = lines[0].split(" ")[:2]
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                self.seen.add((method, path))
                hold = self.hold_if
                if hold and hold(method, path):
                    # held requests are the body-less kind (start, stop, ...)
                    h = HeldRequest(conn, method, path, head + take(int(headers.get("content-length") or 0)))
                    self.held.add(h)
                    h.decided.wait()
                    if h.decision != "release":
                        self._drain(conn)
                        return
                    conn.engine.sendall(h.raw)
                    continue
                conn.engine.sendall(head)
                if "chunked" in headers.get("transfer-encoding", "").lower():
                    while True:
                        size_line = take_until(b"\r\n")
                        size = int(size_line.split(b";")[0].strip(), 16)
                        conn.engine.sendall(size_line + take(size + 2) if size else size_line)
                        if size == 0:
                            conn.engine.sendall(take_until(b"\r\n"))  # (no trailers)
                            break
                else:
                    n = int(headers.get("content-length") or 0)
                    while n > 0:
                        part = take(min(n, 65536))
                        conn.engine.sendall(part)
                        n -= len(part)
                if "upgrade" in headers.get("connection", "").lower():
                    if buf:
                        conn.engine.sendall(buf)
                    self._pump(conn.client, conn.engine)
                    break
        except (EOFError, OSError, ValueError):
            pass
        conn.close()

    @staticmethod
    def _drain(conn):
        """Wait for the client to go (read and discard), then close the connection."""
        try:
            while conn.client.recv(65536):
                pass
        except OSError:
            pass
        conn.close()


@pytest.fixture
def engine_proxy():
    """An EngineProxy, closed after the test."""
    proxy = EngineProxy()
    yield proxy
    proxy.close()


def openssl(*args, cwd):
    p = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        pytest.fail("openssl %s failed: %s" % (" ".join(args), p.stderr))


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=%s" % name, "-keyout", name + "-key.pem", "-out", name + ".pem", cwd=d)


def make_cert(d, ca, name, cn, server=False):
    """A key and certificate `name`.pem / `name`-key.pem signed by CA `ca`."""
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=%s" % cn,
            "-keyout", name + "-key.pem", "-out", name + ".csr", cwd=d)
    ext = pathlib.Path(d) / (name + ".ext")
    if server:
        ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                       "extendedKeyUsage=serverAuth\n")
    else:
        ext.write_text("extendedKeyUsage=clientAuth\n")
    openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + "-key.pem",
            "-CAcreateserial", "-days", "2", "-extfile", name + ".ext", "-out", name + ".pem",
            cwd=d)


class Recorder:
    """What a sink received, guarded by a lock; wait() polls for n items."""

    def __init__(self):
        self.items = []
        self.lock = threading.Lock()

    def add(self, item):
        with self.lock:
            self.items.append(item)

    def get(self):
        with self.lock:
            return list(self.items)

    def wait(self, n, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.get()) < n:
            time.sleep(0.05)
        return self.get()


class _ThreadingHTTPServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


@pytest.fixture
def http_sink():
    """An HTTP server on 127.0.0.1 recording every POST as dict(path, headers, body);
    answers 200 unless the path contains "fail" (then 500)."""
    rec = Recorder()

    class H(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n)
            rec.add({"path": self.path, "headers": dict(self.headers), "body": body})
            code = 500 if "fail" in self.path else 200
            self.send_response(code)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *a):
            pass

    srv = _ThreadingHTTPServer(("127.0.0.1", 0), H)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    rec.port = srv.server_address[1]
    rec.url = "http://127.0.0.1:%d" % rec.port
    yield rec
    srv.shutdown()
    srv.server_close()


class _SmtpHandler(socketserver.StreamRequestHandler):
    """Just enough SMTP for a client that sends one or more mails per connection."""

    def reply(self, line):
        self.wfile.write((line + "\r\n").encode())
        self.wfile.flush()

    def handle(self):
        rec = self.server.rec
        self.reply("220 localhost test SMTP")
        mail = {"from": None, "to": [], "data": b""}
        while True:
            line = self.rfile.readline()
            if not line:
                return
            cmd = line.decode("latin-1").strip()
            verb = cmd.split(" ", 1)[0].upper()
            if verb == "EHLO":
                self.wfile.write(b"250-localhost\r\n250 8BITMIME\r\n")
                self.wfile.flush()
            elif verb == "HELO":
                self.reply("250 localhost")
            elif verb == "MAIL":
                mail = {"from": cmd.split(":", 1)[1].strip(), "to": [], "data": b""}
                self.reply("250 OK")
            elif verb == "RCPT":
                mail["to"].append(cmd.split(":", 1)[1].strip())
                self.reply("250 OK")
            elif verb == "DATA":
                self.reply("354 end with .")
                data = []
                while True:
                    l = self.rfile.readline()
                    if not l or l in (b".\r\n", b".\n"):
                        break
                    data.append(l[1:] if l.startswith(b"..") else l)
                mail["data"] = b"".join(data)
                rec.add(mail)
                self.reply("250 queued")
            elif verb == "RSET" or verb == "NOOP":
                self.reply("250 OK")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("502 not implemented")


class _ThreadingTCPServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture
def smtp_sink():
    """An SMTP receiver on 127.0.0.1 recording mails as dict(from, to, data)."""
    rec = Recorder()
    srv = _ThreadingTCPServer(("127.0.0.1", 0), _SmtpHandler)
    srv.rec = rec
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    rec.port = srv.server_address[1]
    rec.url = "smtp://127.0.0.1:%d" % rec.port
    yield rec
    srv.shutdown()
    srv.server_close()
