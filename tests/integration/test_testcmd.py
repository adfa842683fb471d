"""`dagd test DAG|FILE TASK`: one task, no dependencies, no state; the task's log lines
(its container's stdout and stderr) on stdout, status lines on stderr.

Readings of the contract taken here:
- "its log lines" are the container's stdout and stderr lines, as in a task log file, so
  both appear on dagd's stdout, each stream in order; nothing else is on stdout.
- Upstream outputs do not exist in test mode, so xcom_pull fails the task (exit 1) with a
  message naming xcom_pull on stderr.
- A DAG id is looked up in $DAGD_DAGS_FOLDER (the contract lists no --dags for `test`).
- An unknown task is an input error (exit 2).
"""
import os

import pytest

from conftest import containers

DAG = """\
dag: @DAG@
params: {region: kr}
tasks:
  a:
    image: @IMAGE@
    command: [echo, A-ran]
  b:
    image: @IMAGE@
    command: [sh, -c, "echo out-b; echo err-b >&2; echo ds={{ ds }}; echo region={{ params.region }}"]
    depends_on: [a]
  fails:
    image: @IMAGE@
    command: [sh, -c, "echo about-to-fail; exit 3"]
  pulls:
    image: @IMAGE@
    command: [echo, "{{ ti.xcom_pull('a') }}"]
    depends_on: [a]
"""


@pytest.fixture
def iso(dg):
    """An environment where any state dagd would write lands in watched, empty dirs."""
    base = dg.tmp / "iso"
    dirs = {k: base / k for k in ("home", "xdg", "statedir", "cwd")}
    for d in dirs.values():
        d.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items()
           if k != "DAGD_DAGS_FOLDER"}
    env["HOME"] = str(dirs["home"])
    env["XDG_STATE_HOME"] = str(dirs["xdg"])
    env["STATE_DIRECTORY"] = str(dirs["statedir"])
    dg.dagfile = dg.write(DAG, name="dags/the_dag.yml")
    yield env, dirs
    written = [str(p) for d in dirs.values() for p in d.rglob("*")]
    assert written == [], "dagd test wrote files: %s" % written


def test_runs_one_task_without_deps(dg, iso):
    env, dirs = iso
    res = dg.exec("test", dg.dagfile, "b", "--date", "2025-03-04", env=env, cwd=dirs["cwd"])
    assert res.rc == 0, res
    lines = res.out.splitlines()
    assert sorted(lines) == sorted(["out-b", "err-b", "ds=2025-03-04", "region=kr"]), res
    outs = [l for l in lines if l != "err-b"]
    assert outs == ["out-b", "ds=2025-03-04", "region=kr"], res
    assert "A-ran" not in res.out + res.err
    assert not dg.state.exists()
    assert containers(dg.dag_id) == []


def test_conf_overrides_params(dg, iso):
    env, dirs = iso
    res = dg.exec("test", dg.dagfile, "b", "--conf", '{"region": "us"}', env=env, cwd=dirs["cwd"])
    assert res.rc == 0, res
    assert "region=us" in res.out.splitlines(), res


def test_failing_task_exit_1(dg, iso):
    env, dirs = iso
    res = dg.exec("test", dg.dagfile, "fails", env=env, cwd=dirs["cwd"])
    assert res.rc == 1, res
    assert res.out.splitlines() == ["about-to-fail"], res
    assert "exit code 3" in res.err, res
    assert containers(dg.dag_id) == []


def test_xcom_pull_fails_in_test_mode(dg, iso):
    env, dirs = iso
    res = dg.exec("test", dg.dagfile, "pulls", env=env, cwd=dirs["cwd"])
    assert res.rc == 1, res
    assert "xcom_pull" in res.err, res
    assert res.out.strip() == "", res
    assert containers(dg.dag_id) == []


def test_by_dag_id(dg, iso):
    env, dirs = iso
    env = dict(env, DAGD_DAGS_FOLDER=str(dg.dagfile.parent))
    res = dg.exec("test", dg.dag_id, "a", env=env, cwd=dirs["cwd"])
    assert res.rc == 0, res
    assert res.out.splitlines() == ["A-ran"], res


def test_input_errors(dg, iso):
    env, dirs = iso
    res = dg.exec("test", dg.dagfile, "no_such_task", env=env, cwd=dirs["cwd"])
    assert res.rc == 2, res
    assert "no_such_task" in res.err, res
    res = dg.exec("test", dg.dagfile, env=env, cwd=dirs["cwd"])
    assert res.rc == 2, res
    res = dg.exec("test", dg.tmp / "missing.yml", "a", env=env, cwd=dirs["cwd"])
    assert res.rc == 2, res
    res = dg.exec("test", dg.dagfile, "b", "--conf", "[1]", env=env, cwd=dirs["cwd"])
    assert res.rc == 2, res
