"""Behaviour of `dagd run` beyond the basics: secrets, env files, volumes, concurrency
limits and priorities, depends_on_past, output limits, fan-out, container removal and
timeouts of commands that ignore SIGTERM.

Readings taken where the contract leaves room:
- Redaction replaces the secret text wherever it appears in a log line by `***`, also
  inside a longer word (a connection URI keeps its other parts).
- A relative bind-mount source (`./data:/data`) is resolved against the DAG file's folder,
  as Compose resolves it against the compose file's.
- A task's start_ms is when its container (or check) started, so with one slot the
  intervals [start_ms, end_ms] of container tasks do not overlap.
- depends_on_past in the foreground: a task whose previous run did not succeed never
  starts; the run ends failed at once with the reason on stderr.
- A missing `output: {file: ...}` fails the try with the engine's own message, which names
  the path.
"""
import json
import os
import re
import time

import pytest

from conftest import TIME_SCALE, docker, env_with, inspect

SECRET = "s3cr3t-value"
PASSWORD = "pw-s3cret"
CONN = "postgres://u:%s@h:5432/db" % PASSWORD


def intervals(tis, names):
    return sorted((tis[n]["start_ms"], tis[n]["end_ms"], n) for n in names)


def max_overlap(ivs):
    events = []
    for s, e, _ in ivs:
        events += [(s, 1), (e, -1)]
    cur = best = 0
    for _, d in sorted(events, key=lambda x: (x[0], x[1])):
        cur += d
        best = max(best, cur)
    return best


# --------------------------------------------------------------------------- secrets

def test_secret_env_value_redacted(dg):
    f = dg.write("""\
        dag: @DAG@
        tasks:
          leak:
            image: @IMAGE@
            env:
              TOKEN: {secret: %s}
              PLAIN: visible
            command: [sh, -c, 'echo "token=$TOKEN"; echo "again $TOKEN" >&2; [ "$TOKEN" = %s ] && echo same; echo "$PLAIN"']
        """ % (SECRET, SECRET))
    res = dg.run(f)
    assert res.rc == 0, res
    log = dg.log("leak")
    assert SECRET not in log, log
    # stdout and stderr are separate pipes: only their own order is certain
    assert sorted(log.splitlines()) == sorted(["token=***", "again ***", "same", "visible"]), log
    assert SECRET not in res.out and SECRET not in res.err, res
    t = dg.exec("test", f, "leak")
    assert t.rc == 0, t
    assert SECRET not in t.out and SECRET not in t.err, t
    assert "token=***" in t.out, t


def test_connection_injected_and_redacted(dg):
    f = dg.write("""\
        dag: @DAG@
        tasks:
          use:
            image: @IMAGE@
            connections: [mart]
            command: [sh, -c, 'echo "$DAGD_CONN_MART"; [ "$DAGD_CONN_MART" = "%s" ] && echo exact; echo "pw={{ conn.mart.password }} host={{ conn.mart.host }}"']
        """ % CONN)
    res = dg.run(f, env=env_with(DAGD_CONN_MART=CONN))
    assert res.rc == 0, res
    log = dg.log("use")
    assert PASSWORD not in log, log
    lines = log.splitlines()
    assert lines[1] == "exact", lines
    assert lines[0] == "postgres://u:***@h:5432/db", lines
    assert lines[2] == "pw=*** host=h", lines
    assert PASSWORD not in res.out and PASSWORD not in res.err, res
    rows = dg.rows("SELECT output, message FROM task_instances")
    assert PASSWORD not in json.dumps(rows), rows


def test_unknown_connection_env_missing(dg):
    f = dg.write("""\
        dag: @DAG@
        tasks:
          use:
            image: @IMAGE@
            connections: [nowhere_conn]
            command: ["true"]
        """)
    res = dg.run(f, env=env_with(DAGD_CONN_NOWHERE_CONN=None))
    assert res.rc in (1, 2), res
    text = res.err + res.out
    if res.rc == 1:
        text += dg.tis()["use"]["message"] or ""
    assert "nowhere_conn" in text.lower(), res


