"""The swarm backend (`backend: swarm`) on real Docker Swarms that the tests make and leave.

The shared engine is never put in swarm mode. Each swarm here is made of engines of its
own: one dockerd per node, each in its own network namespace with its own data and exec
roots and socket, the namespaces joined by veth pairs to a bridge inside a "hub"
namespace with addresses the test picks (10.231.N.1x/24). Nothing on the host's network
is touched. The test image is copied into every node (`docker save | docker load`):
nothing is pulled.

- `one_node` (module): a single-node swarm for the core scenarios (chain, fan-out and
  fan-in, retries, trigger rules, timeout, logs and outputs, recovery).
- the multi-node test makes three nodes (one manager, two workers), spreads tasks by
  placement, and kills the engine of the node that runs a try: the try fails and its
  retry runs on the other worker.

Skipped under valgrind (a private engine cluster with dagd ten times slower turns every
swarm timing into a wait), and when the machine cannot make network namespaces (not
root, no `ip`): under CI that is a failure.
"""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from conftest import IMAGE, VALGRIND

pytestmark = pytest.mark.skipif(VALGRIND, reason="a private swarm with dagd under valgrind is too slow to "
                                "keep the swarm's timings meaningful")


def _cannot(msg):
    if os.environ.get("CI"):
        pytest.fail("cannot make a private swarm (and $CI is set): " + msg, pytrace=False)
    pytest.skip("cannot make a private swarm: " + msg)


