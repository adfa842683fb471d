"""A private Docker Swarm on this one machine, for the swarm backend's tests and benchmark.

n engines, each a dockerd in a network namespace of its own with its own data root, exec
root and socket (vfs storage), the namespaces joined by veth pairs to a bridge inside a
"hub" namespace, on addresses picked here (10.231.N.1x/24): nothing on the host's network
is touched and the host's engine is never put in swarm mode. Node 1 is the manager; the
others join as workers. Needs root, iproute2, util-linux (nsenter, unshare) and dockerd.
"""
import os
import shutil
import signal
import subprocess
import tempfile
import time


def sh(*args, check=True, input=None, timeout=60):
    p = subprocess.run(list(args), capture_output=True, input=input, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError("%s: %s" % (" ".join(args), p.stderr.decode(errors="replace")))
    return p


class Unavailable(Exception):
    """This machine cannot make a private swarm (not root, a tool missing)."""


class Swarm:
    """n engines in namespaces, node 1 the manager; sock(i) is node i's socket; image is
    copied from the host's engine into every node."""

    def __init__(self, n, tag, image):
        self.n, self.tag, self.image = n, tag, image
        self.dir = tempfile.mkdtemp(prefix="dagd-swarm-")
        self.hub = "dgh%s" % tag
        self.procs = {}
        self.subnet = 40 + (os.getpid() + int(tag, 16)) % 150

    def ns(self, i):
        return "dg%sn%d" % (self.tag, i)

    def sock(self, i):
        return os.path.join(self.dir, "n%d" % i, "sock")

    def host(self, i):
        return "unix://" + self.sock(i)

    def addr(self, i):
        return "10.231.%d.%d" % (self.subnet, 10 + i)

    def docker(self, i, *args, check=True, input=None, timeout=60):
        return sh("docker", "-H", self.host(i), *args, check=check, input=input, timeout=timeout)

    def start(self):
        if os.geteuid() != 0:
            raise Unavailable("not root")
        for tool in ("ip", "nsenter", "unshare", "dockerd"):
            if not shutil.which(tool):
                raise Unavailable("%s is not installed" % tool)
        sh("ip", "netns", "add", self.hub)
        sh("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.hub, "link", "set", "br0", "up")
        sh("ip", "-n", self.hub, "link", "set", "lo", "up")
        for i in range(1, self.n + 1):
            ns = self.ns(i)
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", self.hub, "link", "add", "v%d" % i, "type", "veth", "peer", "name", "eth0",
               "netns", ns)
            sh("ip", "-n", self.hub, "link", "set", "v%d" % i, "master", "br0", "up")
            sh("ip", "-n", ns, "addr", "add", self.addr(i) + "/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            self.start_engine(i)
        for i in range(1, self.n + 1):
            self.wait_engine(i)
        self.docker(1, "swarm", "init", "--advertise-addr", self.addr(1), "--listen-addr", self.addr(1) + ":2377")
        self.docker(1, "swarm", "update", "--dispatcher-heartbeat", "1s")
        token = self.docker(1, "swarm", "join-token", "-q", "worker").stdout.decode().strip()
        for i in range(2, self.n + 1):
            self.docker(i, "swarm", "join", "--token", token, "--advertise-addr", self.addr(i),
                        "--listen-addr", self.addr(i) + ":2377", self.addr(1) + ":2377")
        image = sh("docker", "save", self.image, timeout=120).stdout
        for i in range(1, self.n + 1):
            self.docker(i, "load", input=image, timeout=120)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            nodes = self.docker(1, "node", "ls", "--format", "{{.Hostname}} {{.Status}}").stdout.decode().split("\n")
            if sum(1 for l in nodes if l.endswith(" Ready")) == self.n:
                return self
            time.sleep(0.3)
        raise RuntimeError("the swarm's nodes did not all become ready: %r" % nodes)

    def start_engine(self, i):
        d = os.path.join(self.dir, "n%d" % i)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "daemon.json"), "w") as f:
            f.write("{}")
        # a containerd of the host's own (its socket under /run/containerd) would be taken
        # by every node: hide it in the node's mount namespace so each engine runs its own
        script = ("hostname sw%d; if [ -d /run/containerd ]; then mount -t tmpfs tmpfs /run/containerd; fi; "
                  "exec dockerd --config-file %s/daemon.json --data-root %s/data --exec-root %s/exec "
                  "--pidfile %s/pid -H unix://%s --bip 10.232.%d.1/24 --default-address-pool base=10.%d.0.0/16,size=24 "
                  "--cgroup-parent dagd-swarm-%s-%d --storage-driver vfs"
                  % (i, d, d, d, d, self.sock(i), i, 233 + i, self.tag, i))
        env = dict(os.environ, DOCKER_SERVICE_PREFER_OFFLINE_IMAGE="1")
        log = open(os.path.join(d, "dockerd.log"), "wb")
        self.procs[i] = subprocess.Popen(
            ["nsenter", "--net=/run/netns/" + self.ns(i), "unshare", "--uts", "--mount", "--propagation",
             "private", "sh", "-c", script], stdout=log, stderr=log, env=env, start_new_session=True)

    def wait_engine(self, i):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if self.docker(i, "version", check=False, timeout=10).returncode == 0:
                    return
            except subprocess.TimeoutExpired:
                pass
            if self.procs[i].poll() is not None:
                break
            time.sleep(0.2)
        log = open(os.path.join(self.dir, "n%d" % i, "dockerd.log"), errors="replace").read()[-3000:]
        raise RuntimeError("node %d's engine did not start:\n%s" % (i, log))

    def kill_engine(self, i):
        """kill -9 node i's engine and everything it started (its containerd, shims)."""
        pids = [l.split()[0] for l in sh("ps", "-eo", "pid,args").stdout.decode().splitlines()[1:]
                if os.path.join(self.dir, "n%d" % i) in l]
        for p in pids:
            try:
                os.kill(int(p), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        self.procs[i].wait(timeout=20)

    def services(self):
        out = self.docker(1, "service", "ls", "-q", check=False).stdout.decode().split()
        return out

    def stop(self):
        for i, p in self.procs.items():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for i, p in self.procs.items():
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        # whatever an engine left (shims of containers on a killed node)
        for l in sh("ps", "-eo", "pid,args").stdout.decode().splitlines()[1:]:
            if self.dir in l:
                try:
                    os.kill(int(l.split()[0]), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
        for i in range(1, self.n + 1):
            sh("ip", "netns", "del", self.ns(i), check=False)
        sh("ip", "netns", "del", self.hub, check=False)
        for root, dirs, files in os.walk(self.dir):
            for d in dirs:
                sh("umount", "-l", os.path.join(root, d), check=False) if os.path.ismount(os.path.join(root, d)) else None
        shutil.rmtree(self.dir, ignore_errors=True)
