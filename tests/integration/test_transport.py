"""DOCKER_HOST variants against the real engine: tcp:// through a socat proxy, TLS with
client certificates, unreachable engines, and the event/log streams dropping mid-run.

Readings taken where the contract leaves room:
- An engine that cannot be reached ends `dagd run` and `dagd test` with exit status 3 within
  seconds, with a message on stderr that names the engine and says it could not be reached.
- A TLS handshake the proxy refuses (client cert from another CA) is "could not be
  reached" too: the message names the engine or TLS/SSL.
- When the proxy dies and comes back, dagd reconnects its streams, asks the engine about
  its containers, and the run finishes as if nothing happened: the task's exit code and
  its log lines (before and after the drop) are all there.
"""
import os
import re
import subprocess
import time

import pytest

from conftest import (TIME_SCALE, Socat, env_with, free_port, make_ca, make_cert, wait_port)

CHAIN = """\
    dag: @DAG@
    tasks:
      a:
        image: @IMAGE@
        command: [sh, -c, "echo hello; echo out-of-a"]
      b:
        image: @IMAGE@
        command: [sh, -c, "echo got={{ ti.xcom_pull('a') }}"]
        depends_on: [a]
    """


def check_chain(dg, res):
    assert res.rc == 0, res
    tis = dg.tis()
    assert tis["a"]["state"] == "success" and tis["b"]["state"] == "success", tis
    assert tis["a"]["output"] == "out-of-a"
    assert tis["b"]["output"] == "got=out-of-a"
    assert dg.log_lines("a") == ["hello", "out-of-a"]
    assert dg.containers() == []


def test_tcp_through_socat(dg, socat_procs):
    port = free_port()
    socat_procs.append(Socat(port).start())
    f = dg.write(CHAIN)
    res = dg.run(f, env=env_with(DOCKER_HOST="tcp://127.0.0.1:%d" % port,
                                 DOCKER_TLS_VERIFY=None, DOCKER_CERT_PATH=None))
    check_chain(dg, res)


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    make_ca(d, "ca")
    make_cert(d, "ca", "server", "127.0.0.1", server=True)
    make_cert(d, "ca", "client", "dagd-client")
    make_ca(d, "other-ca")
    make_cert(d, "other-ca", "rogue", "dagd-rogue")
    good = d / "good"
    bad = d / "bad"
    for sub, cert in ((good, "client"), (bad, "rogue")):
        sub.mkdir()
        (sub / "ca.pem").write_bytes((d / "ca.pem").read_bytes())
        (sub / "cert.pem").write_bytes((d / (cert + ".pem")).read_bytes())
        (sub / "key.pem").write_bytes((d / (cert + "-key.pem")).read_bytes())
        os.chmod(sub / "key.pem", 0o600)
    return d


def tls_proxy(tls_dir, socat_procs):
    port = free_port()
    opts = ",cert=%s,key=%s,cafile=%s,verify=1" % (tls_dir / "server.pem",
                                                  tls_dir / "server-key.pem",
                                                  tls_dir / "ca.pem")
    socat_procs.append(Socat(port, "OPENSSL-LISTEN", opts).start())
    return port


def test_tls_with_client_cert(dg, socat_procs, tls_dir):
    port = tls_proxy(tls_dir, socat_procs)
    f = dg.write(CHAIN)
    res = dg.run(f, env=env_with(DOCKER_HOST="tcp://127.0.0.1:%d" % port, DOCKER_TLS_VERIFY="1",
                                 DOCKER_CERT_PATH=tls_dir / "good"))
    check_chain(dg, res)


def test_tls_client_cert_from_other_ca_fails_clearly(dg, socat_procs, tls_dir):
    port = tls_proxy(tls_dir, socat_procs)
    f = dg.write(CHAIN)
    t0 = time.monotonic()
    res = dg.run(f, timeout=40, env=env_with(DOCKER_HOST="tcp://127.0.0.1:%d" % port,
                                             DOCKER_TLS_VERIFY="1",
                                             DOCKER_CERT_PATH=tls_dir / "bad"))
    assert res.rc == 3, res
    assert time.monotonic() - t0 < 30 * TIME_SCALE, res
    assert re.search(r"engine|TLS|SSL", res.err, re.I), res
    assert dg.containers() == []


def test_tls_without_verify_env_talks_plain_http_and_fails(dg, socat_procs, tls_dir):
    """DOCKER_TLS_VERIFY unset against a TLS-only proxy: a plain request cannot work; dagd
    must still end in bounded time with an engine message and the status of an engine it
    cannot talk to (3), not hang."""
    port = tls_proxy(tls_dir, socat_procs)
    f = dg.write(CHAIN)
    res = dg.run(f, timeout=60, env=env_with(DOCKER_HOST="tcp://127.0.0.1:%d" % port,
                                             DOCKER_TLS_VERIFY=None, DOCKER_CERT_PATH=None))
    assert res.rc == 3, res
    assert re.search(r"engine", res.err, re.I), res


