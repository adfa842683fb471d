"""`dagd serve --log journald` against a real systemd-journald (docs/daemon.md), and the plain
stderr lines of `--log stderr`.

The journald is our own: the whole daemon runs in a private mount namespace with a fresh
tmpfs over /run (and /var/log/journal), so the host's journal is never read or written.
The Docker socket, which lives under /run, is bind-mounted aside first and handed to dagd
through DOCKER_HOST. journalctl reads the private journal through nsenter.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from conftest import TIME_SCALE, free_port, wrap
from serve_helpers import Server, clean_env, wait_for

JOURNALD = next((p for p in ("/lib/systemd/systemd-journald", "/usr/lib/systemd/systemd-journald")
                 if os.access(p, os.X_OK)), None)

SCRIPT = r"""
set -e
mount --make-rprivate /
mkdir -p "$T/run"
mount --bind /run "$T/run"
mount -t tmpfs -o mode=0755 tmpfs /run
if [ -d /var/log/journal ]; then mount -t tmpfs -o mode=0755 tmpfs /var/log/journal; fi
mkdir -p /run/log/journal
"$JOURNALD" </dev/null >/dev/null 2>&1 &
jpid=$!
i=0
while [ ! -S /run/systemd/journal/socket ]; do
  i=$((i+1)); [ $i -lt 200 ] || { echo "journald did not start" >&2; kill $jpid; exit 97; }
  sleep 0.05
