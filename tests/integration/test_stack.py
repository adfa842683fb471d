"""The compose stack (compose/, docs/operations.md#compose) brought up offline, with dagd in
its own container reaching the engine through the socat docker-proxy.

One stack per module, under a compose project, network, host port, token file and DAGs
folder of its own: a DAG triggered through the API from the host runs task containers on
the stack's network that reach Postgres and the broker by service name; dagd's container
is restarted while a task runs and re-adopts it by its labels, read across the proxy; at
the end `docker-compose down -v` leaves nothing of the project behind, task containers
included.

The images hold a plain build of dagd and the scenario is a slow end-to-end one (the
stack takes about a minute to come up), so it runs in the plain pass only: not against
the ASan build (`make check`), not under valgrind. When the images cannot be built it
fails under $CI and is skipped with the reason elsewhere. Every docker-compose call,
engine call and HTTP request has a timeout, and every wait a deadline; a failure prints
the stack's logs.
"""
import json
import os
import pathlib
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid

import pytest

from conftest import REPO, docker, free_port
from image_helpers import build_images, plain_pass_only

pytestmark = plain_pass_only("the images hold a plain build of dagd, and the scenario is slow")

COMPOSE = REPO / "compose" / "docker-compose.yml"
OFFLINE = REPO / "compose" / "docker-compose.offline.yml"
FILES = ["-f", str(COMPOSE), "-f", str(OFFLINE)]
UP_TIMEOUT = 300      # seconds: `up -d` waits for the services' healthchecks
RUN_TIMEOUT = 240     # a DAG run of a few task containers (image start, a JVM-less client)


def need_compose():
    """docker-compose answers, or the test fails under $CI and is skipped elsewhere."""
    try:
        p = subprocess.run(["docker-compose", "version"], capture_output=True, text=True,
                           timeout=30, stdin=subprocess.DEVNULL)
        ok, out = p.returncode == 0, p.stdout + p.stderr
    except (OSError, subprocess.TimeoutExpired) as e:
        ok, out = False, str(e)
    if not ok:
        msg = "docker-compose does not answer (`make images-deps` installs it): " + out
        if os.environ.get("CI"):
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)


