"""A real Docker Swarm of several engines on this one machine, for tests of what runs on a swarm.

Each node is a network namespace of its own (``clipper-swarm-node<i>``) holding one ``dockerd`` with its
own data root, exec root, unix socket, ``docker0`` subnet and cgroup parent, and its own hostname
(``node<i>``, through a UTS namespace). The namespaces hang off a Linux bridge in the root namespace
(``csw-br0``, 10.231.0.1/24), so the host and the tests reach every node at its address (10.231.0.10,
.11, ...): a port a service publishes in host mode answers there. node0 runs ``swarm init``; the others join
(as workers, or as managers).

    swarm = Swarm().up(3, labels={"node1": {"gpu": "true"}})
    swarm.load_images(["clipper/base:0.1.0"])      # main engine -> every node, by save | load
    swarm.manager.client.services.create(...)      # docker.DockerClient of node0
    swarm.kill_engine(swarm.nodes[2]); swarm.wait_node(swarm.nodes[2], "down")
    swarm.down()                                   # nothing left: processes, mounts, netns, links, rules, dirs

or from a shell: ``python -m tests.swarm_harness up [-n 3] [--load IMAGE ...]``, ``... status``, ``... down``.

What this machine imposes (measured; docs/testing.md):

* dockerd is started with ``nsenter --net=/var/run/netns/NAME``, not ``ip netns exec`` (which remounts
  /sys and hides the cgroup mounts: dockerd stops with "Devices cgroup isn't mounted"). It therefore
  sees the root namespace's /sys/class/net, and logs a harmless "enabling default vlan on bridge br0
  failed" per overlay network.
* The main engine sets the FORWARD policy to DROP and bridged traffic passes through iptables
  (br_netfilter), so the harness adds ``-i csw-br0 -o csw-br0 -j ACCEPT`` to FORWARD.
* No IPVS: the ingress routing mesh and a service's virtual IP do not answer. Publish ports in host mode
  and use ``endpoint_mode="dnsrr"`` (or ``tasks.<service>``) on overlay networks. VXLAN works.
* No registry is reachable: a swarm task tries to pull its image before it starts and falls back to the
  local one. DNS is rejected inside each node's namespace so that this attempt fails at once instead of
  after resolver timeouts; a registry by IP address (``start_registry``) still works.
* The storage driver is the main engine's (``fuse-overlayfs`` here).

Only one harness swarm exists on a machine at a time (fixed names, so that ``up()`` can clean what a
crashed run left): ``up()`` waits for another live harness process to finish, then removes leftovers.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Prefix of the namespaces, cgroup parents and the default folder.
PREFIX = "clipper-swarm"
#: Prefix of the network links (names of at most 15 characters).
LINK_PREFIX = "csw-"
BRIDGE = f"{LINK_PREFIX}br0"
#: The nodes' network; the bridge has .1, node i has .(10 + i).
SUBNET = ipaddress.ip_network("10.231.0.0/24")
BRIDGE_IP = str(SUBNET.network_address + 1)
#: Subnets inside the nodes: docker0 of node i is 10.232.i.0/24; node i's other local networks
#: (docker_gwbridge...) come from 10.234.(16 i).0/20; the swarm's overlay networks from 10.233.0.0/16.
OVERLAY_POOL = "10.233.0.0/16"
#: Every address the harness uses (checked against the host's own addresses).
_ALL_SUBNETS = [ipaddress.ip_network(n) for n in ("10.231.0.0/16", "10.232.0.0/16", "10.233.0.0/16", "10.234.0.0/16")]
#: The default folder: data and exec roots, sockets, logs, the state file.
DEFAULT_DIR = Path(os.environ.get("CLIPPER_SWARM_DIR", f"/tmp/{PREFIX}"))
#: Abstract unix socket held by the process that owns the swarm (released when it exits).
LOCK_NAME = f"\0{PREFIX}-harness-lock"
#: The iptables comment that marks the harness's rules.
RULE_COMMENT = f"{PREFIX}-harness"
#: The port of the optional registry (on the bridge address).
REGISTRY_PORT = 5000
#: Seconds of the swarm's dispatcher heartbeat (Docker: 5): a node is marked down after about 2 to 3 of them.
HEARTBEAT_S = 2.0

Progress = Callable[[str], None]


def _say_nothing(_line: str) -> None:
    pass


def _run(cmd: list[str], check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def _in_netns(netns: str, cmd: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run(["nsenter", f"--net=/var/run/netns/{netns}", *cmd], check=check)


class HarnessError(RuntimeError):
    """Something that waiting longer will not mend (an engine exited...)."""


def _deadline_wait(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.25) -> Any:
    """Polls `check` until it returns something true; that value, or TimeoutError naming `what`
    (HarnessError from `check` at once)."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = check()
            if value:
                return value
        except HarnessError:
            raise
        except Exception as e:  # noqa: BLE001 - an engine that is starting fails in many ways
            last_error = e
        if time.monotonic() > deadline:
            extra = f" (last error: {type(last_error).__name__}: {last_error})" if last_error else ""
            raise TimeoutError(f"{what}: not within {timeout:.0f} s{extra}")
        time.sleep(interval)


# ------------------------------------------------------------------------------------------------ checks