done
set +e
"$@" &
dpid=$!
echo $dpid > "$T/dagd.pid"
wait $dpid
rc=$?
touch "$T/dagd.exited"
while [ ! -e "$T/release" ]; do sleep 0.1; done
kill $jpid
wait $jpid
exit $rc
"""


def _docker_socket():
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        return None
    path = os.path.realpath(host[len("unix://"):])
    return path if path.startswith("/run/") else None


class JournaldServer(Server):
    """A Server whose dagd runs with --log journald in a private namespace with its own journald."""

    def __init__(self, dg, dags):
        super().__init__(dg, dags)
        self.ns = dg.tmp / "ns"
        self.ns.mkdir()
        self.fixed_port = free_port()
        sock = _docker_socket()
        self.env = clean_env({"T": str(self.ns), "JOURNALD": JOURNALD})
        if sock:
            self.env["DOCKER_HOST"] = "unix://" + str(self.ns / "run" / sock[len("/run/"):])

    def start(self, wait_ready=True, timeout=20):
        self.starts += 1
        self.err_path = self.dg.tmp / ("serve-%d.err" % self.starts)
        argv = wrap([self.dg.bin, "serve", "--dags", str(self.dags), "--state", str(self.state),
                     "--listen", "127.0.0.1:%d" % self.fixed_port, "--log", "journald"])
        with open(self.err_path, "wb") as err:
            self.shell = subprocess.Popen(["unshare", "-m", "sh", "-c", SCRIPT, "sh", *argv],
                                          stdout=err, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, env=self.env, cwd=self.dg.tmp)
        self.dg.procs.append(self.shell)
        pidf = self.ns / "dagd.pid"

        def started():
            if self.shell.poll() is not None:
                raise AssertionError("the namespace script exited %d:\n%s" % (self.shell.returncode,
                                                                               self.stderr()))
            return pidf.exists() and pidf.read_text().strip()
        self.pid = int(wait_for("dagd to start in the namespace", started, timeout))
        self.port = self.fixed_port

        def healthy():
            try:
                return self.health().get("ready") is True
            except OSError:
                return False
        wait_for("health ready", healthy, timeout)
        return self

    def journal(self, *matches):
        p = subprocess.run(["nsenter", "-t", str(self.pid), "-m", "journalctl", "-o", "json", "--no-pager",
                            *matches], capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        return [json.loads(line) for line in p.stdout.splitlines() if line.strip()]

    def stop(self):
        if self.shell.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            wait_for("dagd to exit", lambda: (self.ns / "dagd.exited").exists(), 20)
            (self.ns / "release").touch()
            return self.shell.wait(timeout=20 * TIME_SCALE)
        return self.shell.returncode


@pytest.fixture
def jsrv(dg):
    if not JOURNALD:
        pytest.skip("systemd-journald is not installed")
    if not shutil.which("unshare") or not shutil.which("nsenter"):
        pytest.skip("unshare/nsenter (util-linux) are needed")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        msg = "cannot create a mount namespace: " + probe.stderr.strip()
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    dags = dg.tmp / "dags"
    dg.write("""\
        dag: @DAG@
        tasks:
          good:
            image: @IMAGE@
            command: ["sh", "-c", "echo fine"]
          bad:
            image: @IMAGE@
            command: ["sh", "-c", "exit 3"]
        """, name="dags/d.yml")
    srv = JournaldServer(dg, dags)
    try:
        yield srv.start()
    finally:
        if getattr(srv, "shell", None) is not None:
            try:
                srv.stop()
            finally:
                (srv.ns / "release").touch()


def _run_entries(srv, dag_id):
    srv.wait_dag(dag_id)
    run = srv.trigger(dag_id)["dag_run_id"]
    r = srv.wait_run(dag_id, run, timeout=30)
    assert r["state"] == "failed", r
    time.sleep(0.5)
    return run, srv.journal("DAGD_RUN=" + run)


def test_journald_entries_carry_dag_and_run(dg, jsrv):
    run, entries = _run_entries(jsrv, dg.dag_id)
    created = [e for e in entries if e.get("MESSAGE", "").startswith("run created")]
    assert len(created) == 1, entries
    e = created[0]
    assert e["DAGD_DAG"] == dg.dag_id and e["DAGD_RUN"] == run, e
    assert e["SYSLOG_IDENTIFIER"] == "dagd"
    assert e["PRIORITY"] == "6", e
    assert "DAGD_TASK" not in e and "DAGD_TRY" not in e, "a run event names no task: %r" % e
    # daemon-wide entries are there too, without run fields
    listening = jsrv.journal("SYSLOG_IDENTIFIER=dagd")
    msgs = [x["MESSAGE"] for x in listening]
    assert any(m.startswith("API listening on 127.0.0.1:%d" % jsrv.port) for m in msgs), msgs
    assert all("DAGD_RUN" not in x for x in listening if x["MESSAGE"].startswith("API listening"))
    # nothing goes to stderr while the journal takes the entries
    assert "run created" not in jsrv.stderr()


def test_journald_task_events_carry_task_and_try(dg, jsrv):
    run, entries = _run_entries(jsrv, dg.dag_id)
    bad = [e for e in entries if e.get("DAGD_TASK") == "bad"]
    assert bad, "no journal entry names the failed task: %r" % [e.get("MESSAGE") for e in entries]
    assert all(e["DAGD_TRY"] == "1" and e["DAGD_DAG"] == dg.dag_id for e in bad), bad
    assert any(int(e["PRIORITY"]) <= 4 for e in bad), "a failed task is at least a warning: %r" % bad
    good = [e for e in entries if e.get("DAGD_TASK") == "good"]
    assert good and all(e["DAGD_TRY"] == "1" for e in good), good


def test_stderr_log_is_plain_lines(dg):
    dags = dg.tmp / "dags"
    dg.write("""\
        dag: @DAG@
        tasks:
          a:
            image: @IMAGE@
            command: ["sh", "-c", "echo hi"]
        """, name="dags/d.yml")
    srv = Server(dg, dags, args=["--log", "stderr"]).start()
    srv.wait_dag(dg.dag_id)
    run = srv.trigger(dg.dag_id)["dag_run_id"]
    assert srv.wait_run(dg.dag_id, run, timeout=30)["state"] == "success"
    assert srv.term() == 0
    lines = srv.stderr().splitlines()
    assert lines, "no log lines on stderr"
    line_re = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|NOTICE|WARNING|ERROR|CRIT\w*|ALERT|EMERG\w*) \S")
    for line in lines:
        assert line_re.match(line), "not a plain timestamped line: %r" % line
        assert "\x1b" not in line and "MESSAGE=" not in line and "PRIORITY=" not in line
    created = [l for l in lines if "run created" in l]
    assert len(created) == 1, lines
    assert "dag=%s" % dg.dag_id in created[0] and "run=%s" % run in created[0], created
    assert any("shutting down" in l for l in lines), lines
