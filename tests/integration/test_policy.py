"""The container policy (docs/dags.md, "The container policy"; docs/operations.md,
"The container policy"): each refused form, judged by `dagd validate` on what a file says
and at run time on what a try renders, and the opt-ins that allow them.

The judge itself (path cleaning, every sensitive path, the engine socket's own rule) is
unit-tested in tests/unit/exec/test_policy.c; here each form goes through dagd for real.
"""
import json
import os
import socket

from conftest import IMAGE, docker, env_with, inspect

POLICY_VARS = ("DAGD_POLICY_ALLOW_PRIVILEGED", "DAGD_POLICY_ALLOW_DOCKER_SOCKET",
               "DAGD_POLICY_ALLOWED_VOLUME_PREFIXES", "DAGD_POLICY_ALLOW_HOST_NETWORK",
               "DAGD_POLICY_ALLOW_CONTAINER_NETWORK", "DAGD_POLICY_ALLOWED_SENSITIVE_PATHS")
SENSITIVE = "a sensitive host path; refused by policy unless policy.allowed_sensitive_paths lists it"


def policy_env(**kw):
    """The environment with the default policy, plus kw."""
    env = {v: None for v in POLICY_VARS}
    env.update(kw)
    return env_with(**env)


def error_lines(text):
    return [l for l in text.splitlines() if ": error: " in l]


def test_validate_reports_every_refused_form(dg):
    """Every form the default policy refuses is reported by `dagd validate` at the task's
    file:line:col, one line each, and `dagd run` refuses the file with the same lines
    before anything runs."""
    os.symlink("/etc", str(dg.tmp / "etclink"))
    (dg.tmp / "data").mkdir()
    dotdot = str(dg.tmp) + "/.." * (str(dg.tmp).count("/") + 1) + "/etc"
    f = dg.write("""\
        dag: @DAG@
        defaults: {command: ["true"]}
        tasks:
          priv: {image: @IMAGE@, privileged: true}
          hostnet: {image: @IMAGE@, network: host}
          joined: {image: @IMAGE@, network: "container:dagd-policy-nowhere"}
          etc: {image: @IMAGE@, volumes: ["/etc:/h:ro"]}
          docker_state: {image: @IMAGE@, volumes: ["/var/lib/docker:/h:ro"]}
          proc: {image: @IMAGE@, volumes: ["/proc:/h:ro"]}
          root: {image: @IMAGE@, volumes: ["/:/h:ro"]}
          link: {image: @IMAGE@, volumes: ["%s/etclink:/h:ro"]}
          dotdot: {image: @IMAGE@, volumes: ["%s:/h:ro"]}
          containerd: {image: @IMAGE@, volumes: ["/run/containerd/containerd.sock:/s"]}
          fine: {image: @IMAGE@, network: dagd-policy-net, volumes: ["%s/data:/d", "named:/n"]}
        """ % (dg.tmp, dotdot, dg.tmp))
    where = "%s:%%d:3: error: task '%%s': " % f
    expected = [
        where % (4, "priv") + "privileged: true is refused by policy (policy.allow_privileged)",
        where % (5, "hostnet") + "network: host gives the container the host's network stack; refused by "
        "policy (policy.allow_host_network)",
        where % (6, "joined") + "network: container:dagd-policy-nowhere joins another container's network "
        "stack; refused by policy (policy.allow_container_network)",
        where % (7, "etc") + "volumes: /etc is " + SENSITIVE,
        where % (8, "docker_state") + "volumes: /var/lib/docker is " + SENSITIVE,
        where % (9, "proc") + "volumes: /proc is " + SENSITIVE,
        where % (10, "root") + "volumes: / gives the container the Docker engine's socket; refused by policy "
        "(policy.allow_docker_socket)",
        where % (11, "link") + "volumes: %s/etclink is %s (it is /etc on the host)" % (dg.tmp, SENSITIVE),
        where % (12, "dotdot") + "volumes: %s is %s (it is /etc on the host)" % (dotdot, SENSITIVE),
        where % (13, "containerd") + "volumes: /run/containerd/containerd.sock is under /run/containerd, "
        + SENSITIVE,
    ]
    env = policy_env()
    val = dg.exec("validate", str(f), env=env)
    assert val.rc == 1, val
    assert error_lines(val.err) == expected, val
    res = dg.run(f, env=env)
    assert res.rc == 2, res
    assert error_lines(res.err) == expected, res
    assert dg.containers() == []