def main_engine(timeout: float = 300) -> Any:
    """A docker.DockerClient of the main engine (``DOCKER_HOST`` or the default socket)."""
    import docker

    return docker.from_env(timeout=timeout)


def problem() -> str | None:
    """Why a swarm cannot be formed here (None: it can)."""
    if sys.platform != "linux":
        return "needs Linux"
    if os.geteuid() != 0:
        return "needs root (network namespaces, dockerd, iptables)"
    for tool in ("nsenter", "unshare", "ip", "iptables", "dockerd", "containerd", "runc", "docker"):
        if shutil.which(tool) is None:
            return f"no {tool} binary"
    try:
        import docker  # noqa: F401
    except ImportError:
        return "the docker Python package is not installed"
    try:
        info = main_engine(timeout=10).info()
    except Exception as e:  # noqa: BLE001 - any failure means no engine
        return f"the main Docker engine does not answer ({type(e).__name__}: {e})"
    driver = info.get("Driver")
    if driver == "fuse-overlayfs" and (shutil.which("fuse-overlayfs") is None or not os.path.exists("/dev/fuse")):
        return "the main engine uses fuse-overlayfs, but fuse-overlayfs or /dev/fuse is missing"
    if not os.path.isdir("/sys/fs/cgroup"):
        return "no /sys/fs/cgroup"
    for line in _run(["ip", "-o", "-4", "addr", "show"], check=False).stdout.splitlines():
        parts = line.split()
        if len(parts) >= 4 and not parts[1].startswith(LINK_PREFIX):
            addr = ipaddress.ip_interface(parts[3])
            if any(addr.network.overlaps(n) for n in _ALL_SUBNETS):
                return f"{parts[1]} has {parts[3]}, which collides with the harness's subnets (10.231-234.0.0/16)"
    return None


def registry_problem() -> str | None:
    """Why `Swarm.start_registry` cannot work here (None: it can); the binary is Debian's docker-registry."""
    if shutil.which("docker-registry") is None:
        return "no docker-registry binary (apt-get install docker-registry)"
    return None


# ------------------------------------------------------------------------------------------------- nodes


@dataclass
class Node:
    """One engine of the swarm."""

    index: int
    #: ``node<i>``: also its hostname, so ``node.hostname == node1`` constraints work.
    name: str
    ip: str
    #: The network namespace (``ip netns``) and the host's end of its veth pair.
    netns: str
    veth: str
    dir: Path
    #: The engine's unix socket; ``url`` is ``unix://<socket>`` (``docker -H URL``, ``DOCKER_HOST``).
    socket: Path
    #: cgroup parent of its containers (``/sys/fs/cgroup/<controller>/<cgroup_parent>/<container id>``).
    cgroup_parent: str
    manager: bool = False
    #: The swarm node ID (set once it is part of the swarm).
    id: str = ""
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _client: Any = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def config_file(self) -> Path:
        return self.dir / "daemon.json"

    @property
    def log_file(self) -> Path:
        return self.dir / "dockerd.log"

    @property
    def client(self) -> Any:
        """A docker.DockerClient of this engine."""
        if self._client is None:
            import docker

            self._client = docker.DockerClient(base_url=self.url, timeout=300)
        return self._client

    def docker(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        """Runs the docker command line against this engine; its standard output."""
        return _run(["docker", "-H", self.url, *args], check=check, timeout=timeout).stdout

    def pids(self) -> list[int]:
        """Processes of this node: in its network namespace (dockerd, containerd, shims, docker-proxy,
        fuse-overlayfs) or in its cgroup parent (containers)."""
        return _node_pids(self.netns, self.cgroup_parent, self.dir)

    def engine_alive(self) -> bool:
        try:
            return bool(self.client.ping())
        except Exception:  # noqa: BLE001
            return False

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def close_client(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "ip": self.ip, "netns": self.netns, "veth": self.veth,
                "dir": str(self.dir), "socket": str(self.socket), "cgroup_parent": self.cgroup_parent,
                "manager": self.manager, "id": self.id}


def _make_node(base: Path, i: int, manager: bool = False) -> Node:
    d = base / f"node{i}"
    return Node(index=i, name=f"node{i}", ip=str(SUBNET.network_address + 10 + i), netns=f"{PREFIX}-node{i}",
                veth=f"{LINK_PREFIX}veth{i}", dir=d, socket=d / "docker.sock", cgroup_parent=f"{PREFIX}-node{i}",
                manager=manager)


# --------------------------------------------------------------------------------------- processes, mounts


def _ns_inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def _scan(netns_inodes: set[int], cgroup_marks: tuple[str, ...], path_marks: tuple[str, ...]) -> list[int]:
    """Pids whose network namespace is one of `netns_inodes`, whose cgroup path holds one of `cgroup_marks`
    or whose command line holds one of `path_marks`; never this process or its ancestors."""
    mine = _ancestors()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in mine:
            continue
        pid = int(entry)
        try:
            if netns_inodes and os.stat(f"/proc/{pid}/ns/net").st_ino in netns_inodes:
                found.append(pid)
                continue
            with open(f"/proc/{pid}/cgroup") as f:
                if any(mark in f.read() for mark in cgroup_marks):
                    found.append(pid)
                    continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().decode(errors="replace")
            if any(mark in cmdline for mark in path_marks):
                found.append(pid)
        except OSError:
            continue
    return found


def _node_pids(netns: str, cgroup_parent: str, node_dir: Path) -> list[int]:
    inode = _ns_inode(f"/var/run/netns/{netns}")
    return _scan({inode} if inode else set(), (f":/{cgroup_parent}/", f":/{cgroup_parent}\n"), (f"{node_dir}/",))


def _is_zombie_or_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def _kill_all(find: Callable[[], list[int]], timeout: float = 15) -> int:
    """SIGKILLs what `find` returns until nothing (but zombies) remains; how many it killed."""
    killed: set[int] = set()
    deadline = time.monotonic() + timeout
    while True:
        pids = [p for p in find() if not _is_zombie_or_gone(p)]
        if not pids:
            return len(killed)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes survive SIGKILL: {pids}")
        time.sleep(0.05)


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root).rstrip("/") + "/"
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point == str(root) or point.startswith(prefix):
                points.append(point)
    return points


