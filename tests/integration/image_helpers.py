"""What the tests of the container images and the pipelines on them share (test_images.py,
test_stack.py, test_seeds.py, test_rappel.py): building the images through the Makefile,
telling whether DAGD_BIN is a sanitizer build, and the marks that keep such tests to the
plain pass (the images hold a plain build of dagd; the pipelines mostly wait)."""
import os
import subprocess

import pytest

from conftest import REPO, VALGRIND


def _sanitized():
    """Whether DAGD_BIN is an ASan/UBSan build (`make check`)."""
    path = os.environ.get("DAGD_BIN") or str(REPO / "build" / "dagd")
    try:
        out = subprocess.run(["ldd", path], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "libasan" in out or "libubsan" in out


SANITIZED = _sanitized()


def plain_pass_only(why):
    """The marks of a test module that runs in the plain pass only (`make test`): skipped
    under valgrind (DAGD_VALGRIND) and against the ASan/UBSan build, saying why."""
    return [pytest.mark.skipif(VALGRIND, reason="%s; the plain pass runs it, not valgrind's" % why),
            pytest.mark.skipif(SANITIZED, reason="%s; the plain pass runs it, not the sanitizer build's" % why)]


def build_images(*targets):
    """`make <targets>` (image-dagd, images-stack, ...): fails under $CI, skips elsewhere,
    with the build's output, when the images cannot be built."""
    # not the settings of a make this test may run under (`make test`'s BUILD, CFLAGS)
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    try:
        p = subprocess.run(["make", "-s", "--no-print-directory", *targets], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=3600, stdin=subprocess.DEVNULL)
        rc, out = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        rc, out = -1, "timed out after %ss" % e.timeout
    if rc != 0:
        msg = "`make %s` could not build the images (%s):\n%s" % (" ".join(targets), rc, out[-4000:])
        if os.environ.get("CI"):
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