class Stack:
    """One project of compose/docker-compose.yml + the offline override."""

    def __init__(self, root):
        self.id = uuid.uuid4().hex[:10]
        self.project = "dagd-itest-stack-" + self.id
        self.network = "dagd-itest-stack-" + self.id
        self.port = free_port()
        self.token = "stack-" + uuid.uuid4().hex
        self.root = root
        self.dags = root / "dags"
        self.dags.mkdir()
        self.dags.chmod(0o755)          # read by the image's user 10001
        self.token_path = root / "token"
        self.token_path.write_text(self.token + "\n")
        self.token_path.chmod(0o644)
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "DOCKER_HOST")
                    and not k.startswith(("COMPOSE_", "DAGD_"))}
        self.env.update(DAGD_NETWORK=self.network, DAGD_PORT=str(self.port),
                        DAGD_DAGS=str(self.dags), DAGD_TOKEN_PATH=str(self.token_path))
        if os.environ.get("DOCKER_HOST"):
            self.env["DOCKER_HOST"] = os.environ["DOCKER_HOST"]

    def write_dag(self, dag_id, text):
        p = self.dags / (dag_id + ".yml")
        p.write_text(text)
        p.chmod(0o644)

    # -- docker-compose, always with a timeout --------------------------------------
    def compose(self, *args, timeout=120, check=True, files=FILES):
        cmd = ["docker-compose", "-p", self.project, *files, *args]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                               env=self.env, cwd=self.root, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            raise AssertionError("`%s` did not end within %ss\n%s" % (" ".join(cmd[1:]), timeout, self.logs()))
        if check and p.returncode != 0:
            raise AssertionError("`%s` failed (%d):\n%s\n%s\n%s" % (
                " ".join(args), p.returncode, p.stdout[-3000:], p.stderr[-3000:], self.logs()))
        return p

    def logs(self):
        """The services' logs (the tail of each), for a failure's message."""
        try:
            p = subprocess.run(["docker-compose", "-p", self.project, *FILES, "logs", "--no-color",
                                "--tail", "60"], capture_output=True, text=True, timeout=60,
                               env=self.env, cwd=self.root, stdin=subprocess.DEVNULL)
            return "---- docker-compose logs ----\n" + (p.stdout + p.stderr)[-12000:]
        except (OSError, subprocess.TimeoutExpired) as e:
            return "(no compose logs: %s)" % e

    def container(self, service):
        ids = self.compose("ps", "-q", service, timeout=60).stdout.split()
        assert len(ids) == 1, (service, ids)
        return ids[0]

    # -- the API on the host's port ---------------------------------------------------
    def api(self, method, path, body=None, timeout=10, raw=False):
        req = urllib.request.Request(
            "http://127.0.0.1:%d/api/v1%s" % (self.port, path), method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": "Bearer " + self.token, "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            data = r.read().decode()
            return data if raw else json.loads(data)

    def wait(self, what, fn, timeout):
        """Poll fn (errors count as not yet) until it returns something truthy."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = fn()
                if last:
                    return last
            except (OSError, urllib.error.URLError, ValueError, subprocess.TimeoutExpired) as e:
                last = repr(e)
            time.sleep(0.5)
        raise AssertionError("timed out after %ss waiting for %s (last: %r)\n%s"
                             % (timeout, what, last, self.logs()))

    def healthy(self):
        with urllib.request.urlopen("http://127.0.0.1:%d/api/v1/health" % self.port, timeout=5) as r:
            return r.status == 200 and json.loads(r.read())["status"] == "ok"

    def trigger(self, dag_id):
        self.wait("DAG %s loaded" % dag_id, lambda: self.api("GET", "/dags/" + dag_id), 60)
        return self.api("POST", "/dags/%s/runs" % dag_id, {})["dag_run_id"]

    def run(self, dag_id, run_id):
        return self.api("GET", "/dags/%s/runs/%s" % (dag_id, run_id))

    def wait_run(self, dag_id, run_id, timeout=RUN_TIMEOUT):
        run = self.wait("run %s of %s to end" % (run_id, dag_id),
                        lambda: (lambda r: r if r["state"] in ("success", "failed") else None)(
                            self.run(dag_id, run_id)), timeout)
        if run["state"] != "success":
            raise AssertionError("run %s of %s: %s\n%s\n%s" % (
                run_id, dag_id, run["state"], json.dumps(self.tasks(dag_id, run_id), indent=1)[-6000:],
                self.logs()))
        return run

    def tasks(self, dag_id, run_id):
        ti = self.api("GET", "/dags/%s/runs/%s/tasks" % (dag_id, run_id))["task_instances"]
        return {t["task_id"]: t for t in ti}

    def task_log(self, dag_id, run_id, task_id, try_number=1):
        return self.api("GET", "/dags/%s/runs/%s/tasks/%s/logs/%d" % (dag_id, run_id, task_id, try_number),
                        raw=True)

    # -- what the engine holds of the project ----------------------------------------
    def leftovers(self, dag_ids):
        label = "label=com.docker.compose.project=" + self.project
        left = {
            "containers": docker("ps", "-aq", "--filter", label, timeout=60).stdout.split(),
            "volumes": docker("volume", "ls", "-q", "--filter", label, timeout=60).stdout.split(),
            "networks": [n for n in docker("network", "ls", "--format", "{{.Name}}", timeout=60).stdout.split()
                         if n == self.network or n.startswith(self.project + "_")],
            "task containers": [c for d in dag_ids for c in docker(
                "ps", "-aq", "--filter", "label=io.dagd.dag=" + d, timeout=60).stdout.split()],
        }
        return {k: v for k, v in left.items() if v}

    def down(self):
        return self.compose("down", "-v", "--remove-orphans", "-t", "10", timeout=180, check=False)


DAG_IDS = []


@pytest.fixture(scope="module")
def stack(docker_engine):
    build_images("images-stack")        # images-deps installs docker-compose too
    need_compose()
    root = tempfile.mkdtemp(prefix="dagd-stack-")
    s = Stack(pathlib.Path(root))
    s.write_dag(*pipeline_dag(s))
    s.write_dag(*restart_dag(s))
    try:
        s.compose("up", "-d", timeout=UP_TIMEOUT)
        s.wait("dagd's API on 127.0.0.1:%d" % s.port, s.healthy, 60)
        yield s
    finally:
        p = s.down()
        if p.returncode != 0:
            print("docker-compose down failed:", p.stdout, p.stderr)
        # what dagd started and down could not know about (only after a failure)
        for d in DAG_IDS:
            for c in docker("ps", "-aq", "--filter", "label=io.dagd.dag=" + d, check=False).stdout.split():
                docker("rm", "-f", "-v", c, check=False)
        docker("network", "rm", s.network, check=False)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(autouse=True)
def logs_on_failure(request):
    """A failed test on the stack prints the services' logs."""
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed and "stack" in request.fixturenames:
        print(request.getfixturevalue("stack").logs())


# -- the DAGs ------------------------------------------------------------------------

def pipeline_dag(s):
    """Postgres: a table written by one task and read back by another; the broker: a topic
    made and one record produced by one task, consumed by another."""
    dag_id = "stack_pipeline_" + s.id
    DAG_IDS.append(dag_id)
    s.pipeline_value = "value-" + uuid.uuid4().hex
    s.pipeline_table = "stack_" + s.id
    s.pipeline_topic = "stack_" + s.id
    text = """\
dag: %(dag)s
schedule: null
start_date: 2025-01-01
paused: true
defaults:
  network: %(net)s
  timeout: 3m
tasks:
  pg_write:
    image: dagd/loader:local
    connections: [warehouse]
    command: [sh, -c, 'psql "$DAGD_CONN_WAREHOUSE" -v ON_ERROR_STOP=1 -c "create table %(table)s (v text); insert into %(table)s values (''%(value)s'')"']
  pg_read:
    image: dagd/loader:local
    depends_on: [pg_write]
    connections: [warehouse]
    command: [sh, -c, 'psql "$DAGD_CONN_WAREHOUSE" -v ON_ERROR_STOP=1 -At -c "select ''read '' || v from %(table)s"']
  produce:
    image: dagd/producer:local
    env: {BOOTSTRAP: "broker:9092", TOPIC: %(topic)s, VALUE: %(value)s}
    command:
      - python3
      - -c
      - |
        import os
        from kafka import KafkaAdminClient, KafkaProducer
        from kafka.admin import NewTopic
        boot, topic = os.environ["BOOTSTRAP"], os.environ["TOPIC"]
        admin = KafkaAdminClient(bootstrap_servers=boot)
        admin.create_topics([NewTopic(topic, 1, 1)])
        admin.close()
        p = KafkaProducer(bootstrap_servers=boot)
        p.send(topic, os.environ["VALUE"].encode()).get(timeout=30)
        p.close()
        print("produced", os.environ["VALUE"])
  consume:
    image: dagd/producer:local
    depends_on: [produce]
    env: {BOOTSTRAP: "broker:9092", TOPIC: %(topic)s}
    command:
      - python3
      - -c
      - |
        import os, sys
        from kafka import KafkaConsumer
        c = KafkaConsumer(os.environ["TOPIC"], bootstrap_servers=os.environ["BOOTSTRAP"],
                          auto_offset_reset="earliest", consumer_timeout_ms=20000)
        got = [m.value.decode() for m in c]
        c.close()
        print("consumed", " ".join(got))
        sys.exit(0 if len(got) == 1 else 1)
""" % {"dag": dag_id, "net": s.network, "table": s.pipeline_table, "value": s.pipeline_value,
       "topic": s.pipeline_topic}
    s.pipeline_dag = dag_id
    return dag_id, text


def restart_dag(s):
    """One task that outlives a restart of dagd's container."""
    dag_id = "stack_restart_" + s.id
    DAG_IDS.append(dag_id)
    text = """\
dag: %(dag)s
schedule: null
start_date: 2025-01-01
paused: true
defaults:
  network: %(net)s
tasks:
  sleeper:
    image: dagd/loader:local
    # what it prints is not its command's text, which the log's header may show
    command: [sh, -c, 'echo started-$((1+1)); sleep 25; echo slept-$((2+2))']
""" % {"dag": dag_id, "net": s.network}
    s.restart_dag = dag_id
    return dag_id, text


# -- the tests, in file order on one stack --------------------------------------------

def test_compose_config_valid(tmp_path):
    """`docker-compose config` accepts the stack file alone and with the offline override."""
    build_images("images-deps")
    need_compose()
    import yaml     # Debian's docker-compose depends on python3-yaml
    token = tmp_path / "token"
    token.write_text("x\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DAGD_"))}
    env["DAGD_TOKEN_PATH"] = str(token)
    for files in ([COMPOSE], [COMPOSE, OFFLINE]):
        args = [a for f in files for a in ("-f", str(f))]
        p = subprocess.run(["docker-compose", *args, "config"], capture_output=True, text=True,
                           timeout=60, env=env, stdin=subprocess.DEVNULL)
        assert p.returncode == 0, (files, p.stderr)
        services = yaml.safe_load(p.stdout)["services"]
        assert set(services) == {"dagd", "docker-proxy", "postgres", "broker"}, services
        # the proxy publishes no port; dagd's API only on the host's loopback
        assert "ports" not in services["docker-proxy"], services["docker-proxy"]
        assert all(str(port.get("host_ip") if isinstance(port, dict) else port).startswith("127.0.0.1")
                   for port in services["dagd"]["ports"]), services["dagd"]["ports"]
        if OFFLINE in files:
            assert all(svc["image"].startswith("dagd/") for svc in services.values()), services