_libc = ctypes.CDLL(None, use_errno=True)
_MNT_DETACH = 2


def _unmount_under(root: Path) -> int:
    """Lazily unmounts everything mounted at or under `root`, deepest first; how many."""
    count = 0
    for _ in range(5):  # a mount may hide another at the same point
        points = _mounts_under(root)
        if not points:
            break
        for point in sorted(points, key=lambda p: p.count("/"), reverse=True):
            if _libc.umount2(point.encode(), _MNT_DETACH) == 0:
                count += 1
    return count


# ---------------------------------------------------------------------------------------------- teardown


def _our_netns() -> list[str]:
    names = set()
    with contextlib.suppress(OSError):
        names.update(n for n in os.listdir("/var/run/netns") if n.startswith(PREFIX))
    return sorted(names)


def _our_links() -> list[str]:
    out = _run(["ip", "-o", "link", "show"], check=False).stdout
    links = []
    for line in out.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            name = parts[1].strip().split("@")[0]
            if name.startswith(LINK_PREFIX):
                links.append(name)
    return links


def _our_rules() -> list[str]:
    out = _run(["iptables", "-w", "-S", "FORWARD"], check=False).stdout
    return [line for line in out.splitlines() if RULE_COMMENT in line]


def _our_cgroups() -> list[Path]:
    roots = [Path("/sys/fs/cgroup")]
    with contextlib.suppress(OSError):
        roots += [p for p in Path("/sys/fs/cgroup").iterdir() if p.is_dir()]
    found = []
    for root in roots:
        with contextlib.suppress(OSError):
            found += [p for p in root.iterdir() if p.name.startswith(PREFIX) and p.is_dir()]
    return found


def _remove_cgroup_tree(top: Path) -> None:
    for _ in range(20):
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda t: t[0].count("/"), reverse=True):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)
        if not top.exists():
            return
        time.sleep(0.1)


#: Where containerd-shim-runc-v2 puts its socket, whichever containerd started it (shared with the main engine).
SHIM_SOCKET_DIR = Path("/run/containerd/s")


def _shim_sockets(base_dir: Path, node_glob: str = "node*") -> list[Path]:
    """The sockets the nodes' shims have (or had) in SHIM_SOCKET_DIR: a shim killed by SIGKILL leaves its
    socket there. containerd names it sha256("<containerd address>/<namespace>/<container id>")."""
    found = []
    with contextlib.suppress(OSError):
        for node_dir in base_dir.glob(node_glob):
            address = node_dir / "exec" / "containerd" / "containerd.sock"
            ids = {p.name for p in (node_dir / "data" / "containers").glob("*")}
            ids |= {p.name for p in (node_dir / "exec" / "containerd" / "daemon" / "io.containerd.runtime.v2.task"
                                     / "moby").glob("*")}
            for cid in ids:
                sock = SHIM_SOCKET_DIR / hashlib.sha256(f"{address}/moby/{cid}".encode()).hexdigest()
                if sock.exists():
                    found.append(sock)
    return found


def leftovers(base_dir: Path = DEFAULT_DIR) -> dict[str, list[str]]:
    """What of a harness swarm exists on this machine (empty lists: nothing)."""
    inodes = {i for i in (_ns_inode(f"/var/run/netns/{n}") for n in _our_netns()) if i}
    pids = _scan(inodes, (f":/{PREFIX}-",), (f"{base_dir}/",))
    return {
        "processes": [f"{p} {Path(f'/proc/{p}/comm').read_text().strip()}" for p in pids
                      if not _is_zombie_or_gone(p) and Path(f"/proc/{p}/comm").exists()],
        "mounts": _mounts_under(base_dir),
        "netns": _our_netns(),
        "links": _our_links(),
        "iptables": _our_rules(),
        "cgroups": [str(p) for p in _our_cgroups()],
        "shim sockets": [str(p) for p in _shim_sockets(base_dir)],
        "files": [str(base_dir)] if base_dir.exists() else [],
    }


