"""Logs that never lose lines silently (docs/operations.md, Logs): a task printing a lot
fast, one huge line, and an engine that goes away while a task prints.

Readings taken where the contract leaves room:
- 200 MB printed as fast as the container can: dagd creates the container with a json-file
  log large enough (container_log_max_size, default 1g) that the engine does not rotate
  away what dagd has not read, so every line is in the try's log and the output is the last
  line; no gap marker appears.
- A 50 MB line with no newline comes out in pieces of at most 1 MiB, each but the last
  followed by the split marker, and dagd's peak RSS stays bounded (it does not hold the
  line): the pieces put together are the line.
- The engine unreachable for longer than ten seconds (a proxy in front of its socket is
  cut) while the task prints: once it is back the log resumes where it stopped, the line
  printed meanwhile is there exactly once, and no container is left.
- With a tiny container log (container_log_max_size: 1k), lines the engine rotates away
  while it cannot be reached are marked where they are missing (on stdout, with a
  warning on dagd's stderr); the rest follows and the output is the last line.
- A start or a removal that fails (its connection closed before the engine saw it, and
  new ones cut for a while) is sent again once the engine answers: the run succeeds and
  no container is left. A create the engine carried out but whose answer was lost is
  not made twice: dagd finds that container and runs the try in it.
"""
import os
import re
import sqlite3
import subprocess
import time

import pytest

from conftest import VALGRIND, TIME_SCALE, EngineProxy, env_with
from test_transport import finish_after_proxy_back, start_behind_proxy

SPLIT_MARK = "[dagd] the line above continues on the next line (split at 1 MiB)"
GAP_MARK = "[dagd] lines are missing here"
MIB = 1024 * 1024


def peak_rss_kb(p, timeout):
    """Follow a running process until it exits; its peak RSS (VmHWM) in kB, as last read."""
    peak = 0
    deadline = time.monotonic() + timeout
    while p.poll() is None:
        if time.monotonic() > deadline:
            p.kill()
            pytest.fail("dagd did not finish within %d s: %s" % (timeout, p.communicate()[1][-3000:]))
        try:
            with open("/proc/%d/status" % p.pid) as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    return peak


def run_measured(dg, f):
    """`dagd run f`, returning (rc, stdout, stderr, peak RSS in kB). ASan's quarantine of
    freed memory is kept small so the peak is dagd's own buffers."""
    env = dict(os.environ)
    env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=4"
    p = dg.popen("run", f, "--state", dg.state, env=env)
    peak = peak_rss_kb(p, 240 * TIME_SCALE)
    out, err = p.communicate()
    return p.returncode, out.decode(), err.decode(), peak


@pytest.mark.skipif(VALGRIND, reason="200 MB through dagd under valgrind takes many minutes; "
                    "the same code runs plain and under ASan")
def test_200mb_fast_printer_keeps_every_line(dg):
    # 200000 lines of 1000 characters (200 MB), then END, as fast as the container can
    dg.write("""\
        dag: @DAG@
        tasks:
          loud:
            image: @IMAGE@
            command: [sh, -c, "s=0123456789; s=$s$s$s$s$s$s$s$s$s$s; s=$s$s$s$s$s$s$s$s$s$s; yes $s | head -n 200000; echo END"]
        """)
    res = dg.run(dg.tmp / "dag.yml", timeout=240)
    assert res.rc == 0, res
    ti = dg.tis()["loud"]
    assert ti["state"] == "success", ti
    assert ti["output"] == "END", ti
    path = dg.log_path("loud")
    head = dg.log_header_len("loud")
    assert path.stat().st_size == head + 200000 * 1001 + 4, path.stat().st_size
    with open(path, "rb") as fh:
        fh.seek(-4, os.SEEK_END)
        assert fh.read() == b"END\n"
        fh.seek(head)
        n = sum(1 for line in fh if len(line) == 1001)
    assert n == 200000
    assert GAP_MARK not in res.err, res
    assert dg.containers() == []


@pytest.mark.skipif(VALGRIND, reason="50 MB through dagd under valgrind takes minutes, and "
                    "valgrind's own memory hides dagd's peak; it runs plain and under ASan")
