"""The compose stack (compose/, docs/operations.md, Compose): dagd, the engine proxy,
PostgreSQL and the broker on one network, on the locally built images (the offline
override). dagd, reaching the engine only through docker-proxy, runs the shipped DAG
compose/dags/stack_check.yml, whose tasks run as sibling containers on the network and
reach postgres (psql `select 1`) and the broker (one record produced and consumed).

Every stack gets its own compose project, network and volumes, and `down -v` removes
them all; the test checks that nothing of it remains. Plain pass only (see
test_images.py).
"""
import json
import os
import shutil
import subprocess
import time
import uuid

import pytest

from conftest import REPO, TIME_SCALE, docker
from test_images import build_images, pytestmark  # noqa: F401  (the same skips)

COMPOSE = REPO / "compose"
FILES = ["-f", str(COMPOSE / "docker-compose.yml"), "-f", str(COMPOSE / "docker-compose.offline.yml")]


class Stack:
    def __init__(self, tmp_path):
        suffix = uuid.uuid4().hex[:8]
        self.project = "dagditest" + suffix
        self.network = "dagd-itest-pipeline-" + suffix
        self.dags = tmp_path / "dags"
        self.dags.mkdir()
        # the shipped DAG, on this stack's network
        text = (COMPOSE / "dags" / "stack_check.yml").read_text()
        assert "  network: pipeline\n" in text
        (self.dags / "stack_check.yml").write_text(text.replace("  network: pipeline\n",
                                                                "  network: %s\n" % self.network))
        self.dags.chmod(0o755)
        (self.dags / "stack_check.yml").chmod(0o644)
        self.token = tmp_path / "token"
        self.token.write_text(uuid.uuid4().hex + "\n")
        self.token.chmod(0o644)
        tmp_path.chmod(0o755)
        self.env = dict(os.environ, COMPOSE_PROJECT_NAME=self.project, DAGD_NETWORK=self.network,
                        DAGD_DAGS=str(self.dags), DAGD_TOKEN_PATH=str(self.token),
                        DAGD_PORT=str(_free_port()))

    def compose(self, *args, timeout=300, check=True):
        p = subprocess.run(["docker-compose", *FILES, *args], cwd=COMPOSE, env=self.env,
                           capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if check:
            assert p.returncode == 0, "docker-compose %s (%d):\n%s\n%s" % (
                " ".join(args), p.returncode, p.stdout[-3000:], p.stderr[-3000:])
        return p

    def dagd(self, *args, timeout=120):
        return self.compose("exec", "-T", "dagd", "dagd", *args, timeout=timeout, check=False)

    def leftovers(self):
        label = "label=com.docker.compose.project=" + self.project
        out = []
        out += docker("ps", "-aq", "--filter", label).stdout.split()
        out += docker("volume", "ls", "-q", "--filter", label).stdout.split()
        out += docker("network", "ls", "-q", "--filter", "name=^%s$" % self.network).stdout.split()
        out += docker("ps", "-aq", "--filter", "network=" + self.network).stdout.split()
        return out


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _task_containers(network):
    """dagd's task containers on the stack's network."""
    return docker("ps", "-aq", "--filter", "network=" + network, "--filter", "label=io.dagd.dag").stdout.split()


@pytest.fixture
def stack(docker_engine, tmp_path):
    if not shutil.which("docker-compose"):
        msg = "docker-compose is not installed (make images-deps)"
        if os.environ.get("CI"):
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    build_images("images-stack")
    s = Stack(tmp_path)
    try:
        yield s
    finally:
        # the run's task containers are dagd's to remove: wait for them, then take the
        # stack down with its volumes and network
        deadline = time.monotonic() + 60
        while _task_containers(s.network) and time.monotonic() < deadline:
            time.sleep(0.5)
        down = s.compose("down", "-v", "--remove-orphans", "--timeout", "5", check=False)
        left = s.leftovers()
        assert not left, "the stack left %s behind (down: %s)" % (left, down.stderr[-2000:])


def test_stack_runs_a_dag_reaching_postgres_and_the_broker(stack):
    up = stack.compose("up", "-d", timeout=300)
    # dagd starts only once the proxy, postgres and the broker are healthy, and is healthy itself
    deadline = time.monotonic() + 90 * TIME_SCALE
    while True:
        ps = stack.compose("ps", "-q").stdout.split()
        states = {}
        for cid in ps:
            info = json.loads(docker("inspect", cid).stdout)[0]
            svc = info["Config"]["Labels"]["com.docker.compose.service"]
            states[svc] = (info["State"].get("Health") or {}).get("Status")
        if len(states) == 4 and all(v == "healthy" for v in states.values()):
            break
        assert time.monotonic() < deadline, "the stack did not become healthy: %s\n%s\n%s" % (
            states, up.stderr, stack.compose("logs", "--tail", "40", check=False).stdout[-4000:])
        time.sleep(1)
    # the engine is reached through the proxy, not a socket in dagd's container
    dagd = json.loads(docker("inspect", stack.compose("ps", "-q", "dagd").stdout.strip()).stdout)[0]
    assert not any(m.get("Destination") == "/var/run/docker.sock" for m in dagd["Mounts"]), dagd["Mounts"]
    assert "DOCKER_HOST=tcp://docker-proxy:2375" in dagd["Config"]["Env"]

    res = stack.dagd("dags", timeout=60)
    assert res.returncode == 0 and "stack_check" in res.stdout, (res.stdout, res.stderr)
    res = stack.dagd("trigger", "stack_check", "--wait", timeout=300 * TIME_SCALE)
    run_id = res.stdout.split()[0] if res.stdout.split() else ""
    tasks = stack.dagd("tasks", "stack_check", run_id)
    assert res.returncode == 0 and res.stdout.splitlines()[-1] == run_id + " success", (
        res.stdout, res.stderr, tasks.stdout,
        stack.dagd("logs", "stack_check", run_id, "broker_roundtrip").stdout,
        stack.dagd("logs", "stack_check", run_id, "postgres_select").stdout)
    pg = stack.dagd("logs", "stack_check", run_id, "postgres_select")
    assert pg.stdout.strip().splitlines()[-1:] == ["1"], pg.stdout
    kafka = stack.dagd("logs", "stack_check", run_id, "broker_roundtrip")
    assert "produced and consumed" in kafka.stdout, kafka.stdout