def teardown(base_dir: Path = DEFAULT_DIR, graceful: bool = False, progress: Progress = _say_nothing) -> None:
    """Removes every trace of a harness swarm, whoever started it: containers, engines, their containerd,
    shims and fuse-overlayfs processes, the registry, mounts under `base_dir`, namespaces, links, the
    FORWARD rule, cgroups, `base_dir`. Idempotent.

    Everything gets SIGKILL (about 3 s for three nodes, most of it deleting their image layers); the
    harness then unmounts and deletes what the engines would have. `graceful`: SIGTERM to the engines
    first, after killing their containers, and up to 10 s for them to stop (about 12 s for three
    nodes, for nothing more)."""
    inodes = {i for i in (_ns_inode(f"/var/run/netns/{n}") for n in _our_netns()) if i}

    def everything() -> list[int]:
        return _scan(inodes, (f":/{PREFIX}-",), (f"{base_dir}/",))

    if graceful:
        _kill_all(lambda: _scan(set(), (f":/{PREFIX}-",), ()))  # the containers: no stop timeouts to wait for
        engines = [p for p in everything() if Path(f"/proc/{p}/comm").exists()
                   and Path(f"/proc/{p}/comm").read_text().strip() == "dockerd"]
        for pid in engines:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            _deadline_wait("engines stop", lambda: all(_is_zombie_or_gone(p) for p in engines), 10, 0.1)
    marks = [time.monotonic()]
    killed = _kill_all(everything)
    marks.append(time.monotonic())
    for sock in _shim_sockets(base_dir):
        sock.unlink(missing_ok=True)
    unmounted = _unmount_under(base_dir)
    for name in _our_netns():
        _run(["ip", "netns", "delete", name], check=False)
    for link in _our_links():
        _run(["ip", "link", "delete", link], check=False)
    for rule in _our_rules():
        _run(["iptables", "-w", *rule.replace("-A ", "-D ", 1).split()], check=False)
    for cg in _our_cgroups():
        _remove_cgroup_tree(cg)
    marks.append(time.monotonic())
    existed = base_dir.exists()
    if existed:
        unmounted += _unmount_under(base_dir)
        shutil.rmtree(base_dir, ignore_errors=True)
    marks.append(time.monotonic())
    if killed or unmounted or existed:
        progress(f"[swarm] killed {killed} processes ({marks[1] - marks[0]:.1f} s), unmounted {unmounted} mounts "
                 f"and removed the network ({marks[2] - marks[1]:.1f} s), removed {base_dir} "
                 f"({marks[3] - marks[2]:.1f} s)")


# ------------------------------------------------------------------------------------------------- swarm


def _engine_config(node: Node, driver: str) -> dict[str, Any]:
    i = node.index
    return {
        "data-root": str(node.dir / "data"),
        "exec-root": str(node.dir / "exec"),
        "pidfile": str(node.dir / "docker.pid"),
        "hosts": [node.url],
        "storage-driver": driver,
        "bip": f"10.232.{i}.1/24",
        "default-address-pools": [{"base": f"10.234.{16 * i}.0/20", "size": 24}],
        "cgroup-parent": node.cgroup_parent,
        "exec-opts": ["native.cgroupdriver=cgroupfs"],
        "iptables": True,
        "insecure-registries": [f"{BRIDGE_IP}:{REGISTRY_PORT}"],
        "log-driver": "json-file",
        "log-opts": {"max-size": "10m", "max-file": "2"},
        "shutdown-timeout": 5,
    }