def test_50mb_line_is_split_and_memory_stays_bounded(dg):
    f = dg.write("""\
        dag: @DAG@
        tasks:
          wide:
            image: @IMAGE@
            command: [sh, -c, "head -c 52428800 /dev/zero | tr '\\\\0' x"]
        """)
    rc, out, err, peak_kb = run_measured(dg, f)
    assert rc == 0, (out, err)
    assert dg.tis()["wide"]["state"] == "success"
    lines = dg.log_lines("wide")
    pieces = [l for l in lines if l != SPLIT_MARK]
    marks = [i for i, l in enumerate(lines) if l == SPLIT_MARK]
    assert len(marks) == 49, (len(marks), len(lines))
    assert marks == list(range(1, 98, 2))  # piece, mark, piece, ..., piece
    assert all(len(p) <= MIB and set(p) == {"x"} for p in pieces)
    assert sum(len(p) for p in pieces) == 50 * MIB
    # without the split the line alone needs 64 MiB of buffer; dagd idles at about 17 MB
    assert peak_kb < 60 * 1024, "dagd's peak RSS was %d kB" % peak_kb
    assert dg.containers() == []


def test_log_resumes_after_a_long_engine_outage(dg, socat_procs):
    """The proxy is cut for 12 s (longer than a few quick retries) while the task prints
    `during`; the container exits after the proxy is back."""
    proxy, p = start_behind_proxy(dg, socat_procs, "slow",
                                  "echo before; sleep 2; echo during; sleep 13; echo after")
    time.sleep(0.5)
    proxy.kill()
    time.sleep(12)
    proxy.start()
    rc, out, err = finish_after_proxy_back(p)
    assert rc == 0, (rc, out, err)
    tis = dg.tis()
    assert tis["slow"]["state"] == "success", tis
    assert tis["slow"]["output"] == "after", tis
    assert dg.log_lines("slow") == ["before", "during", "after"]
    assert dg.containers() == []


def test_lines_rotated_away_while_the_engine_is_away_are_marked(dg, socat_procs, monkeypatch):
    """With a 1 KiB container log, the task prints 100 lines of 1000 characters while the
    proxy is cut: when dagd reads again, what it had read is rotated away and so is most of
    what came since. The log says so where the lines are missing, dagd warns, and what is
    still there follows; the output is the last line."""
    monkeypatch.setenv("DAGD_CONTAINER_LOG_MAX_SIZE", "1k")
    wait = 6 if VALGRIND else 2  # long enough for dagd to read `before` before the cut
    proxy, p = start_behind_proxy(
        dg, socat_procs, "rot",
        "s=0123456789; s=$s$s$s$s$s$s$s$s$s$s; s=$s$s$s$s$s$s$s$s$s$s; echo before; sleep %d;"
        " yes $s | head -n 100; echo END; sleep 1" % wait)
    # cut once dagd has read `before`, before the task prints the rest
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            if "before" in dg.log("rot"):
                break
        except (AssertionError, OSError, sqlite3.Error):
            pass
        time.sleep(0.05)
    else:
        pytest.fail("dagd did not read the first line within %d s" % wait)
    proxy.kill()
    time.sleep(wait + 1)
    proxy.start()
    rc, out, err = finish_after_proxy_back(p)
    assert rc == 0, (rc, out, err)
    lines = dg.log_lines("rot")
    assert lines[0] == "before", lines[:3]
    gaps = [i for i, l in enumerate(lines) if l.startswith(GAP_MARK)]
    assert gaps == [1], [l[:40] for l in lines]
    assert lines[-1] == "END"
    assert 2 < len(lines) < 100, len(lines)
    assert GAP_MARK in err, err
    assert dg.tis()["rot"]["output"] == "END"
    assert dg.containers() == []


class CuttingProxy(EngineProxy):
    """An EngineProxy that, while `cutting`, closes every new connection at once (the
    engine never sees its request), as an engine going away does."""

    cutting = False

    def _requests(self, conn):
        if self.cutting:
            conn.close()
            return
        super()._requests(conn)


