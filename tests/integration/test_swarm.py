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
import os
import subprocess
import time

import pytest

from conftest import IMAGE, VALGRIND
from swarm_cluster import Swarm, Unavailable, sh

pytestmark = pytest.mark.skipif(VALGRIND, reason="a private swarm with dagd under valgrind is too slow to "
                                "keep the swarm's timings meaningful")


def start_swarm(n, tag):
    s = Swarm(n, tag, IMAGE)
    try:
        s.start()
    except Unavailable as e:
        s.stop()
        if os.environ.get("CI"):
            pytest.fail("cannot make a private swarm (and $CI is set): %s" % e, pytrace=False)
        pytest.skip("cannot make a private swarm: %s" % e)
    except Exception:
        s.stop()
        raise
    return s


@pytest.fixture(scope="module")
def one_node(docker_engine, test_image):
    s = start_swarm(1, "%x" % (os.getpid() % 0xfff))
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
    # which image each try ran: the task containers ran on the manager's own node, whose
    # engine says; the image was never pushed, so no digest (docs/operations.md)
    node_image = subprocess.run(["docker", "-H", one_node.host(1), "image", "inspect", "--format", "{{.Id}}", IMAGE],
                                capture_output=True, text=True, timeout=60).stdout.strip()
    assert node_image.startswith("sha256:"), node_image
    assert [(t["image_id"], t["image_digest"]) for t in dg.tries("right")] == [(node_image, None)] * 2
    assert dg.log_header("start") == ["[dagd] image %s (id unknown, digest: none)" % IMAGE]
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
    s = start_swarm(3, "%x" % ((os.getpid() + 7) % 0xfff))
    try:
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
        # a worker's engine is refused clearly: the swarm backend needs a manager
        wenv = dict(swarm_env(s), DAGD_DOCKER_HOST=s.host(other), DOCKER_HOST=s.host(other))
        res = dg.run(path, "--state", str(dg.state) + "-worker", env=wenv, timeout=30, state=False)
        assert res.rc == 3, res
        assert "the engine is a swarm worker, not a manager" in res.err, res
    finally:
        s.stop()
