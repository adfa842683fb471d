"""docs/openapi.yaml against a live `dagd serve` with schemathesis: generated requests (valid
and invalid, for every operation, plus stateful sequences that follow ids from responses)
must never get a 5xx, and every documented response must match its schema. The server must
still answer afterwards.

schemathesis comes from the venv that `make pydeps` creates under build/venv; without it the
test is skipped with the reason (it fails instead when $CI is set).
"""
import os
import pathlib
import subprocess
import time

import pytest

from conftest import REPO, TIME_SCALE
from test_api import Server, dags_dir

VENV = pathlib.Path(os.environ.get("DAGD_VENV") or REPO / "build" / "venv")
SPEC = REPO / "docs" / "openapi.yaml"


def schemathesis_cmd():
    exe = VENV / "bin" / "schemathesis"
    if exe.is_file() and os.access(exe, os.X_OK):
        return [str(exe)]
    py = VENV / "bin" / "python"
    if py.is_file():
        p = subprocess.run([str(py), "-c", "import schemathesis"], capture_output=True)
        if p.returncode == 0:
            return [str(py), "-m", "schemathesis"]
    msg = "schemathesis not found in %s (run `make pydeps`)" % VENV
    if os.environ.get("CI"):
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


def test_openapi_fuzz(dg, tmp_path):
    cmd = schemathesis_cmd()
    d = dags_dir(dg)
    dg.write("""\
        dag: @DAG@
        description: fuzz target
        tags: [fuzz]
        tasks:
          a:
            image: @IMAGE@
            command: [sh, -c, "echo a"]
          b:
            image: @IMAGE@
            command: [sh, -c, "echo b"]
            depends_on: [a]
        """, name="dags/fuzz.yml")
    (d / "broken.yml").write_text("dag: [unclosed\n")
    srv = Server(dg, d)
    # one finished run, so that ids followed from responses lead somewhere real
    rid = srv.ok_json("POST", "/api/v1/dags/%s/runs" % dg.dag_id, {})["dag_run_id"]
    srv.wait_run(dg.dag_id, rid)

    report = tmp_path / "schemathesis"
    argv = cmd + [
        "run", str(SPEC),
        "--url", srv.base,
        "--header", "Authorization: Bearer " + srv.token,
        "--checks", "not_a_server_error,response_schema_conformance",
        "--max-examples", "12",
        "--seed", "20250101",
        "--workers", "1",
        "--request-timeout", "10",
        "--generation-database", "none",
        "--no-color",
        "--report", "junit", "--report-dir", str(report),
    ]
    env = dict(os.environ, SCHEMATHESIS_TELEMETRY="false", NO_COLOR="1")
    t0 = time.monotonic()
    p = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp_path,
                       timeout=240 * TIME_SCALE, stdin=subprocess.DEVNULL)
    elapsed = time.monotonic() - t0
    out = p.stdout + p.stderr
    assert p.returncode == 0, "schemathesis found problems (rc %d):\n%s\n--- server\n%s" % (
        p.returncode, out[-12000:], srv.log())
    assert "Test cases:" in out and " passed" in out, out[-4000:]
    assert elapsed < 180 * TIME_SCALE, "fuzzing took %.0fs" % elapsed

    # still alive and sane
    h = srv.get("/api/v1/health", auth=False)
    assert h.status == 200 and h.json()["status"] == "ok", h
    assert srv.ok_json("GET", "/api/v1/dags/" + dg.dag_id)["dag_id"] == dg.dag_id
    # let what the fuzzer triggered finish, so that no container outlives the test
    deadline = time.monotonic() + 120 * TIME_SCALE
    while True:
        h = srv.get("/api/v1/health", auth=False).json()
        if not h.get("runs_running") and not h.get("tasks_running"):
            break
        assert time.monotonic() < deadline, "runs still running:\n" + srv.log()
        time.sleep(0.5)
    # finished tries' containers are removed just after their outcome is recorded
    deadline = time.monotonic() + 30 * TIME_SCALE
    while dg.containers():
        if time.monotonic() > deadline:
            left = subprocess.run(["docker", "ps", "-a", "--filter", "label=io.dagd.dag=" + dg.dag_id, "--format",
                                   "{{.Names}} {{.Status}} {{.Labels}}"], capture_output=True, text=True).stdout
            pytest.fail("containers outlived their runs:\n%s\n--- server\n%s" % (left, srv.log()[-6000:]))
        time.sleep(0.5)
    assert srv.daemon.alive(), "dagd serve exited:\n" + srv.log()
