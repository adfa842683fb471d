"""Which image a try ran (docs/dags.md, "Tries"): every try records the engine's image id of
the image its container was made from, and the repository digest when the image has one.

Two tiny images are built from the test image under one name; a task runs from the first,
the name is moved to the second and the task is cleared to run again: try 1 still says the
first image's id, try 2 the second's, through the API (each try and the task instance),
`dagd tasks`, the state database and the try's log header. Images built here were never
pushed or pulled, so their digest is null. Fast enough to run in every pass, and the image
lookups it checks are the C paths the sanitizer and valgrind passes are for.
"""
import json
import subprocess
import tempfile
import uuid

import pytest

from conftest import IMAGE, docker
from test_cli_client import Server

TASK_DAG = """\
dag: @DAG@
tasks:
  show:
    image: %s
    command: ["cat", "/which"]
"""


def build(name, which):
    """An image holding /which = `which`, tagged name; its engine id."""
    with tempfile.TemporaryDirectory(prefix="dagd-itest-imgid-") as ctx:
        with open(ctx + "/Dockerfile", "w") as f:
            f.write("FROM %s\nCOPY which /which\n" % IMAGE)
        with open(ctx + "/which", "w") as f:
            f.write(which + "\n")
        p = subprocess.run(["docker", "build", "-q", "-t", name, ctx], capture_output=True, text=True,
                           timeout=300, stdin=subprocess.DEVNULL, env={"DOCKER_BUILDKIT": "0", "PATH": "/usr/bin:/bin"})
        if p.returncode != 0:
            pytest.fail("building %s failed:\n%s\n%s" % (name, p.stdout, p.stderr))
    return docker("image", "inspect", "--format", "{{.Id}}", name).stdout.strip()


@pytest.fixture
def images():
    name = "dagd-test/imgid-%s:v" % uuid.uuid4().hex[:12]
    ids = []
    yield name, ids
    for i in ids:
        docker("image", "rm", "-f", i, check=False)


def short(image_id):
    return image_id.split(":", 1)[1][:12]


def tasks_row(srv, run_id, task):
    res = srv.cli("tasks", srv.dg.dag_id, run_id)
    assert res.rc == 0, res
    rows = [l.split(None, 6) for l in res.out.splitlines()]
    assert rows[0][5] == "IMAGE_ID", res.out
    got = {r[0]: r for r in rows[1:]}
    return got[task]


def test_each_try_keeps_the_image_it_ran(dg, images):
    name, ids = images
    first = build(name, "A")
    ids.append(first)
    assert first.startswith("sha256:")
    srv = Server(dg)
    srv.write(TASK_DAG.replace("%s", name))

    res = srv.cli("trigger", dg.dag_id, "--wait", timeout=90)
    assert res.rc == 0, res
    run_id = res.out.splitlines()[0]
    ti = srv.tis(run_id)["show"]
    assert ti["image"] == name
    assert ti["image_id"] == first and ti["image_digest"] is None, ti
    row = tasks_row(srv, run_id, "show")
    assert row[1] == "success" and row[5] == short(first), row

    # the name moves to another image; the task runs again as try 2
    second = build(name, "B")
    ids.append(second)
    assert second != first
    res = srv.cli("clear", dg.dag_id, run_id, "show")
    assert res.rc == 0, res
    srv.wait("try 2", lambda: srv.tis(run_id)["show"]["try_number"] == 2
             and srv.tis(run_id)["show"]["state"] == "success", timeout=90)

    doc = srv.daemon.get("/dags/%s/runs/%s/tasks/show" % (dg.dag_id, run_id))
    tries = {t["try_number"]: t for t in doc["tries"]}
    assert tries[1]["image_id"] == first and tries[1]["image_digest"] is None, tries
    assert tries[2]["image_id"] == second and tries[2]["image_digest"] is None, tries
    assert doc["image_id"] == second, doc
    assert tasks_row(srv, run_id, "show")[5] == short(second)
    rows = dg.tries("show", run_id=run_id)
    assert [(r["image_id"], r["image_digest"]) for r in rows] == [(first, None), (second, None)], rows

    # what each try printed is its own image's, and its log header names that image
    for n, (image_id, which) in enumerate([(first, "A"), (second, "B")], start=1):
        res = srv.cli("logs", dg.dag_id, run_id, "show", "--try", str(n))
        assert res.rc == 0 and res.out == which + "\n", res
        res = srv.cli("logs", dg.dag_id, run_id, "show", "--try", str(n), "--header")
        assert res.rc == 0, res
        lines = res.out.splitlines()
        assert lines[-1] == which, res
        assert "[dagd] image %s" % name in lines[0] and image_id in lines[0], res
        assert "digest: none" in lines[0], res
        assert dg.log_header("show", n, run_id=run_id) == lines[:-1]
    # the web UI's view: the header's lines marked as dagd's, then the output
    base = "/api/v1/dags/%s/runs/%s/tasks/show/logs/1" % (dg.dag_id, run_id)
    st, text = srv.daemon.request("GET", base + "?streams=1&header=1", raw=True)
    assert st == 200 and text.splitlines()[0].startswith("dagd\t[dagd] image "), text
    assert text.splitlines()[-1] == "stdout\tA", text
    st, text = srv.daemon.request("GET", base + "?streams=1", raw=True)
    assert st == 200 and text == "stdout\tA\n", text
    st, text = srv.daemon.request("GET", base + "?header=maybe", raw=True)
    assert st == 400 and "header" in text, text