# --------------------------------------------------------------------------- env_file, volumes

def test_env_file_relative_to_dag_file(dg):
    sub = dg.tmp / "dags" / "team"
    sub.mkdir(parents=True)
    (sub / "vars.env").write_text("# settings\nFROM_FILE=file-value\nBOTH=from-file\n\n"
                                  "WITH_EQ=a=b\n")
    f = dg.write("""\
        dag: @DAG@
        tasks:
          show:
            image: @IMAGE@
            env_file: vars.env
            env: {BOTH: from-env}
            command: [sh, -c, 'echo "$FROM_FILE|$BOTH|$WITH_EQ"']
        """, name="dags/team/dag.yml")
    # the working directory is dg.tmp, not the DAG file's folder
    res = dg.run(f)
    assert res.rc == 0, res
    assert dg.log_lines("show") == ["file-value|from-env|a=b"]


def test_missing_env_file_fails_clearly(dg):
    f = dg.write("""\
        dag: @DAG@
        tasks:
          show:
            image: @IMAGE@
            env_file: nope.env
            command: ["true"]
        """)
    res = dg.run(f)
    assert res.rc in (1, 2), res
    text = res.err + res.out
    if res.rc == 1:
        text += dg.tis()["show"]["message"] or ""
    assert "nope.env" in text, res


def test_volumes_absolute_and_relative(dg):
    absdir = dg.tmp / "abs"
    absdir.mkdir()
    absdir.chmod(0o777)
    dagdir = dg.tmp / "project"
    (dagdir / "data").mkdir(parents=True)
    (dagdir / "data").chmod(0o777)
    (dagdir / "data" / "in.txt").write_text("input-line\n")
    f = dg.write("""\
        dag: @DAG@
        tasks:
          write:
            image: @IMAGE@
            volumes: ["%s:/abs", "./data:/data"]
            command: [sh, -c, "echo abs-{{ ds }} > /abs/out.txt; cat /data/in.txt > /data/copy.txt; echo done"]
        """ % absdir, name="project/dag.yml")
    res = dg.run(f, "--date", "2025-03-04")
    assert res.rc == 0, res
    assert (absdir / "out.txt").read_text() == "abs-2025-03-04\n"
    assert (dagdir / "data" / "copy.txt").read_text() == "input-line\n"
    assert not (dg.tmp / "data").exists()


def run_with_volume(dg, volume, command, **env):
    """`dagd run` of one task binding volume; returns (result, the task instance). The
    volume comes through a template, so the policy judges it when the try renders it (a
    literal one is judged by validation already: test_volume_policy_in_validation)."""
    f = dg.write("""\
        dag: @DAG@
        params: {volume: "%s"}
        tasks:
          mount:
            image: @IMAGE@
            volumes: ["{{ params.volume }}"]
            command: [sh, -c, "%s"]
        """ % (volume, command))
    res = dg.run(f, timeout=40, env=env_with(**env))
    return res, dg.tis(run_id=dg.runs()[-1]["run_id"])["mount"]


@pytest.mark.parametrize("source", ["/var/run/docker.sock", "/run", "/"])
def test_volume_policy_in_validation(dg, source):
    """A literal bind the policy refuses is refused before anything runs, with the same
    message by `validate` and `run` (and an import error under serve)."""
    f = dg.write("""\
        dag: @DAG@
        tasks:
          mount:
            image: @IMAGE@
            volumes: ["%s:/host:ro"]
            command: ["true"]
        """ % source)
    env = env_with(DAGD_POLICY_ALLOW_DOCKER_SOCKET=None)
    res = dg.run(f, timeout=40, env=env)
    assert res.rc == 2, res
    msg = "task 'mount': volumes: %s gives the container the Docker engine's socket" % source
    assert msg in res.err, res
    val = dg.exec("validate", str(f), env=env)
    assert val.rc == 1 and msg in val.err, val
    assert [l for l in val.err.splitlines() if "error:" in l] == \
        [l for l in res.err.splitlines() if "error:" in l], (val, res)
    assert dg.containers() == []