def test_binds_from_the_run_conf_are_judged_when_rendered(dg):
    """A bind source that comes from dag_run.conf is judged once the try renders it: the
    try fails with the reason, no container is made, and the other tasks run."""
    os.symlink("/", str(dg.tmp / "hostroot"))
    (dg.tmp / "data").mkdir()
    (dg.tmp / "data").chmod(0o777)
    f = dg.write("""\
        dag: @DAG@
        defaults: {command: ["true"]}
        tasks:
          etc: {image: @IMAGE@, volumes: ["{{ dag_run.conf.etc }}:/h:ro"]}
          proc: {image: @IMAGE@, volumes: ["{{ dag_run.conf.proc }}:/h:ro"]}
          sock: {image: @IMAGE@, volumes: ["{{ dag_run.conf.sock }}:/s"]}
          fine:
            image: @IMAGE@
            volumes: ["{{ dag_run.conf.fine }}:/d"]
            command: [sh, -c, "echo ok > /d/f; echo ok"]
        """)
    conf = {"etc": "/etc", "proc": "%s/hostroot/proc" % dg.tmp,
            "sock": "/run/containerd/containerd.sock", "fine": "%s/data" % dg.tmp}
    val = dg.exec("validate", str(f), env=policy_env())
    assert val.rc == 0, val
    res = dg.run(f, "--conf", json.dumps(conf), env=policy_env())
    assert res.rc == 1, res
    tis = dg.tis(run_id=dg.the_run()["run_id"])
    want = {
        "etc": "volumes: /etc is " + SENSITIVE,
        "proc": "volumes: %s/hostroot/proc is %s (it is /proc on the host)" % (dg.tmp, SENSITIVE),
        "sock": "volumes: /run/containerd/containerd.sock is under /run/containerd, " + SENSITIVE,
    }
    for task, msg in want.items():
        ti = tis[task]
        assert ti["state"] == "failed", ti
        assert ti["message"] == msg, ti
        assert ti["container_id"] is None, ti
    assert tis["fine"]["state"] == "success" and tis["fine"]["output"] == "ok", tis["fine"]
    assert (dg.tmp / "data" / "f").read_text() == "ok\n"
    assert dg.containers() == []


def test_opt_ins_allow_each_form(dg):
    """Each opt-in allows its form, for real, in one run:
    - policy.allowed_sensitive_paths allows that path and below; a link to it is judged,
      and mounted, as the path it leads to;
    - with policy.allow_host_network, `network: host` is the engine's host mode (no network
      to create, no alias): the container sees the host's name;
    - with policy.allow_container_network, `network: container:NAME` joins that container's
      network stack (it sees that container's name), and no network named
      `container:NAME` is created."""
    os.symlink("/etc", str(dg.tmp / "etclink"))
    peer = "%s_peer" % dg.dag_id
    docker("run", "-d", "--name", peer, IMAGE, "sleep", "60")
    try:
        f = dg.write("""\
            dag: @DAG@
            tasks:
              read: {image: @IMAGE@, volumes: ["%s/etclink/:/hostetc:ro"], command: [cat, /hostetc/hostname]}
              on_host: {image: @IMAGE@, network: host, command: [hostname]}
              on_peer: {image: @IMAGE@, network: "container:%s", command: [hostname]}
            """ % (dg.tmp, peer))
        env = policy_env(DAGD_POLICY_ALLOWED_SENSITIVE_PATHS="/etc", DAGD_POLICY_ALLOW_HOST_NETWORK="true",
                         DAGD_POLICY_ALLOW_CONTAINER_NETWORK="true")
        res = dg.run(f, env=env)
        assert res.rc == 0, res
        tis = dg.tis(run_id=dg.the_run()["run_id"])
        assert tis["read"]["output"] == open("/etc/hostname").read().strip(), tis["read"]
        assert tis["on_host"]["output"] == socket.gethostname(), tis["on_host"]
        assert tis["on_peer"]["output"] == inspect(peer)["Config"]["Hostname"], tis["on_peer"]
        nets = docker("network", "ls", "--format", "{{.Name}}").stdout.split()
        assert "container:" + peer not in nets, nets
    finally:
        docker("rm", "-f", peer, check=False)
        docker("network", "rm", "container:" + peer, check=False)  # what dagd made before the fix