@pytest.mark.parametrize("host", ["unix:///nonexistent.sock", "tcp://127.0.0.1:{port}"])
def test_unreachable_engine(dg, host):
    port = free_port()
    assert wait_port(port, timeout=1, up=False)
    f = dg.write(CHAIN)
    res = dg.run(f, timeout=30, env=env_with(DOCKER_HOST=host.format(port=port),
                                             DOCKER_TLS_VERIFY=None, DOCKER_CERT_PATH=None))
    assert res.rc == 3, res
    assert res.elapsed < 10 * TIME_SCALE, res
    assert re.search(r"engine", res.err, re.I) and re.search(r"reach|connect", res.err, re.I), res
    assert "Traceback" not in res.err


def test_test_verb_unreachable_engine(dg):
    f = dg.write(CHAIN)
    res = dg.exec("test", f, "a", timeout=30,
                  env=env_with(DOCKER_HOST="unix:///nonexistent.sock", DOCKER_TLS_VERIFY=None))
    assert res.rc == 3, res
    assert re.search(r"engine", res.err, re.I), res


def start_behind_proxy(dg, socat_procs, task, script):
    """`dagd run` through a fresh tcp proxy, returned once a container runs: `task` runs
    script (its exit 4 means skipped), then `after` runs whatever became of it."""
    port = free_port()
    proxy = Socat(port).start()
    socat_procs.append(proxy)
    f = dg.write("""\
        dag: @DAG@
        tasks:
          %s:
            image: @IMAGE@
            command: [sh, -c, "%s"]
            skip_on_exit_code: [4]
          after:
            image: @IMAGE@
            command: [sh, -c, "echo after-ran"]
            depends_on: [%s]
            trigger_rule: all_done
        """ % (task, script, task))
    p = dg.popen("run", f, "--state", dg.state,
                 env=env_with(DOCKER_HOST="tcp://127.0.0.1:%d" % port, DOCKER_TLS_VERIFY=None,
                              DOCKER_CERT_PATH=None))
    deadline = time.monotonic() + 30 * TIME_SCALE
    running = []
    while time.monotonic() < deadline and not running and p.poll() is None:
        running = dg.containers(running_only=True)
        time.sleep(0.1)
    assert running, "the task's container never ran"
    return proxy, p


def finish_after_proxy_back(p):
    """The run's exit status and output, once the proxy is back."""
    try:
        out, err = p.communicate(timeout=60 * TIME_SCALE)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        pytest.fail("dagd did not finish after the proxy came back:\n%s\n%s"
                    % (out.decode()[-3000:], err.decode()[-3000:]))
    return p.returncode, out.decode(), err.decode()


def test_streams_resume_after_proxy_restart(dg, socat_procs):
    """The task runs 6 s; once its container runs, the proxy is killed with every
    connection it relays (the events and logs streams drop) and started again on the same
    port half a second later: the exit still comes through the events, and the log has
    every line once."""
    proxy, p = start_behind_proxy(dg, socat_procs, "slow", "echo begin; sleep 6; echo finish; exit 4")
    time.sleep(1.0)
    proxy.kill()
    time.sleep(0.5)
    proxy.start()
    rc, out, err = finish_after_proxy_back(p)
    assert rc == 0, (rc, out, err)
    tis = dg.tis()
    assert tis["slow"]["state"] == "skipped", tis
    assert tis["slow"]["exit_code"] == 4, tis
    assert tis["after"]["state"] == "success", tis
    assert dg.log_lines("slow") == ["begin", "finish"]
    assert dg.log_lines("after") == ["after-ran"]
    assert dg.containers() == []


def test_container_exits_while_engine_unreachable(dg, socat_procs):
    """The proxy is down while the container exits, so the `die` event is never seen on the
    stream: after reconnecting dagd must learn the exit code by inspecting the container."""
    proxy, p = start_behind_proxy(dg, socat_procs, "quick", "sleep 2; exit 4")
    proxy.kill()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and dg.containers(running_only=True):
        time.sleep(0.2)
    assert not dg.containers(running_only=True), "the container did not exit"
    time.sleep(1.0)
    proxy.start()
    rc, out, err = finish_after_proxy_back(p)
    assert rc == 0, (rc, out, err)
    tis = dg.tis()
    assert tis["quick"]["state"] == "skipped" and tis["quick"]["exit_code"] == 4, tis
    assert tis["after"]["state"] == "success", tis
    assert dg.containers() == []