def test_dagd_reaches_the_engine_through_the_proxy_only(stack):
    dagd = json.loads(docker("inspect", stack.container("dagd"), timeout=60).stdout)[0]
    assert "DOCKER_HOST=tcp://docker-proxy:2375" in dagd["Config"]["Env"], dagd["Config"]["Env"]
    assert not any("docker.sock" in (m.get("Source", "") + m.get("Destination", ""))
                   for m in dagd["Mounts"]), dagd["Mounts"]
    assert dagd["Config"]["User"] == "10001:10001", dagd["Config"]["User"]
    assert stack.network in dagd["NetworkSettings"]["Networks"], dagd["NetworkSettings"]["Networks"]
    proxy = json.loads(docker("inspect", stack.container("docker-proxy"), timeout=60).stdout)[0]
    assert not proxy["HostConfig"]["PortBindings"], proxy["HostConfig"]["PortBindings"]
    assert all(not v for v in (proxy["NetworkSettings"]["Ports"] or {}).values()), \
        proxy["NetworkSettings"]["Ports"]
    assert list(proxy["NetworkSettings"]["Networks"]) == [stack.network], proxy["NetworkSettings"]["Networks"]
    # the API wants the token of the mounted file
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen("http://127.0.0.1:%d/api/v1/dags" % stack.port, timeout=10)
    assert e.value.code == 401
    dags = {d["dag_id"] for d in stack.api("GET", "/dags")["dags"]}
    assert {stack.pipeline_dag, stack.restart_dag} <= dags, dags