def sh(*args, check=True, input=None, timeout=60):
    p = subprocess.run(list(args), capture_output=True, input=input, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError("%s: %s" % (" ".join(args), p.stderr.decode(errors="replace")))
    return p


class Swarm:
    """n engines in namespaces, node 1 the manager; sock(i) is node i's socket."""

    def __init__(self, n, tag):
        self.n, self.tag = n, tag
        self.dir = tempfile.mkdtemp(prefix="dagd-swarm-")
        self.hub = "dgh%s" % tag
        self.procs = {}
        self.subnet = 40 + (os.getpid() + int(tag, 16)) % 150

    def ns(self, i):
        return "dg%sn%d" % (self.tag, i)

    def sock(self, i):
        return os.path.join(self.dir, "n%d" % i, "sock")

    def host(self, i):
        return "unix://" + self.sock(i)

    def addr(self, i):
        return "10.231.%d.%d" % (self.subnet, 10 + i)

    def docker(self, i, *args, check=True, input=None, timeout=60):
        return sh("docker", "-H", self.host(i), *args, check=check, input=input, timeout=timeout)

    def start(self):
        if os.geteuid() != 0:
            _cannot("not root")
        for tool in ("ip", "nsenter", "unshare", "dockerd"):
            if not shutil.which(tool):
                _cannot("%s is not installed" % tool)
        sh("ip", "netns", "add", self.hub)
        sh("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.hub, "link", "set", "br0", "up")
        sh("ip", "-n", self.hub, "link", "set", "lo", "up")
        for i in range(1, self.n + 1):
            ns = self.ns(i)
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", self.hub, "link", "add", "v%d" % i, "type", "veth", "peer", "name", "eth0",
               "netns", ns)
            sh("ip", "-n", self.hub, "link", "set", "v%d" % i, "master", "br0", "up")
            sh("ip", "-n", ns, "addr", "add", self.addr(i) + "/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            self.start_engine(i)
        for i in range(1, self.n + 1):
            self.wait_engine(i)
        self.docker(1, "swarm", "init", "--advertise-addr", self.addr(1), "--listen-addr", self.addr(1) + ":2377")
        self.docker(1, "swarm", "update", "--dispatcher-heartbeat", "1s")
        token = self.docker(1, "swarm", "join-token", "-q", "worker").stdout.decode().strip()
        for i in range(2, self.n + 1):
            self.docker(i, "swarm", "join", "--token", token, "--advertise-addr", self.addr(i),
                        "--listen-addr", self.addr(i) + ":2377", self.addr(1) + ":2377")
        image = sh("docker", "save", IMAGE, timeout=120).stdout
        for i in range(1, self.n + 1):
            self.docker(i, "load", input=image, timeout=120)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            nodes = self.docker(1, "node", "ls", "--format", "{{.Hostname}} {{.Status}}").stdout.decode().split("\n")
            if sum(1 for l in nodes if l.endswith(" Ready")) == self.n:
                return self
            time.sleep(0.3)
        raise RuntimeError("the swarm's nodes did not all become ready: %r" % nodes)

    def start_engine(self, i):
        d = os.path.join(self.dir, "n%d" % i)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "daemon.json"), "w") as f:
            f.write("{}")
        # a containerd of the host's own (its socket under /run/containerd) would be taken
        # by every node: hide it in the node's mount namespace so each engine runs its own
        script = ("hostname sw%d; if [ -d /run/containerd ]; then mount -t tmpfs tmpfs /run/containerd; fi; "
                  "exec dockerd --config-file %s/daemon.json --data-root %s/data --exec-root %s/exec "
                  "--pidfile %s/pid -H unix://%s --bip 10.232.%d.1/24 --default-address-pool base=10.%d.0.0/16,size=24 "
                  "--cgroup-parent dagd-swarm-%s-%d --storage-driver vfs"
                  % (i, d, d, d, d, self.sock(i), i, 233 + i, self.tag, i))
        env = dict(os.environ, DOCKER_SERVICE_PREFER_OFFLINE_IMAGE="1")
        log = open(os.path.join(d, "dockerd.log"), "wb")
        self.procs[i] = subprocess.Popen(
            ["nsenter", "--net=/run/netns/" + self.ns(i), "unshare", "--uts", "--mount", "--propagation",
             "private", "sh", "-c", script], stdout=log, stderr=log, env=env, start_new_session=True)

    def wait_engine(self, i):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if self.docker(i, "version", check=False, timeout=10).returncode == 0:
                    return
            except subprocess.TimeoutExpired:
                pass
            if self.procs[i].poll() is not None:
                break
            time.sleep(0.2)
        log = open(os.path.join(self.dir, "n%d" % i, "dockerd.log"), errors="replace").read()[-3000:]
        raise RuntimeError("node %d's engine did not start:\n%s" % (i, log))

    def kill_engine(self, i):
        """kill -9 node i's engine and everything it started (its containerd, shims)."""
        pids = [l.split()[0] for l in sh("ps", "-eo", "pid,args").stdout.decode().splitlines()[1:]
                if os.path.join(self.dir, "n%d" % i) in l]
        for p in pids:
            try:
                os.kill(int(p), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        self.procs[i].wait(timeout=20)

    def services(self):
        out = self.docker(1, "service", "ls", "-q", check=False).stdout.decode().split()
        return out

    def stop(self):
        for i, p in self.procs.items():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for i, p in self.procs.items():
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        # whatever an engine left (shims of containers on a killed node)
        for l in sh("ps", "-eo", "pid,args").stdout.decode().splitlines()[1:]:
            if self.dir in l:
                try:
                    os.kill(int(l.split()[0]), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
        for i in range(1, self.n + 1):
            sh("ip", "netns", "del", self.ns(i), check=False)
        sh("ip", "netns", "del", self.hub, check=False)
        for root, dirs, files in os.walk(self.dir):
            for d in dirs:
                sh("umount", "-l", os.path.join(root, d), check=False) if os.path.ismount(os.path.join(root, d)) else None
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def one_node(docker_engine, test_image):
    s = Swarm(1, "%x" % (os.getpid() % 0xfff))
    try:
        s.start()
    except Exception:
        s.stop()
        raise
    yield s
    left = s.services()
    s.stop()
    assert not left, "services left on the swarm: %r" % left


def swarm_env(s):
    return dict(os.environ, DAGD_BACKEND="swarm", DAGD_DOCKER_HOST=s.host(1), DOCKER_HOST=s.host(1))


def services_gone(s, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not s.services():
            return True
        time.sleep(0.3)
    return False


def test_core_scenarios_on_one_node(dg, one_node):
    """chain, fan-out/fan-in, a retry that succeeds, trigger rules, logs, outputs."""
    flag = dg.tmp / "flag"
    flag.mkdir()
    path = dg.write("""
        dag: @DAG@
        defaults: {retry_delay: 1s, network: dg_swarm_net}
        tasks:
          start:
            image: @IMAGE@
            command: ["sh", "-c", "echo start-out; echo start-err >&2; echo 42"]
          left:
            image: @IMAGE@
            depends_on: [start]
            command: ["sh", "-c", "echo left got {{ ti.xcom_pull('start') }}"]
          right:
            image: @IMAGE@
            depends_on: [start]
            retries: 1
            volumes: ["%s:/flag"]
            command: ["sh", "-c", "if [ -e /flag/once ]; then echo second; else touch /flag/once; echo first; exit 3; fi"]
          broken:
            image: @IMAGE@
            depends_on: [start]
            command: ["sh", "-c", "exit 5"]
          join:
            image: @IMAGE@
            depends_on: [left, right]
            command: ["sh", "-c", "echo joined"]
          cleanup:
            image: @IMAGE@
            depends_on: [broken]
            trigger_rule: all_failed
            command: ["sh", "-c", "echo cleaning"]
          never:
            image: @IMAGE@
            depends_on: [broken]
            command: ["true"]
    """ % flag)
    res = dg.run(path, env=swarm_env(one_node), timeout=120)
    assert res.rc == 1, res  # broken fails the run
    tis = dg.tis()
    assert {k: v["state"] for k, v in tis.items()} == {
        "start": "success", "left": "success", "right": "success", "broken": "failed",
        "join": "success", "cleanup": "success", "never": "upstream_failed"}, res
    # stdout and stderr come as two streams: their relative order is not kept by the swarm
    lines = dg.log_lines("start")
    assert sorted(lines) == ["42", "start-err", "start-out"], lines
    assert "left got 42" in dg.log("left")
    assert [t["exit_code"] for t in dg.tries("right")] == [3, 0]
    assert "first" in dg.log("right", 1) and "second" in dg.log("right", 2)
    assert [t["exit_code"] for t in dg.tries("broken")] == [5]
    assert services_gone(one_node), "services left: %r" % one_node.services()


def test_timeout_stops_the_service(dg, one_node):
    path = dg.write("""
        dag: @DAG@
        tasks:
          slow: {image: @IMAGE@, timeout: 8s, command: ["sh", "-c", "echo begun; sleep 60"]}
    """)
    t0 = time.monotonic()
    res = dg.run(path, env=swarm_env(one_node), timeout=90)
    assert res.rc == 1, res
    assert dg.tis()["slow"]["state"] == "failed"
    assert time.monotonic() - t0 < 45, "the timeout did not stop the task: %r" % res
    assert "begun" in dg.log("slow")
    assert services_gone(one_node)


def test_a_task_that_cannot_be_placed_fails_at_its_timeout(dg, one_node):
    path = dg.write("""
        dag: @DAG@
        tasks:
          nowhere:
            image: @IMAGE@
            timeout: 3s
            placement: {constraints: ["node.labels.zone==mars"]}
            command: ["true"]
    """)
    res = dg.run(path, env=swarm_env(one_node), timeout=90)
    assert res.rc == 1, res
    assert dg.tis()["nowhere"]["state"] == "failed"
    log = dg.log("nowhere")
    assert "no suitable node" in log, log
    assert services_gone(one_node)


def test_recovery_readopts_the_service_and_never_runs_it_twice(dg, one_node):
    from serve_helpers import Server  # noqa: the server harness of the daemon tests
    marks = dg.tmp / "marks"
    marks.mkdir()
    dags = dg.tmp / "dags"
    dags.mkdir()
    path = dg.write("""
        dag: @DAG@
        tasks:
          long:
            image: @IMAGE@
            volumes: ["%s:/marks"]
            command: ["sh", "-c", "echo ran >> /marks/long; echo before; sleep 4; echo after; echo done-out"]
          next: {image: @IMAGE@, depends_on: [long], command: ["echo", "next ran"]}
    """ % marks, name="dags/d.yml")
    srv = Server(dg, dags, env=swarm_env(one_node))
    srv.start()
    run_id = srv.trigger(dg.dag_id)["dag_run_id"]
    deadline = time.monotonic() + 30
    while not (marks / "long").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (marks / "long").exists(), srv.all_stderr()
    srv.kill9()
    srv2 = Server(dg, dags, env=swarm_env(one_node), state=srv.state)
    srv2.start()
    run = srv2.wait_run(dg.dag_id, run_id, timeout=60)
    assert run["state"] == "success", srv2.all_stderr()
    assert (marks / "long").read_text() == "ran\n", "the task ran twice"
    tis = srv2.tis(dg.dag_id, run_id)
    assert tis["long"]["try_number"] == 1
    log = dg.log("long", run_id=run_id)
    assert "before" in log and "after" in log, log
    assert services_gone(one_node)
    srv2.term()


def test_a_swarm_worker_or_a_plain_engine_is_refused_clearly(dg):
    """the shared engine is not in swarm mode: dagd says so and runs nothing."""
    path = dg.write("""
        dag: @DAG@
        tasks:
          t: {image: @IMAGE@, command: ["true"]}
    """)
    res = dg.run(path, env=dict(os.environ, DAGD_BACKEND="swarm"), timeout=30)
    assert res.rc == 3, res
    assert "not part of a swarm" in res.err and "docker swarm init" in res.err, res
    assert "hint: is the Docker engine running" not in res.err


def test_placement_and_a_node_lost_mid_try(dg, docker_engine, test_image):
    """three nodes; a task pinned to the workers; the worker running it loses its engine:
    the try fails with the node named, and the retry runs on the other worker."""
    s = Swarm(3, "%x" % ((os.getpid() + 7) % 0xfff))
    try:
        s.start()
        path = dg.write("""
            dag: @DAG@
            tasks:
              spread:
                image: @IMAGE@
                placement: {constraints: ["node.role==worker"]}
                retries: 1
                retry_delay: 1s
                remove: never
                command: ["sh", "-c", "echo on-a-worker; sleep 20; echo finished"]
              pinned:
                image: @IMAGE@
                placement: {constraints: ["node.hostname==sw1"]}
                remove: never
                command: ["echo", "on the manager"]
        """)
        p = dg.popen("run", path, "--state", str(dg.state), env=swarm_env(s))
        # find the worker running try 1, then kill its engine
        victim = None
        deadline = time.monotonic() + 60
        while victim is None and time.monotonic() < deadline:
            for i in (2, 3):
                out = s.docker(i, "ps", "-q", "--filter", "label=io.dagd.dag=%s" % dg.dag_id, check=False)
                if out.stdout.strip():
                    victim = i
            time.sleep(0.2)
        assert victim, "the task did not start on a worker"
        s.kill_engine(victim)
        out, err = p.communicate(timeout=120)
        err = err.decode(errors="replace")
        assert p.returncode == 0, err
        tries = dg.tries("spread")
        assert [t["state"] for t in tries] == ["failed", "success"], tries
        assert "node sw%d is down" % victim in dg.log("spread", 1), dg.log("spread", 1)
        assert "finished" in dg.log("spread", 2)
        other = 5 - victim
        ps = s.docker(other, "ps", "-a", "--filter", "label=io.dagd.dag=%s" % dg.dag_id,
                      "--format", "{{.Label \"io.dagd.task\"}} {{.Label \"io.dagd.try\"}}").stdout.decode().split("\n")
        assert "spread 2" in ps, ps
        man = s.docker(1, "ps", "-a", "--filter", "label=io.dagd.dag=%s" % dg.dag_id,
                       "--format", "{{.Label \"io.dagd.task\"}}").stdout.decode().split()
        assert man == ["pinned"], man
    finally:
        s.stop()
