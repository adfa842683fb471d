"""The dagd container image (docs/images.md): built from this tree by `make`, small, not
root, nothing in it but the binary and what it needs, listening beyond the container's
loopback only when told to, and healthy by its own HEALTHCHECK (`dagd health`).

The images are built by the Makefile (cached: build/images/*.stamp, the engine's layer
cache and the downloads in ~/.cache/dagd), so a warm run only checks them. They hold a
plain build of dagd, so these tests run in the plain pass only: not against the ASan
build (`make check`), not under valgrind. When an image cannot be built they fail under
$CI and are skipped with the reason elsewhere.
"""
import io
import json
import os
import subprocess
import tarfile
import time
import urllib.request
import uuid

import pytest

from conftest import TIME_SCALE, docker
from image_helpers import build_images, plain_pass_only


pytestmark = plain_pass_only("the images hold a plain build of dagd")

TAG = "local"
DAGD_IMAGE = "dagd/dagd:" + TAG
MAX_SIZE = 30 * 1000 * 1000  # docker's MB


@pytest.fixture(scope="module")
def dagd_image(docker_engine):
    build_images("image-dagd")
    return DAGD_IMAGE


class Container:
    """One `docker run -d` of the test's own, removed with its anonymous volumes after."""

    def __init__(self, *args):
        self.name = "dagd-itest-img-" + uuid.uuid4().hex[:10]
        docker("run", "-d", "--name", self.name, *args)

    def state(self):
        return json.loads(docker("inspect", self.name).stdout)[0]["State"]

    def ip(self):
        nets = json.loads(docker("inspect", self.name).stdout)[0]["NetworkSettings"]["Networks"]
        return next(n["IPAddress"] for n in nets.values() if n["IPAddress"])

    def wait_health(self, want="healthy", timeout=40):
        deadline = time.monotonic() + timeout * TIME_SCALE
        while True:
            st = self.state()
            health = (st.get("Health") or {}).get("Status")
            if health == want:
                return st
            assert st["Running"], "the container stopped: %s\n%s" % (st, self.logs())
            assert time.monotonic() < deadline, "not %s after %ss: %s\n%s" % (want, timeout, st, self.logs())
            time.sleep(0.5)

    def logs(self):
        p = docker("logs", self.name, check=False)
        return (p.stdout + p.stderr)[-3000:]

    def remove(self):
        docker("rm", "-f", "-v", self.name, check=False)


def http_status(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, None
    except OSError as e:
        return None, str(e)


def test_dagd_image_is_small_not_root_and_holds_only_dagd(dagd_image):
    img = json.loads(docker("image", "inspect", dagd_image).stdout)[0]
    assert img["Size"] <= MAX_SIZE, "%s is %.1f MB, over %d MB" % (dagd_image, img["Size"] / 1e6, MAX_SIZE / 1e6)
    cfg = img["Config"]
    assert cfg["User"] == "10001:10001", cfg["User"]
    assert cfg["Healthcheck"]["Test"] == ["CMD", "/usr/bin/dagd", "health"], cfg["Healthcheck"]
    assert set(cfg["Volumes"]) == {"/var/lib/dagd"}, cfg["Volumes"]
    assert cfg["Entrypoint"] == ["/usr/bin/dagd"] and cfg["Cmd"] == ["serve"], cfg
    # the file system: the binary, its libraries and loader, zoneinfo, the CA bundle,
    # passwd/group and the empty folders; no shell, no package manager
    name = "dagd-itest-img-" + uuid.uuid4().hex[:10]
    docker("create", "--name", name, dagd_image)
    try:
        exp = subprocess.run(["docker", "export", name], capture_output=True, timeout=120)
        assert exp.returncode == 0, exp.stderr
    finally:
        docker("rm", "-v", name, check=False)
    files = [m.name for m in tarfile.open(fileobj=io.BytesIO(exp.stdout)).getmembers() if m.isfile()]
    allowed = ("usr/bin/dagd", "usr/lib/", "lib/", "lib64/", "usr/share/zoneinfo/",
               "etc/ssl/certs/ca-certificates.crt", "etc/passwd", "etc/group",
               ".dockerenv", "dev/", "etc/hostname", "etc/hosts", "etc/resolv.conf")  # the engine's
    extra = [f for f in files if not f.startswith(allowed)]
    assert not extra, "files in the image beyond dagd's own: %s" % extra[:20]
    libs = [f for f in files if f.startswith(("usr/lib/", "lib/", "lib64/"))]
    assert all(".so" in f for f in libs), [f for f in libs if ".so" not in f]
    assert "usr/bin/dagd" in files and not any(f.endswith("/sh") for f in files)


def test_dagd_image_healthy_and_listens_outside_only_when_told(dagd_image, tmp_path):
    """Started with no engine reachable, dagd serves its API: by default on the container's
    loopback only (the HEALTHCHECK passes, the container's address refuses), with
    DAGD_LISTEN=:8080 on its address too; the token comes from a mounted file."""
    token = tmp_path / "token"
    token.write_text("image-test-token\n")
    token.chmod(0o644)
    common = ["--health-interval", "1s", "--health-start-period", "0s",
              "-v", "%s:/run/secrets/dagd_token:ro" % token,
              "-e", "DAGD_TOKEN_FILE=/run/secrets/dagd_token",
              "-e", "DOCKER_HOST=tcp://127.0.0.1:9"]
    inside = outside = None
    try:
        inside = Container(*common, dagd_image)
        outside = Container(*common, "-e", "DAGD_LISTEN=:8080", dagd_image)
        for c in (inside, outside):
            c.wait_health()
        st, body = http_status("http://%s:8080/api/v1/health" % outside.ip())
        assert st == 200 and body["status"] == "ok", (st, body, outside.logs())
        st, why = http_status("http://%s:8080/api/v1/health" % inside.ip())
        assert st is None, "dagd answered on the container's address without being told: %s" % st
        # the token is the mounted file's
        req = urllib.request.Request("http://%s:8080/api/v1/dags" % outside.ip(),
                                     headers={"Authorization": "Bearer image-test-token"})
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.status == 200
        # it runs as the image's user
        top = docker("top", outside.name, "-o", "pid,uid,args").stdout
        assert "10001" in top and "dagd serve" in top, top
    finally:
        for c in (inside, outside):
            if c:
                c.remove()
