"""The API survives slow clients (docs/api.md, "Limits"): a request head that is not in
within the head deadline closes its connection, whatever trickles in meanwhile; an address
holds at most api.max_connections_per_address connections (more are closed at once); and
health keeps answering a fresh connection while hundreds of slow ones are open.

The slow clients come from other loopback addresses (127.0.0.2, ...; Linux routes all of
127/8 to lo) than the health probes (127.0.0.1), as they would from other hosts.
"""
import pathlib
import resource
import selectors
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import TIME_SCALE, VALGRIND
from serve_helpers import Server, clean_env, dag_text, read_port_file, simple_task, wait_for

HEAD_START = b"GET /api/v1/health HTTP/1.1\r\nHost: dagd\r\n"


def slow_client(addr, port):
    """A connection from addr that has sent a request line and one header, no more."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((addr, 0))
    s.settimeout(5 * TIME_SCALE)
    s.connect(("127.0.0.1", port))
    s.sendall(HEAD_START)
    s.setblocking(False)
    return s


def closed_by_peer(s):
    """Whether the server has closed s (end of stream or reset); never blocks."""
    try:
        return s.recv(4096) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


class Trickler:
    """Sends one more header line on every open socket every `every` seconds, and notes
    when the server closes each one (time.monotonic())."""

    def __init__(self, socks, every):
        self.socks, self.every = socks, every
        self.closed_at = {}
        self.sel = selectors.DefaultSelector()
        for s in socks:
            self.sel.register(s, selectors.EVENT_READ)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def open_count(self):
        return len(self.socks) - len(self.closed_at)

    def run(self):
        next_send = time.monotonic() + self.every
        while not self.stop.is_set() and self.open_count():
            for key, _ in self.sel.select(timeout=0.1):
                if closed_by_peer(key.fileobj):
                    self.closed_at[key.fileobj] = time.monotonic()
                    self.sel.unregister(key.fileobj)
            if time.monotonic() >= next_send:
                next_send += self.every
                for s in self.socks:
                    if s not in self.closed_at:
                        try:
                            s.send(b"X-Slow: still typing\r\n")
                        except OSError:
                            pass  # closed: the select above notes when

    def finish(self):
        self.stop.set()
        self.thread.join(timeout=30)
        self.sel.close()
        for s in self.socks:
            s.close()


def health_from(addr, port, timeout):
    """GET /api/v1/health on a fresh connection from addr: (status, seconds taken)."""
    t0 = time.monotonic()
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(addr, 0))
    try:
        s.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: dagd\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else None
    return status, time.monotonic() - t0


def health_or_none(addr, port):
    """health_from's status, or None when the connection was closed before a reply."""
    try:
        return health_from(addr, port, timeout=5 * TIME_SCALE)[0]
    except ConnectionError:
        return None


def start_server(dg, env=None):
    dags = dg.tmp / "dags"
    dg.write(dag_text("@DAG@", simple_task("a", "true")), name="dags/d.yml", dedent=False)
    return Server(dg, dags, env=env).start()


@pytest.mark.skipif(VALGRIND, reason="a latency claim (health within 2 s beside 530 connections) that valgrind's "
                                     "slowdown cannot make; the same code paths run under valgrind in "
                                     "test_per_address_limit_and_head_deadline")
def test_health_answers_while_530_slow_clients_trickle(dg):
    srv = start_server(dg)
    # the scenario: 530 connections (over the old total limit of 512), 53 from each
    # of 10 addresses (under the default per-address limit of 64), one header line every 4 s
    socks, opened_at = [], {}
    for i in range(530):
        s = slow_client("127.0.0.%d" % (2 + i % 10), srv.port)
        socks.append(s)
        opened_at[s] = time.monotonic()
    trickler = Trickler(socks, every=4)
    try:
        # health answers from a fresh connection within 2 s, again and again while they trickle
        for _ in range(3):
            status, took = health_from("127.0.0.1", srv.port, timeout=2)
            assert status == 200 and took < 2, (status, took)
            assert trickler.open_count() == 530, "slow clients were closed before the head deadline"
            time.sleep(2)
        # the default head deadline (10 s) closes every one of them, trickling or not
        deadline = max(opened_at.values()) + 10 + 5
        while trickler.open_count() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert trickler.open_count() == 0, "%d slow clients still open 15 s after connecting" % trickler.open_count()
        lived = sorted(trickler.closed_at[s] - opened_at[s] for s in socks)
        assert lived[0] > 9, "a slow client was closed after %.1f s, before the 10 s head deadline" % lived[0]
        assert health_from("127.0.0.1", srv.port, timeout=2)[0] == 200
    finally:
        trickler.finish()