@pytest.mark.parametrize("source", ["/var/run/docker.sock", "/run", "/"])
def test_volume_policy_refuses_the_engine_socket(dg, source):
    """The socket itself or any folder above it gives the container root on the host."""
    res, ti = run_with_volume(dg, source + ":/host:ro", "true", DAGD_POLICY_ALLOW_DOCKER_SOCKET=None)
    assert res.rc == 1, res
    assert ti["state"] == "failed", ti
    assert "Docker engine's socket" in ti["message"] and "allow_docker_socket" in ti["message"], ti
    assert ti["container_id"] is None, ti
    assert dg.containers() == []


def test_volume_policy_allows_the_socket_when_asked(dg):
    """allow_docker_socket allows the engine's socket; /run, which holds other runtimes'
    sockets too, also needs policy.allowed_sensitive_paths (tests/integration/test_policy.py)."""
    res, ti = run_with_volume(dg, "/var/run/docker.sock:/host.sock", "test -S /host.sock && echo seen",
                              DAGD_POLICY_ALLOW_DOCKER_SOCKET="true")
    assert res.rc == 0, res
    assert ti["output"] == "seen", ti


def test_volume_policy_allowed_prefixes(dg):
    ok, other = dg.tmp / "allowed" / "data", dg.tmp / "elsewhere"
    ok.mkdir(parents=True)
    other.mkdir()
    prefixes = "%s/,/srv/none" % (dg.tmp / "allowed")
    res, ti = run_with_volume(dg, "%s:/d" % ok, "echo in", DAGD_POLICY_ALLOWED_VOLUME_PREFIXES=prefixes)
    assert res.rc == 0 and ti["output"] == "in", (res, ti)
    res, ti = run_with_volume(dg, "%s:/d" % other, "echo in", DAGD_POLICY_ALLOWED_VOLUME_PREFIXES=prefixes)
    assert res.rc == 1, res
    assert "outside policy.allowed_volume_prefixes" in ti["message"], ti
    assert str(other) in ti["message"], ti


def test_run_reads_server_settings_from_the_environment(dg):
    """`dagd run` takes the DAGD_* settings that bear on one run, checked as the server
    checks them."""
    f = dg.write("""\
        dag: @DAG@
        tasks:
          a: {image: "@IMAGE@", command: [sleep, "1"], pool: one}
          b: {image: "@IMAGE@", command: [sleep, "1"], pool: one}
          c: {image: "@IMAGE@", command: [sleep, "1"]}
        """)
    res = dg.run(f, timeout=60, env=env_with(DAGD_POOLS="one=1"))
    assert res.rc == 0, res
    tis = dg.tis()
    assert max_overlap(intervals(tis, ["a", "b"])) == 1, tis
    assert max_overlap(intervals(tis, ["a", "b", "c"])) == 2, tis
    res = dg.run(f, env=env_with(DAGD_PARALLELISM="many"))
    assert res.rc == 2, res
    assert "DAGD_PARALLELISM" in res.err and "many" in res.err, res


# --------------------------------------------------------------------------- concurrency

def test_parallelism_one_runs_by_priority(dg):
    f = dg.write("""\
        dag: @DAG@
        tasks:
          low:
            image: @IMAGE@
            command: [sleep, "1"]
            priority_weight: 1
          high:
            image: @IMAGE@
            command: [sleep, "1"]
            priority_weight: 10
          mid:
            image: @IMAGE@
            command: [sleep, "1"]
            priority_weight: 5
        """)
    res = dg.run(f, env=env_with(DAGD_PARALLELISM="1"))
    assert res.rc == 0, res
    tis = dg.tis()
    ivs = intervals(tis, ["low", "mid", "high"])
    assert [n for _, _, n in ivs] == ["high", "mid", "low"], ivs
    for (s1, e1, _), (s2, e2, _) in zip(ivs, ivs[1:]):
        assert e1 <= s2, ivs
    assert dg.containers() == []