def test_pipeline_tasks_reach_postgres_and_the_broker_by_name(stack):
    dag = stack.pipeline_dag
    run_id = stack.trigger(dag)
    run = stack.wait_run(dag, run_id)
    assert run["dag_run_id"] == run_id and run["end_date"], run
    tasks = stack.tasks(dag, run_id)
    assert set(tasks) == {"pg_write", "pg_read", "produce", "consume"}, tasks
    for t in tasks.values():
        assert t["state"] == "success" and t["try_number"] == 1, t
    log = stack.task_log(dag, run_id, "pg_read")
    assert "read " + stack.pipeline_value in log, log
    assert "produced " + stack.pipeline_value in stack.task_log(dag, run_id, "produce")
    log = stack.task_log(dag, run_id, "consume")
    assert "consumed " + stack.pipeline_value + "\n" in log, log
    # the table is there for anyone on the stack's network, read back outside dagd too
    out = stack.compose("exec", "-T", "postgres", "psql", "-U", "etl", "-d", "analytics", "-At",
                        "-c", "select v from %s" % stack.pipeline_table, timeout=60).stdout
    assert out.split() == [stack.pipeline_value], out


def test_restart_of_dagd_container_readopts_running_task(stack):
    """dagd's container restarts while a task sleeps; the new dagd finds the task's
    container by its labels through the proxy and follows it to its end: one try, one
    container, the run a success."""
    dag = stack.restart_dag
    run_id = stack.trigger(dag)

    def running_container():
        ids = docker("ps", "-q", "--no-trunc", "--filter", "label=io.dagd.dag=" + dag,
                     timeout=60).stdout.split()
        return ids[0] if len(ids) == 1 else None
    cid = stack.wait("the sleeper's container running", running_container, 90)
    c = json.loads(docker("inspect", cid, timeout=60).stdout)[0]
    assert stack.network in c["NetworkSettings"]["Networks"], c["NetworkSettings"]["Networks"]
    stack.wait("the sleeper's log", lambda: "started-2" in stack.task_log(dag, run_id, "sleeper"), 30)

    dagd = stack.container("dagd")
    started = json.loads(docker("inspect", dagd, timeout=60).stdout)[0]["State"]["StartedAt"]
    docker("restart", "-t", "10", dagd, timeout=60)
    after = json.loads(docker("inspect", dagd, timeout=60).stdout)[0]["State"]
    assert after["StartedAt"] != started and after["Running"], after
    # the task still runs across the restart (dagd's stop left it alone)
    assert json.loads(docker("inspect", cid, timeout=60).stdout)[0]["State"]["Running"], \
        "the task's container stopped with dagd's\n" + stack.logs()
    stack.wait("dagd's API after the restart", stack.healthy, 60)

    stack.wait_run(dag, run_id, timeout=120)
    t = stack.tasks(dag, run_id)["sleeper"]
    assert t["state"] == "success" and t["try_number"] == 1 and len(t["tries"]) == 1, t
    assert t["exit_code"] == 0 and t["container_id"] and cid.startswith(t["container_id"][:12]), (t, cid)
    log = stack.task_log(dag, run_id, "sleeper")
    assert log.count("started-2") == 1 and "slept-4" in log, log
    # the container dagd started was the one re-adopted: no other was made for the task
    assert not docker("ps", "-q", "--filter", "label=io.dagd.dag=" + dag, timeout=60).stdout.split()


def test_down_leaves_nothing_of_the_project(stack):
    """Last on the stack: `docker-compose down -v` removes every container, network and
    volume of the project, and dagd has left none of its task containers."""
    assert stack.leftovers(DAG_IDS).get("task containers") is None, stack.leftovers(DAG_IDS)
    p = stack.down()
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert stack.leftovers(DAG_IDS) == {}, stack.leftovers(DAG_IDS)