def run_with_a_cut(dg, proxy, task):
    """`dagd run` of one task printing `done` through proxy; the request the proxy holds is
    dropped and every new connection cut for 2 s, so libcurl's own retry fails too. The
    run must still succeed and leave no container."""
    f = dg.write("""\
        dag: @DAG@
        tasks:
          %s:
            image: @IMAGE@
            command: [sh, -c, "echo done"]
        """ % task)
    p = dg.popen("run", f, "--state", dg.state,
                 env=env_with(DOCKER_HOST=proxy.docker_host, DOCKER_TLS_VERIFY=None,
                              DOCKER_CERT_PATH=None))
    held = proxy.held.wait(1, timeout=30 * TIME_SCALE)
    assert held, "the request was never sent; requests: %r" % proxy.seen.get()[-20:]
    proxy.cutting = True
    held[0].drop()
    time.sleep(2)
    proxy.cutting = False
    try:
        out, err = p.communicate(timeout=60 * TIME_SCALE)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        pytest.fail("dagd did not finish: %s" % err.decode()[-3000:])
    assert p.returncode == 0, err.decode()
    assert dg.tis()[task]["state"] == "success"
    assert dg.log_lines(task) == ["done"]
    assert dg.containers() == []


def test_a_start_cut_off_is_sent_again(dg):
    """The container's start is dropped and the engine unreachable for 2 s: dagd sends
    the start again once it answers (a start that did reach the engine answers 304)."""
    proxy = CuttingProxy()
    try:
        proxy.hold_start(dg.dag_id, "quick")
        run_with_a_cut(dg, proxy, "quick")
    finally:
        proxy.close()


def test_a_failed_removal_is_tried_again(dg):
    """The container's first DELETE is dropped and the engine unreachable for 2 s: dagd
    tries again once it answers and leaves no container."""
    proxy = CuttingProxy()
    try:
        def first_delete(method, path):
            if method == "DELETE" and re.match(r"(?:/v[0-9.]+)?/containers/", path):
                proxy.hold_if = None
                return True
            return False
        proxy.hold_if = first_delete
        run_with_a_cut(dg, proxy, "quick")
        assert [s for s in proxy.seen.get() if s[0] == "DELETE"], proxy.seen.get()
    finally:
        proxy.close()


def test_a_create_whose_answer_is_lost_is_not_made_twice(dg):
    """The engine makes the container but its answer is lost (the connection closed, new
    ones cut for 2 s): dagd finds the container by its name and labels and runs the try
    in it, instead of failing or making a second one."""
    proxy = CuttingProxy()
    try:
        def first_create(method, path):
            if method == "POST" and "/containers/create" in path and dg.dag_id in path:
                proxy.hold_if = None
                return True
            return False
        proxy.hold_if = first_create
        f = dg.write("""\
            dag: @DAG@
            tasks:
              quick:
                image: @IMAGE@
                command: [sh, -c, "echo done"]
            """)
        p = dg.popen("run", f, "--state", dg.state,
                     env=env_with(DOCKER_HOST=proxy.docker_host, DOCKER_TLS_VERIFY=None,
                                  DOCKER_CERT_PATH=None))
        held = proxy.held.wait(1, timeout=30 * TIME_SCALE)
        assert held, "dagd never created the container; requests: %r" % proxy.seen.get()[-20:]
        assert held[0].send_detached() == 201
        made = dg.containers()
        assert len(made) == 1, made
        proxy.cutting = True
        held[0].conn.close()
        time.sleep(2)
        proxy.cutting = False
        try:
            out, err = p.communicate(timeout=60 * TIME_SCALE)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            pytest.fail("dagd did not finish: %s" % err.decode()[-3000:])
        assert p.returncode == 0, err.decode()
        ti = dg.tis()["quick"]
        assert ti["state"] == "success", ti
        assert ti["container_id"] == made[0], (ti["container_id"], made)
        assert dg.log_lines("quick") == ["done"]
        assert dg.containers() == []
    finally:
        proxy.close()