def test_max_active_tasks_bounds_overlap(dg):
    f = dg.write("""\
        dag: @DAG@
        max_active_tasks: 2
        tasks:
          t1: {image: "@IMAGE@", command: [sleep, "2"]}
          t2: {image: "@IMAGE@", command: [sleep, "2"]}
          t3: {image: "@IMAGE@", command: [sleep, "2"]}
          t4: {image: "@IMAGE@", command: [sleep, "2"]}
        """)
    res = dg.run(f, timeout=60)
    assert res.rc == 0, res
    tis = dg.tis()
    ivs = intervals(tis, ["t1", "t2", "t3", "t4"])
    assert max_overlap(ivs) == 2, ivs
    assert dg.containers() == []


def test_wide_fan_out(dg):
    n = 30
    body = "dag: @DAG@\ntasks:\n" + "".join(
        "  t%02d:\n    image: @IMAGE@\n    command: [sh, -c, \"sleep 3; echo t%02d\"]\n" % (i, i)
        for i in range(n))
    f = dg.write(body, dedent=False)
    res = dg.run(f, timeout=150)
    assert res.rc == 0, res
    tis = dg.tis()
    assert len(tis) == n
    for i in range(n):
        ti = tis["t%02d" % i]
        assert ti["state"] == "success", ti
        assert ti["output"] == "t%02d" % i, ti
    ivs = intervals(tis, list(tis))
    assert max_overlap(ivs) >= 5, ivs
    assert dg.containers() == []


# --------------------------------------------------------------------------- depends_on_past

DOP = """\
    dag: @DAG@
    params: {code: 0}
    tasks:
      gated:
        image: @IMAGE@
        command: [sh, -c, "echo ran-{{ ds }}; exit {{ params.code }}"]
        depends_on_past: true
      free:
        image: @IMAGE@
        command: [echo, free]
    """


def test_depends_on_past_blocks_after_failure(dg):
    f = dg.write(DOP)
    r1 = dg.run(f, "--date", "2025-01-01", "--conf", '{"code": 3}')
    assert r1.rc == 1, r1
    r2 = dg.run(f, "--date", "2025-01-02", timeout=30)
    assert r2.rc == 1, r2
    assert r2.elapsed < 15 * TIME_SCALE, r2
    assert "depends_on_past" in r2.err, r2
    runs = dg.runs()
    assert len(runs) == 2
    second = max(runs, key=lambda r: r["logical_ms"])
    assert second["state"] == "failed", runs
    tis = dg.tis(run_id=second["run_id"])
    assert tis["gated"]["start_ms"] is None, tis["gated"]
    assert tis["gated"]["state"] != "success", tis["gated"]
    assert tis["free"]["state"] == "success", tis["free"]
    logs = dg.state / "logs" / dg.dag_id / second["run_id"] / "gated"
    assert not logs.exists() or not any(logs.iterdir())
    assert dg.containers() == []


def test_depends_on_past_runs_after_success(dg):
    f = dg.write(DOP)
    r1 = dg.run(f, "--date", "2025-01-01")
    assert r1.rc == 0, r1
    r2 = dg.run(f, "--date", "2025-01-02")
    assert r2.rc == 0, r2
    runs = dg.runs()
    assert len(runs) == 2
    for r in runs:
        tis = dg.tis(run_id=r["run_id"])
        assert tis["gated"]["state"] == "success", tis
    ds = sorted(dg.log("gated", run_id=r["run_id"]).strip() for r in runs)
    assert ds == ["ran-2025-01-01", "ran-2025-01-02"], ds