class Swarm:
    """A Docker Swarm of `n` engines on this machine (see the module's docstring)."""

    def __init__(self, base_dir: Path | str = DEFAULT_DIR, progress: Progress | None = print,
                 heartbeat_s: float = HEARTBEAT_S) -> None:
        self.base_dir = Path(base_dir)
        self.say: Progress = progress or _say_nothing
        self.heartbeat_s = heartbeat_s
        self.nodes: list[Node] = []
        #: Seconds each step took: "up", "down", "load <ref>", "push <ref>"...
        self.timings: dict[str, float] = {}
        self.registry: str | None = None
        self._registry_proc: subprocess.Popen[bytes] | None = None
        self._lock: socket.socket | None = None
        self._driver = "fuse-overlayfs"

    #: Why no swarm can be formed here (None: it can); the module's `problem`.
    problem = staticmethod(problem)
    #: The swarm this process has up (one per machine: the harness's names are fixed).
    _live: Swarm | None = None

    # ------------------------------------------------------------------ lifecycle

    def up(self, n: int = 3, managers: int = 1, labels: dict[str, dict[str, str]] | None = None,
           lock_timeout: float = 600) -> Swarm:
        """Forms the swarm: `n` nodes, the first `managers` of them managers (node0 the leader), `labels`
        per node name (``{"node1": {"gpu": "true"}}``). Removes what a previous run left first."""
        if not 1 <= managers <= n:
            raise ValueError(f"managers must be between 1 and n ({n})")
        why = problem()
        if why:
            raise RuntimeError(f"cannot form a swarm here: {why}")
        if Swarm._live is not None and Swarm._live is not self:
            raise RuntimeError("this process has a harness swarm up already (one per machine): use it, or down() it "
                               "first")
        started = time.monotonic()
        self._acquire_lock(lock_timeout)
        Swarm._live = self
        try:
            teardown(self.base_dir, graceful=False, progress=self.say)
            self._driver = main_engine(timeout=10).info().get("Driver") or "fuse-overlayfs"
            self.base_dir.mkdir(parents=True)
            self.nodes = [_make_node(self.base_dir, i, manager=i < managers) for i in range(n)]
            self._network()
            for node in self.nodes:
                self._start_engine(node)
            for node in self.nodes:
                self._wait_engine(node)
            self._form(managers)
            for name, node_labels in (labels or {}).items():
                self.set_labels(self.node(name), node_labels)
            self._save_state()
        except BaseException:
            logs = "\n".join(f"--- {node.name} ---\n{node.log_tail(8)}" for node in self.nodes)
            self.say(f"[swarm] up failed; the engines' last lines:\n{logs}")
            self.down()
            raise
        self.timings["up"] = time.monotonic() - started
        self.say(f"[swarm] up: {n} nodes ({managers} manager{'s' if managers > 1 else ''}) "
                 f"in {self.timings['up']:.1f} s: " + ", ".join(f"{x.name} {x.ip}" for x in self.nodes))
        return self

    def down(self, graceful: bool = False) -> None:
        """Removes everything the harness made (also what a crashed run left; `teardown`). Idempotent."""
        started = time.monotonic()
        for node in self.nodes:
            node.close_client()
        teardown(self.base_dir, graceful=graceful, progress=self.say)
        for node in self.nodes:
            self._reap(node)
        if self._registry_proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._registry_proc.wait(timeout=5)
            self._registry_proc = None
        self.registry = None
        self.timings["down"] = time.monotonic() - started
        self.say(f"[swarm] down in {self.timings['down']:.1f} s")
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        if Swarm._live is self:
            Swarm._live = None

    def __enter__(self) -> Swarm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def _acquire_lock(self, timeout: float) -> None:
        if self._lock is not None:
            return
        lock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        deadline, told = time.monotonic() + timeout, False
        while True:
            try:
                lock.bind(LOCK_NAME)
                self._lock = lock
                return
            except OSError:
                if time.monotonic() > deadline:
                    lock.close()
                    raise TimeoutError(f"another process keeps a harness swarm for more than {timeout:.0f} s") from None
                if not told:
                    self.say("[swarm] another process has a harness swarm up; waiting for it")
                    told = True
                time.sleep(1)

    # ------------------------------------------------------------------ network and engines

    def _network(self) -> None:
        _run(["ip", "link", "add", BRIDGE, "type", "bridge"])
        _run(["ip", "addr", "add", f"{BRIDGE_IP}/{SUBNET.prefixlen}", "dev", BRIDGE])
        _run(["ip", "link", "set", BRIDGE, "up"])
        _run(["iptables", "-w", "-I", "FORWARD", "-i", BRIDGE, "-o", BRIDGE, "-m", "comment", "--comment",
              RULE_COMMENT, "-j", "ACCEPT"])
        for node in self.nodes:
            ns = node.netns
            _run(["ip", "netns", "add", ns])
            _run(["ip", "link", "add", node.veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
            _run(["ip", "link", "set", node.veth, "master", BRIDGE, "up"])
            _run(["ip", "-n", ns, "addr", "add", f"{node.ip}/{SUBNET.prefixlen}", "dev", "eth0"])
            _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
            _run(["ip", "-n", ns, "route", "add", "default", "via", BRIDGE_IP])
            # the engine's pulls of images that exist only here fail at once (see the module's docstring)
            for proto, reject in (("udp", "icmp-port-unreachable"), ("tcp", "tcp-reset")):
                _in_netns(ns, ["iptables", "-w", "-I", "OUTPUT", "-p", proto, "--dport", "53", "-j", "REJECT",
                               "--reject-with", reject])

    def _start_engine(self, node: Node) -> None:
        node.dir.mkdir(parents=True, exist_ok=True)
        node.config_file.write_text(json.dumps(_engine_config(node, self._driver), indent=1))
        # a killed engine leaves its pid file, and its pid may be a zombie nobody reaps: dockerd would refuse
        (node.dir / "docker.pid").unlink(missing_ok=True)
        log = open(node.log_file, "ab")  # noqa: SIM115 - the engine keeps it
        try:
            node.proc = subprocess.Popen(
                ["nsenter", f"--net=/var/run/netns/{node.netns}", "unshare", "--uts", "sh", "-c",
                 'hostname "$0" && exec dockerd --config-file "$1"', node.name, str(node.config_file)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()

    def _wait_engine(self, node: Node, timeout: float = 60) -> None:
        def answers() -> bool:
            if node.proc is not None and node.proc.poll() is not None:
                raise HarnessError(f"{node.name}'s dockerd exited ({node.proc.returncode}):\n{node.log_tail(5)}")
            return node.engine_alive()

        _deadline_wait(f"{node.name}'s engine answers on {node.socket}", answers, timeout, 0.1)

    def _form(self, managers: int) -> None:
        leader = self.nodes[0]
        leader.client.swarm.init(advertise_addr=leader.ip, listen_addr=f"{leader.ip}:2377",
                                 default_addr_pool=[OVERLAY_POOL], subnet_size=24,
                                 dispatcher_heartbeat_period=int(self.heartbeat_s * 1e9))
        tokens = leader.client.swarm.attrs["JoinTokens"]
        for node in self.nodes[1:]:
            node.client.swarm.join(remote_addrs=[f"{leader.ip}:2377"],
                                   join_token=tokens["Manager" if node.manager else "Worker"],
                                   listen_addr=f"{node.ip}:2377", advertise_addr=node.ip)
        for node in self.nodes:
            node.id = node.client.info()["Swarm"]["NodeID"]
        self.wait_nodes({node.name: "ready" for node in self.nodes}, timeout=60)

    def _reap(self, node: Node) -> None:
        if node.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.proc.wait(timeout=5)
            node.proc = None

    def _save_state(self) -> None:
        state = {"nodes": [node.as_dict() for node in self.nodes], "registry": self.registry,
                 "bridge": BRIDGE, "bridge_ip": BRIDGE_IP, "pid": os.getpid()}
        (self.base_dir / "state.json").write_text(json.dumps(state, indent=1))

    @classmethod
    def attach(cls, base_dir: Path | str = DEFAULT_DIR, progress: Progress | None = print) -> Swarm:
        """The swarm another process (``python -m tests.swarm_harness up``) left running, from its state file."""
        swarm = cls(base_dir, progress)
        state = json.loads((swarm.base_dir / "state.json").read_text())
        for d in state["nodes"]:
            node = _make_node(swarm.base_dir, d["index"], d["manager"])
            node.id = d["id"]
            swarm.nodes.append(node)
        swarm.registry = state.get("registry")
        return swarm

    # ------------------------------------------------------------------ looking at it

    def node(self, key: str | int | Node) -> Node:
        """A node by name (``"node1"``), index, hostname or swarm ID."""
        if isinstance(key, Node):
            return key
        for node in self.nodes:
            if key in (node.name, node.index, node.id):
                return node
        raise KeyError(f"no node {key!r}")

    @property
    def manager(self) -> Node:
        """The first manager whose engine answers and is part of the swarm's control plane."""
        for node in self.nodes:
            if node.manager and node.engine_alive():
                with contextlib.suppress(Exception):
                    if node.client.info()["Swarm"].get("ControlAvailable"):
                        return node
        raise RuntimeError("no manager of the swarm answers")

    def node_states(self) -> dict[str, str]:
        """``{"node0": "ready", "node2": "down", ...}`` as a manager sees them (keys: node names)."""
        by_id = {node.id: node.name for node in self.nodes}
        states = {}
        for n in self.manager.client.nodes.list():
            states[by_id.get(n.id, n.attrs["Description"]["Hostname"])] = n.attrs["Status"]["State"]
        return states

    def wait_node(self, node: str | int | Node, state: str, timeout: float = 60) -> float:
        """Waits until a manager sees `node` in `state` (``"ready"``, ``"down"``); the seconds it took."""
        return self.wait_nodes({self.node(node).name: state}, timeout)

    def wait_nodes(self, states: dict[str, str], timeout: float = 60) -> float:
        started = time.monotonic()
        seen: dict[str, str] = {}

        def reached() -> bool:
            seen.clear()
            seen.update(self.node_states())
            return all(seen.get(name) == state for name, state in states.items())

        try:
            _deadline_wait(f"nodes {states}", reached, timeout, 0.2)
        except TimeoutError as e:
            raise TimeoutError(f"{e}; last seen {seen}") from None
        return time.monotonic() - started

    def set_labels(self, node: str | int | Node, labels: dict[str, str]) -> None:
        """Adds node labels (``{"gpu": "true"}``: placement constraint ``node.labels.gpu == true``)."""
        target = self.node(node)
        n = self.manager.client.nodes.get(target.id)
        spec = dict(n.attrs["Spec"])
        spec["Labels"] = {**(spec.get("Labels") or {}), **labels}
        n.update(spec)

    def memory(self) -> dict[str, dict[str, float]]:
        """MiB of each node's engine processes (in its namespace: dockerd, containerd, shims...), as
        ``{"node0": {"rss": ..., "pss": ..., "dockerd_rss": ...}}``; PSS counts shared pages once overall."""
        result = {}
        for node in self.nodes:
            inode = _ns_inode(f"/var/run/netns/{node.netns}")
            rss = pss = dockerd = 0.0
            for pid in _scan({inode} if inode else set(), (), ()):
                with contextlib.suppress(OSError):
                    values = {}
                    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                        key, _, rest = line.partition(":")
                        if key in ("Rss", "Pss"):
                            values[key] = int(rest.split()[0]) / 1024
                    rss += values.get("Rss", 0)
                    pss += values.get("Pss", 0)
                    if Path(f"/proc/{pid}/comm").read_text().strip() == "dockerd":
                        dockerd += values.get("Rss", 0)
            result[node.name] = {"rss": round(rss, 1), "pss": round(pss, 1), "dockerd_rss": round(dockerd, 1)}
        return result

    def status(self) -> dict[str, Any]:
        """Nodes (address, socket, engine answering, state as a manager sees it), the registry."""
        try:
            states: dict[str, str] = self.node_states()
        except Exception as e:  # noqa: BLE001
            states = {"error": f"{type(e).__name__}: {e}"}
        nodes = [{**node.as_dict(), "engine": "answers" if node.engine_alive() else "dead",
                  "state": states.get(node.name, "?")} for node in self.nodes]
        return {"nodes": nodes, "registry": self.registry, "memory_mib": self.memory()}

    # ------------------------------------------------------------------ images

    def load_images(self, refs: Iterable[str], nodes: Iterable[str | int | Node] | None = None) -> dict[str, float]:
        """Copies images from the main engine to `nodes` (default: all) by ``docker save | docker load``,
        skipping a node that has the same image ID; the seconds per image. One ``save`` per image: streamed
        straight into the node when one node needs it, else spooled to a file loaded by all in parallel."""
        main = main_engine()
        targets = [self.node(x) for x in nodes] if nodes is not None else list(self.nodes)
        took = {}
        for ref in refs:
            started = time.monotonic()
            image = main.images.get(ref)
            size_mb = image.attrs.get("Size", 0) / 1e6
            need = []
            for node in targets:
                try:
                    have = node.client.images.get(ref).id
                except Exception:  # noqa: BLE001 - docker.errors.ImageNotFound
                    have = None
                if have == image.id:
                    self.say(f"[swarm] {ref}: {node.name} has it")
                else:
                    need.append(node)
            if not need:
                took[ref] = 0.0
                continue
            self.say(f"[swarm] {ref} ({image.short_id}, {size_mb:.0f} MB) -> {', '.join(n.name for n in need)}")
            if len(need) == 1:
                need[0].client.images.load(main.api.get_image(ref))
            else:
                spool = self.base_dir / "images" / f"{image.id.split(':')[-1][:16]}.tar"
                spool.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with open(spool, "wb") as f:
                        for chunk in main.api.get_image(ref):
                            f.write(chunk)
                    self._parallel([functools.partial(self._load_file, node, spool) for node in need])
                finally:
                    spool.unlink(missing_ok=True)
            for node in need:
                if node.client.images.get(ref).id != image.id:
                    raise RuntimeError(f"{node.name} has another {ref} after loading it")
            took[ref] = time.monotonic() - started
            self.timings[f"load {ref}"] = took[ref]
            self.say(f"[swarm] {ref}: loaded into {len(need)} node{'s' if len(need) > 1 else ''} "
                     f"in {took[ref]:.1f} s")
        return took

    @staticmethod
    def _load_file(node: Node, path: Path) -> None:
        with open(path, "rb") as f:
            node.client.images.load(f)

    @staticmethod
    def _parallel(jobs: list[Callable[[], None]]) -> None:
        errors: list[BaseException] = []

        def run(job: Callable[[], None]) -> None:
            try:
                job()
            except BaseException as e:  # noqa: BLE001 - re-raised below
                errors.append(e)

        threads = [threading.Thread(target=run, args=(job,), daemon=True) for job in jobs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]

    def start_registry(self, port: int = REGISTRY_PORT) -> str:
        """Starts Debian's docker-registry on the bridge address (every engine trusts it over plain HTTP);
        its ``host:port`` (Clipper's ``container_registry``). Stopped by `down`."""
        if self.registry:
            return self.registry
        why = registry_problem()
        if why:
            raise RuntimeError(why)
        if port != REGISTRY_PORT:
            raise ValueError(f"the engines trust {BRIDGE_IP}:{REGISTRY_PORT} only")
        root = self.base_dir / "registry"
        root.mkdir(parents=True, exist_ok=True)
        config = self.base_dir / "registry.yml"
        config.write_text(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {root}\n"
                          f"  delete:\n    enabled: true\nhttp:\n  addr: {BRIDGE_IP}:{port}\n")
        log = open(self.base_dir / "registry.log", "ab")  # noqa: SIM115 - the registry keeps it
        try:
            self._registry_proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdin=subprocess.DEVNULL,
                                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
        address = f"{BRIDGE_IP}:{port}"

        def answers() -> bool:
            if self._registry_proc is not None and self._registry_proc.poll() is not None:
                raise HarnessError(f"docker-registry exited: {(self.base_dir / 'registry.log').read_text()[-2000:]}")
            with socket.create_connection((BRIDGE_IP, port), timeout=1):
                return True

        _deadline_wait(f"the registry answers on {address}", answers, 20, 0.1)
        self.registry = address
        self._save_state()
        self.say(f"[swarm] registry on {address}")
        return address

    def push_images(self, refs: Iterable[str], via: str | int | Node = 0) -> dict[str, str]:
        """Puts images of the main engine into the registry (`start_registry`): loaded into node `via`,
        tagged ``<registry>/<ref>`` and pushed from there; ``{ref: registry ref}``."""
        registry = self.start_registry()
        node = self.node(via)
        pushed = {}
        for ref in refs:
            self.load_images([ref], nodes=[node])
            started = time.monotonic()
            target = f"{registry}/{ref}"
            repo, _, tag = target.rpartition(":") if ":" in ref.rsplit("/", 1)[-1] else (target, "", "latest")
            node.client.images.get(ref).tag(repo, tag)
            for line in node.client.api.push(repo, tag=tag, stream=True, decode=True):
                if "error" in line:
                    raise RuntimeError(f"pushing {target} from {node.name}: {line['error']}")
            self.timings[f"push {ref}"] = time.monotonic() - started
            self.say(f"[swarm] pushed {target} from {node.name} in {self.timings[f'push {ref}']:.1f} s")
            pushed[ref] = f"{repo}:{tag}"
        return pushed

    # ------------------------------------------------------------------ faults

    def kill_engine(self, node: str | int | Node) -> int:
        """The node is lost: SIGKILL to its dockerd, containerd, shims, docker-proxy, fuse-overlayfs and its
        containers' processes, then its mounts are dropped (as a reboot would). Its address stays up (a
        connection is refused). `restart_engine` brings it back; how many processes were killed."""
        target = self.node(node)
        target.close_client()
        killed = _kill_all(target.pids)
        self._reap(target)
        _unmount_under(target.dir)  # what a reboot would drop: mounts, and the shims' sockets under /run
        for sock in _shim_sockets(self.base_dir, target.dir.name):
            sock.unlink(missing_ok=True)
        self.say(f"[swarm] killed {target.name}'s engine ({killed} processes)")
        return killed

    def stop_engine(self, node: str | int | Node, timeout: float = 30) -> None:
        """Stops a node's engine as an operator would (SIGTERM: containers stopped, then the daemon)."""
        target = self.node(node)
        pid = target.proc.pid if target.proc is not None else _read_pid(target.dir / "docker.pid")
        target.close_client()
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                _deadline_wait(f"{target.name}'s engine stops", lambda: _is_zombie_or_gone(pid), timeout, 0.1)
        _kill_all(target.pids)
        self._reap(target)
        _unmount_under(target.dir)

    def restart_engine(self, node: str | int | Node, wait_ready: bool = True, timeout: float = 60) -> None:
        """Starts a node's engine again (stopping it first if it runs); it rejoins the swarm with its state.
        `wait_ready`: until a manager sees the node ready (when another manager answers)."""
        target = self.node(node)
        if target.engine_alive() or target.pids():
            self.stop_engine(target)
        started = time.monotonic()
        self._start_engine(target)
        self._wait_engine(target, timeout)
        if wait_ready:
            self.wait_node(target, "ready", timeout)
        self.say(f"[swarm] restarted {target.name}'s engine in {time.monotonic() - started:.1f} s")

    def cut_link(self, node: str | int | Node) -> None:
        """Cuts the node off the network (its veth down): the engine runs on, unreachable and reaching nothing."""
        _run(["ip", "link", "set", self.node(node).veth, "down"])

    def restore_link(self, node: str | int | Node) -> None:
        _run(["ip", "link", "set", self.node(node).veth, "up"])


def _read_pid(path: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(path.read_text().strip())
    return None


# ------------------------------------------------------------------------------------------------ pytest


def swarm_session(n: int = 3, images: Iterable[str] = (), **up_kwargs: Any) -> Iterator[Swarm]:
    """The body of a pytest fixture: skips with the reason when no swarm can be formed here, else forms one,
    loads `images` into every node, yields it and takes it down::

        @pytest.fixture(scope="session")
        def swarm():
            yield from swarm_session(3, images=["clipper/base:0.1.0"], labels={"node1": {"gpu": "true"}})
    """
    import pytest

    why = problem()
    if why:
        pytest.skip(f"cannot form a Docker swarm here: {why}")
    swarm = Swarm()
    swarm.up(n, **up_kwargs)
    try:
        if images:
            swarm.load_images(list(images))
        yield swarm
    finally:
        swarm.down()


# --------------------------------------------------------------------------------------------------- cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.swarm_harness", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="form a swarm (after removing any previous one); it runs on after this exits")
    up.add_argument("-n", type=int, default=3, help="nodes (default 3)")
    up.add_argument("--managers", type=int, default=1, help="how many of them are managers (default 1)")
    up.add_argument("--label", action="append", default=[], metavar="NODE:KEY=VALUE", help="e.g. node1:gpu=true")
    up.add_argument("--load", action="append", default=[], metavar="IMAGE", help="image of the main engine to load")
    up.add_argument("--registry", action="store_true", help=f"start a registry on {BRIDGE_IP}:{REGISTRY_PORT}")
    sub.add_parser("status", help="the nodes as the swarm sees them, and what of a swarm exists on this machine")
    sub.add_parser("down", help="remove every trace of a harness swarm")
    args = parser.parse_args(argv)
    if args.command == "up":
        labels: dict[str, dict[str, str]] = {}
        for item in args.label:
            name, _, kv = item.partition(":")
            key, _, value = kv.partition("=")
            labels.setdefault(name, {})[key] = value
        swarm = Swarm().up(args.n, args.managers, labels)
        if args.load:
            swarm.load_images(args.load)
        if args.registry:
            swarm.start_registry()
        print(json.dumps(swarm.memory(), indent=1))
        for node in swarm.nodes:
            print(f"{node.name}: {node.ip}  docker -H {node.url}  id {node.id}{'  manager' if node.manager else ''}")
        return 0
    if args.command == "status":
        if (DEFAULT_DIR / "state.json").exists():
            print(json.dumps(Swarm.attach(progress=None).status(), indent=1))
        print(json.dumps({"leftovers": leftovers()}, indent=1))
        return 0
    started = time.monotonic()
    teardown(DEFAULT_DIR, progress=print)
    rest = {k: v for k, v in leftovers().items() if v}
    print(f"[swarm] down in {time.monotonic() - started:.1f} s" + (f"; left: {rest}" if rest else ""))
    return 1 if rest else 0


if __name__ == "__main__":
    sys.exit(main())