def test_per_address_limit_and_head_deadline(dg):
    srv = start_server(dg, env={"DAGD_API_MAX_CONNECTIONS_PER_ADDRESS": "4",
                                "DAGD_API_REQUEST_HEAD_TIMEOUT": "3"})
    t0 = time.monotonic()
    held = [slow_client("127.0.0.2", srv.port) for _ in range(4)]
    trickler = Trickler(held, every=1)
    try:
        # a fifth connection from the same address is closed at once, the four stay open
        extra = slow_client("127.0.0.2", srv.port)
        deadline = time.monotonic() + 2 * TIME_SCALE
        while not closed_by_peer(extra):
            assert time.monotonic() < deadline, "the connection over the per-address limit stayed open"
            time.sleep(0.05)
        extra.close()
        assert trickler.open_count() == 4
        # another address is not held back by that one
        assert health_from("127.0.0.3", srv.port, timeout=5 * TIME_SCALE)[0] == 200
        # trickling one header line a second does not keep a head open past the deadline (3 s)
        end = t0 + 3 + 5 * TIME_SCALE
        while trickler.open_count() and time.monotonic() < end:
            time.sleep(0.1)
        assert trickler.open_count() == 0, "slow clients outlived the 3 s head deadline"
        lived = min(trickler.closed_at.values()) - t0
        assert lived > 2.5, "a slow client was closed after %.1f s, before the 3 s head deadline" % lived
        # the address's connections are counted as they close: it may connect again (once
        # the server has closed its side too, a moment after the client saw the end)
        wait_for("health from 127.0.0.2 again", lambda: health_or_none("127.0.0.2", srv.port) == 200, 2)
    finally:
        trickler.finish()


def test_keep_alive_connection_waits_under_the_head_deadline(dg):
    """After a reply, a kept-alive connection is waiting for a request head again: it is
    closed when no head is in within the deadline, and serves every request that comes in
    time."""
    srv = start_server(dg, env={"DAGD_API_REQUEST_HEAD_TIMEOUT": "3"})
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10 * TIME_SCALE)
    try:
        f = s.makefile("rb")
        for i in range(3):
            if i:
                time.sleep(1)  # well inside the deadline: the connection stays
            s.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: dagd\r\n\r\n")
            assert f.readline().startswith(b"HTTP/1.1 200")
            length = None
            while True:
                line = f.readline()
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
                if line in (b"\r\n", b""):
                    break
            assert f.read(length).startswith(b"{")
        t1 = time.monotonic()
        s.sendall(b"GET /api/v1/health HTTP/1.1\r\n")  # a head that never ends
        assert f.read() == b"", "the server answered a head that never ended"
        took = time.monotonic() - t1
        assert 2.5 < took < 3 + 5 * TIME_SCALE, "closed after %.1f s, not at the 3 s head deadline" % took
    finally:
        s.close()


@pytest.mark.skipif(VALGRIND, reason="valgrind keeps descriptors of its own above the soft limit and refuses "
                                     "to raise it")
def test_serve_raises_the_descriptor_limit(dg):
    """`dagd serve` raises its soft RLIMIT_NOFILE to the hard one (at most 65536), so a low
    default soft limit does not cap the API's connections (docs/operations.md, "Descriptors")."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip("the hard descriptor limit (%d) leaves nothing to raise" % hard)
    want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))  # inherited by the daemon
    try:
        srv = start_server(dg)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    limits = (pathlib.Path("/proc/%d/limits" % srv.proc.pid)).read_text()
    line = next(l for l in limits.splitlines() if l.startswith("Max open files"))
    assert line.split()[3] == str(want), line
    assert "lowered" not in srv.stderr(), srv.stderr()


@pytest.mark.skipif(VALGRIND, reason="valgrind keeps descriptors of its own above the soft limit and refuses "
                                     "to raise it")
def test_connection_limit_fits_under_a_low_descriptor_limit(dg):
    """Where even the hard limit is low, the API's connection limit is lowered to leave 256
    descriptors to the engine and the store, and the server says so."""
    dg.write(dag_text("@DAG@", simple_task("a", "true")), name="dags/d.yml", dedent=False)
    err_path = dg.tmp / "serve.err"

    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (400, 400))  # the daemon's only

    with open(err_path, "wb") as err:
        proc = subprocess.Popen([dg.bin, "serve", "--dags", str(dg.tmp / "dags"), "--state", str(dg.state),
                                 "--listen", "127.0.0.1:0", "--log", "stderr"], stdout=subprocess.DEVNULL,
                                stderr=err, stdin=subprocess.DEVNULL, env=clean_env(), cwd=dg.tmp,
                                preexec_fn=low_limit)
    dg.procs.append(proc)
    port = wait_for("dagd serve to listen", lambda: proc.poll() is None and read_port_file(dg.state / "api.port"), 20)
    assert health_from("127.0.0.1", port, timeout=5)[0] == 200
    assert ("api.max_connections lowered from 1024 to 144: the descriptor limit is 400"
            in err_path.read_text()), err_path.read_text()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