# --------------------------------------------------------------------------- output

def test_output_file_capped_at_64k(dg):
    f = dg.write("""\
        dag: @DAG@
        tasks:
          big:
            image: @IMAGE@
            command: [sh, -c, "yes abcdefghijklmnopqrstuvwxyz012345 | head -c 100000 > /tmp/out; echo written"]
            output: {file: /tmp/out}
          line:
            image: @IMAGE@
            command: [sh, -c, "yes x | head -c 140000 | tr -d '\\\\n'; echo; echo"]
        """)
    res = dg.run(f, timeout=60)
    assert res.rc == 0, res
    tis = dg.tis()
    out = tis["big"]["output"]
    assert len(out.encode()) == 65536, len(out)
    assert out == ("abcdefghijklmnopqrstuvwxyz012345\n" * 2000)[:65536]
    line = tis["line"]["output"]
    assert len(line.encode()) == 65536 and set(line) == {"x"}, len(line)


def test_output_file_missing_fails_with_engine_message(dg):
    f = dg.write("""\
        dag: @DAG@
        tasks:
          nofile:
            image: @IMAGE@
            command: [echo, hi]
            output: {file: /tmp/does-not-exist}
          after:
            image: @IMAGE@
            command: ["true"]
            depends_on: [nofile]
        """)
    res = dg.run(f, timeout=60)
    assert res.rc == 1, res
    tis = dg.tis()
    assert tis["nofile"]["state"] == "failed", tis
    msg = tis["nofile"]["message"] or ""
    assert "/tmp/does-not-exist" in msg and re.search(r"could not find|no such", msg, re.I), msg
    assert tis["after"]["state"] == "upstream_failed", tis
    assert dg.containers() == []


# --------------------------------------------------------------------------- removal, timeout

def test_remove_never_and_on_success_with_failure(dg):
    f = dg.write("""\
        dag: @DAG@
        tasks:
          keep:
            image: @IMAGE@
            command: [echo, kept]
            remove: never
          failing:
            image: @IMAGE@
            command: [sh, -c, "exit 6"]
            remove: on_success
          fine:
            image: @IMAGE@
            command: ["true"]
            remove: on_success
        """)
    res = dg.run(f)
    assert res.rc == 1, res
    tis = dg.tis()
    left = {inspect(c)["Config"]["Labels"]["io.dagd.task"]: inspect(c) for c in dg.containers()}
    try:
        assert set(left) == {"keep", "failing"}, left
        assert left["keep"]["State"]["ExitCode"] == 0
        assert left["failing"]["State"]["ExitCode"] == 6
        assert left["keep"]["Id"] == tis["keep"]["container_id"]
        assert left["failing"]["Id"] == tis["failing"]["container_id"]
        assert left["keep"]["State"]["Status"] == "exited"
    finally:
        dg.remove_containers()
    assert dg.log_lines("keep") == ["kept"]


def test_timeout_kills_command_ignoring_sigterm(dg):
    f = dg.write("""\
        dag: @DAG@
        tasks:
          stubborn:
            image: @IMAGE@
            command: [sh, -c, "trap '' TERM; echo started; sleep 60; echo never"]
            timeout: 2s
        """)
    t0 = time.monotonic()
    res = dg.run(f, timeout=60)
    took = time.monotonic() - t0
    assert res.rc == 1, res
    ti = dg.tis()["stubborn"]
    assert ti["state"] == "failed", ti
    assert "timed out after 2s" in (ti["message"] or ""), ti
    # SIGTERM is ignored: the container only ends with SIGKILL after the 10 s grace
    assert 11 <= took < 40 * TIME_SCALE, took
    assert ti["end_ms"] - ti["start_ms"] >= 11000, ti
    assert dg.log_lines("stubborn") == ["started"]
    assert dg.containers() == []
