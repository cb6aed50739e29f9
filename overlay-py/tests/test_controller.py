"""The controller through Python: the seed's walkthrough (two hosts as namespaces, four
containers, every container reaching every other by name), and its errors."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List

import pytest

import overlay
from netns import Lab, require_namespaces
from procs import run_all
from servers import server, start_etcd, start_zookeeper

VXLANID = "com.docker.network.driver.overlay.vxlanid_list"
PORT = 2181  # the seed ran ZooKeeper; any port works inside the containers

ECHO = """
import socket, sys
port, count, me = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port))
s.listen(64)
s.settimeout(60)
print("listening", flush=True)
for _ in range(count):
    c, _ = s.accept()
    c.sendall(b"hello from " + me.encode() + b" to " + c.recv(200))
    c.close()
"""

CLIENT = """
import socket, sys, time
port = int(sys.argv[1])
for target in sys.argv[2:]:
    name, addr = target.split("=")
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection((addr, port), timeout=2) as c:
                c.sendall(name.encode())
                print(name, c.recv(200).decode(), flush=True)
                break
        except OSError as e:
            if time.monotonic() > deadline:
                print(name, "FAILED", e, flush=True)
                break
            time.sleep(0.1)
"""


@pytest.fixture
def lab() -> Iterator[Lab]:
    require_namespaces()
    lab = Lab()
    try:
        yield lab
    finally:
        lab.cleanup()


@pytest.fixture(params=["embedded", "etcd", "zookeeper"])
def cluster_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "embedded":
        return f"file://{tmp_path / 'cluster.db'}"
    if request.param == "etcd":
        return server("etcd", start_etcd).url()
    return server("zookeeper", start_zookeeper).url()


def hosts_entries(path: Path) -> Dict[str, str]:
    """name -> address, from a hosts file."""
    names: Dict[str, str] = {}
    if not path.exists():
        return names
    for line in path.read_text().splitlines():
        fields = line.split("#", 1)[0].split()
        for name in fields[1:]:
            names[name] = fields[0]
    return names


def wait_for(what: str, check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout}s")
        time.sleep(0.05)


def test_walkthrough(lab: Lab, cluster_url: str, tmp_path: Path) -> None:
    h1, h2 = lab.two_hosts()
    host_of = {"zookeeper1": h1, "zookeeper2": h2, "zookeeper3": h1, "zookeeper4": h2}
    containers = {name: lab.namespace(f"c{name[-1]}") for name in host_of}
    ids = (f"host1-{lab.tag}", f"host2-{lab.tag}")
    with overlay.Controller(
        store=cluster_url, advertise="192.0.2.1", host_id=ids[0], host_netns=lab.path(h1),
        state_dir=tmp_path / "state1",
    ) as c1, overlay.Controller(
        store=cluster_url, advertise="192.0.2.2", host_id=ids[1], host_netns=lab.path(h2),
        state_dir=tmp_path / "state2",
    ) as c2:
        controller = {h1: c1, h2: c2}
        assert (c1.host_id, c2.host_id) == ids

        # docker network create --driver overlay my-net, on host 1 ...
        created = c1.create_network("my-net", subnet="10.0.9.0/24", labels={"seed": "walkthrough"})
        assert created["Name"] == "my-net" and created["Driver"] == "overlay"
        assert created["Scope"] == "global"
        # ... and docker network ls on both hosts shows it with the same ID.
        ls1 = [n for n in c1.networks() if n["Name"] == "my-net"]
        wait_for("host 2 seeing my-net", lambda: any(n["Name"] == "my-net" for n in c2.networks()))
        ls2 = [n for n in c2.networks() if n["Name"] == "my-net"]
        assert ls1 == ls2 and ls1[0]["ID"] == created["Id"] and len(created["Id"]) == 64
        assert ls1[0]["Scope"] == "global"

        # docker run --net=my-net --name zookeeperN, two containers per host.
        events = {h1: c1.events(), h2: c2.events()}
        hosts_files = {name: tmp_path / f"{name}.hosts" for name in host_of}
        entries = {}
        for name, host in host_of.items():
            entry = controller[host].connect(
                "my-net",
                netns=lab.path(containers[name]),
                container_id=f"{name}-id",
                name=name,
                hosts_file=str(hosts_files[name]),
            )
            assert entry["Name"] == name
            assert entry["IPv4Address"].startswith("10.0.9.")
            assert entry["MacAddress"].startswith("02:42:")
            entries[name] = entry
        addresses = {name: e["IPv4Address"].split("/")[0] for name, e in entries.items()}
        assert len(set(addresses.values())) == 4, addresses

        # inspect, from either host, lists all four with their addresses.
        for c in (c1, c2):
            doc = c.inspect("my-net")
            assert doc["Id"] == created["Id"]
            assert doc["IPAM"]["Config"][0]["Subnet"] == "10.0.9.0/24"
            assert VXLANID in doc["Options"]
            assert doc["Labels"] == {"seed": "walkthrough"}
            got = {cid: (v["Name"], v["IPv4Address"]) for cid, v in doc["Containers"].items()}
            assert got == {f"{n}-id": (n, e["IPv4Address"]) for n, e in entries.items()}
        assert c2.inspect(created["Id"][:12])["Name"] == "my-net"

        # Names: every container's hosts file has every other by name and name.my-net.
        def resolved(name: str) -> bool:
            table = hosts_entries(hosts_files[name])
            return all(
                table.get(other) == addr and table.get(f"{other}.my-net") == addr
                for other, addr in addresses.items()
                if other != name
            )

        for name in host_of:
            wait_for(f"{name}'s hosts file listing every other container", lambda: resolved(name))
        for other, addr in addresses.items():
            assert addr in c1.resolve(other) and addr in c2.resolve(f"{other}.my-net")
        # Each host reports the containers that came up on the other one.
        for host in (h1, h2):
            remote = {n for n, h in host_of.items() if h != host}
            up = set()
            while not remote <= up:
                event = events[host].next(timeout=10)
                assert event is not None, f"{host}: endpoint_up events seen so far: {up}"
                if event["type"] == "endpoint_up":
                    assert event["network"] == created["Id"]
                    assert event["ip"] == addresses[event["name"]]
                    up.add(event["name"])

        # Connectivity by name: a real TCP exchange from each container to every other.
        servers = []
        try:
            for name in host_of:
                proc = subprocess.Popen(
                    ["ip", "netns", "exec", containers[name], sys.executable, "-c", ECHO,
                     str(PORT), str(2 * (len(host_of) - 1)), name],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                servers.append(proc)
                assert proc.stdout is not None and proc.stdout.readline().strip() == "listening"
            for name in host_of:
                table = hosts_entries(hosts_files[name])
                targets = [f"{t}={table[t]}" for other in host_of if other != name
                           for t in (other, f"{other}.my-net")]
                out = lab.run_in(containers[name], CLIENT, str(PORT), *targets)
                assert out.returncode == 0, out.stderr
                for other in host_of:
                    if other == name:
                        continue
                    for t in (other, f"{other}.my-net"):
                        assert f"{t} hello from {other} to {t}" in out.stdout, out.stdout
        finally:
            for proc in servers:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()

        # Removing a network with containers is refused and names them.
        with pytest.raises(overlay.ConflictError) as info:
            c2.remove_network("my-net")
        assert "zookeeper" in str(info.value)

        # Leaving: disconnect everything, the other host's hosts file forgets, then remove.
        c2.disconnect("my-net", "zookeeper4-id")
        wait_for("zookeeper4 leaving zookeeper1's hosts file",
                 lambda: "zookeeper4" not in hosts_entries(hosts_files["zookeeper1"]))
        for name, host in host_of.items():
            if name != "zookeeper4":
                controller[host].disconnect("my-net", f"{name}-id")
        with pytest.raises(overlay.NotFoundError):
            c1.disconnect("my-net", "zookeeper1-id")
        c1.remove_network("my-net")
        with pytest.raises(overlay.NotFoundError):
            c2.inspect("my-net")
        assert all(n["Name"] != "my-net" for n in c2.networks())


def test_controller_errors(lab: Lab, tmp_path: Path) -> None:
    (h1,) = [lab.namespace("h1")]
    url = f"file://{tmp_path / 'cluster.db'}"
    with overlay.Controller(store=url, advertise="127.0.0.1", host_id=f"solo-{lab.tag}", host_netns=lab.path(h1),
                            state_dir=tmp_path / "state") as c:
        with pytest.raises(overlay.NotFoundError):
            c.inspect("no-such-network")
        with pytest.raises(overlay.NotFoundError):
            c.resolve("nobody")
        with pytest.raises(overlay.NotFoundError):
            c.remove_network("no-such-network")
        c.create_network("net-a", subnet="10.0.7.0/24", vni=4242)
        with pytest.raises(overlay.AlreadyExistsError):
            c.create_network("net-a")
        with pytest.raises(overlay.AlreadyExistsError):
            c.create_network("net-b", vni=4242)
        with pytest.raises(overlay.InvalidArgumentError):
            c.create_network("bridge")
        with pytest.raises(overlay.InvalidArgumentError):
            c.create_network("net-c", subnet="10.0.300.0/24")
        with pytest.raises(overlay.InvalidArgumentError):
            c.create_network("net-c", gateway="10.0.8.1")
        with pytest.raises(TypeError):
            c.create_network("net-c", vni="5")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            c.connect("net-a", netns=1.5, container_id="x", name="x")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            c.create_network("net-c", colour="blue")  # type: ignore[call-arg]
        assert [n["Name"] for n in c.networks()] == ["net-a"], "a refused call changed something"
        with pytest.raises(overlay.NotFoundError):
            c.connect("net-a", netns=f"/run/netns/ovpy-{lab.tag}-missing", container_id="x", name="x")
        assert c.inspect("net-a")["Containers"] == {}
    with pytest.raises(TypeError):
        overlay.Controller(store=url, advertise="127.0.0.1", no_such_option=1)  # type: ignore[call-arg]
    with pytest.raises(overlay.InvalidArgumentError) as info:
        overlay.Controller(store=url, advertise="127.0.0.1", dns_upstreams=["192.0.2.53", "resolver"])
    assert "dns_upstreams[1]" in str(info.value)


def test_controller_from_eight_threads(lab: Lab, tmp_path: Path) -> None:
    h1 = lab.namespace("h1")
    url = f"file://{tmp_path / 'cluster.db'}"
    with overlay.Controller(store=url, advertise="127.0.0.1", host_id=f"t-{lab.tag}", host_netns=lab.path(h1),
                            state_dir=tmp_path / "state") as c:
        errors: List[BaseException] = []

        def work(i: int) -> None:
            try:
                doc = c.create_network(f"net{i}", subnet=f"10.0.{100 + i}.0/24")
                assert c.inspect(f"net{i}")["Id"] == doc["Id"]
                assert any(n["Name"] == f"net{i}" for n in c.networks())
                with pytest.raises(overlay.AlreadyExistsError):
                    c.create_network(f"net{i}")
            except BaseException as e:  # reported by the main thread
                errors.append(e)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        run_all(threads)
        assert errors == []
        assert sorted(n["Name"] for n in c.networks()) == [f"net{i}" for i in range(8)]
        vnis = {c.inspect(f"net{i}")["Options"][VXLANID] for i in range(8)}
        assert len(vnis) == 8, "two networks got one VNI"


def test_connect_options_reach_the_core(lab: Lab, tmp_path: Path) -> None:
    h1 = lab.namespace("h1")
    box = lab.namespace("box")
    url = f"file://{tmp_path / 'cluster.db'}"
    with overlay.Controller(store=url, advertise="127.0.0.1", host_id=f"o-{lab.tag}", host_netns=lab.path(h1),
                            state_dir=tmp_path / "state") as c:
        c.create_network("opts", subnet="10.0.7.0/24", gateway="10.0.7.254", ip_range="10.0.7.128/25")
        gw = c.inspect("opts")["IPAM"]["Config"][0]
        assert (gw["Gateway"], gw["IPRange"]) == ("10.0.7.254", "10.0.7.128/25")
        # A static address, an alias and a chosen interface name.
        with pytest.raises(overlay.InvalidArgumentError) as bad:
            c.connect("opts", netns=Path(lab.path(box)), container_id="fixed", name="fixed", owner="no spaces")
        assert "owner" in str(bad.value), bad.value
        fixed = c.connect("opts", netns=Path(lab.path(box)), container_id="fixed", name="fixed",
                          ip="10.0.7.200", aliases=["db"], ifname="ovl7", resolv_conf=tmp_path / "fixed.resolv",
                          owner="pytest")
        assert fixed["IPv4Address"] == "10.0.7.200/24"
        # The resolver is at the network's gateway, the network's name its search domain. A
        # connect writes its container's own files before it returns.
        resolv = (tmp_path / "fixed.resolv").read_text().splitlines()
        assert "nameserver 10.0.7.254" in resolv and "search opts" in resolv, resolv
        assert "10.0.7.200" in c.resolve("db") and "10.0.7.200" in c.resolve("db.opts")
        link = subprocess.run(["ip", "-n", box, "-o", "addr", "show", "dev", "ovl7"],
                              capture_output=True, text=True, timeout=30)
        assert "10.0.7.200/24" in link.stdout, link.stdout + link.stderr
        with pytest.raises(overlay.ConflictError) as info:
            c.connect("opts", netns=lab.path(box), container_id="other", name="other", ip="10.0.7.200")
        assert "10.0.7.200" in str(info.value)
        # A sticky container gets its address back after a disconnect; its range is honoured.
        # (A namespace of its own: box holds fixed's interfaces, gateway one included.)
        box2 = lab.namespace("box2")
        first = c.connect("opts", netns=lab.path(box2), container_id="s1", name="sticky", sticky=True)
        addr = first["IPv4Address"]
        assert 128 <= int(addr.split("/")[0].split(".")[3]) <= 253, addr
        c.disconnect("opts", "s1")
        again = c.connect("opts", netns=lab.path(box2), container_id="s2", name="sticky", sticky=True)
        assert again["IPv4Address"] == addr


def test_a_live_host_id_is_refused_and_paths_stay_local(lab: Lab, tmp_path: Path) -> None:
    h1 = lab.namespace("h1")
    box = lab.namespace("box")
    url = f"file://{tmp_path / 'cluster.db'}"
    state = tmp_path / "state"
    with overlay.Controller(store=url, advertise="127.0.0.1", host_id=f"one-{lab.tag}",
                            host_netns=lab.path(h1), state_dir=state) as c:
        with pytest.raises(overlay.AlreadyExistsError) as info:
            overlay.Controller(store=url, advertise="127.0.0.2", host_id=f"one-{lab.tag}",
                               host_netns=lab.path(h1), state_dir=tmp_path / "other")
        assert f"one-{lab.tag}" in str(info.value) and "127.0.0.1" in str(info.value)
        health = c.health()
        assert health["store_reachable"] is True and health["host"] == f"one-{lab.tag}"
        assert {"hosts", "networks", "sweep", "files"} <= {t["name"] for t in health["tasks"]}
        sent = health["store_requests"]
        assert sent["get"] >= 1 and sent["watch"] >= 1 and sent["create_ephemeral"] >= 1, sent
        assert not (tmp_path / "other").exists(), "the refused controller kept no state"
        c.create_network("local", subnet="10.0.8.0/24")
        hosts = tmp_path / "box.hosts"
        c.connect("local", netns=lab.path(box), container_id="b1", name="b1", hosts_file=hosts)
        # The namespace and hosts file paths are in this host's state, not in the store.
        entries = list((state / "endpoints").glob("*.json"))
        assert len(entries) == 1 and str(hosts) in entries[0].read_text()
        with overlay.Store(url) as store:
            for _key, value, _version in store.list(""):
                assert str(hosts).encode() not in value and lab.path(box).encode() not in value
        c.disconnect("local", "b1")
        assert list((state / "endpoints").glob("*.json")) == []
    assert not state.exists(), "a host that stops with no container leaves no state"


ABANDONED_CONNECT = """
import signal, sys, overlay
signal.signal(signal.SIGINT, signal.default_int_handler)
url, host, box, state = sys.argv[1:5]
with overlay.Controller(store=url, advertise="192.0.2.1", host_id="ctrl-c", host_netns=f"/run/netns/{host}",
                        state_dir=state) as c:
    print("ready", flush=True)
    for i in range(1000):
        c.connect("net", netns=f"/run/netns/{box}", container_id=f"c{i}", name=f"c{i}")
        c.disconnect("net", f"c{i}")
"""


def test_ctrl_c_during_connects_leaves_no_half_connect(lab: Lab, tmp_path: Path) -> None:
    # Connects and disconnects in a loop, interrupted by Ctrl-C wherever it is: the interrupted
    # call completes (or rolls back) before the controller closes, so the container ends up
    # connected in full (record, interface, host state) or not at all.
    import signal
    import sys

    h1, _ = lab.two_hosts()
    box = lab.namespace("box")
    url = f"file://{tmp_path / 'cluster.db'}"
    state = tmp_path / "state"
    with overlay.Controller(store=url, advertise="192.0.2.1", host_id="setup", host_netns=lab.path(h1),
                            state_dir=tmp_path / "setup-state") as c:
        c.create_network("net", subnet="10.0.11.0/24")
    for delay in (0.05, 0.2, 0.5):
        proc = subprocess.Popen([sys.executable, "-c", ABANDONED_CONNECT, url, h1, box, str(state)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            time.sleep(delay)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert "KeyboardInterrupt" in err, err
        with overlay.Store(url) as store:
            records = [k for k, _, _ in store.list("containers/")]
        link = subprocess.run(["ip", "-n", box, "link", "show", "eth0"], capture_output=True).returncode == 0
        entries = list((state / "endpoints").glob("*.json")) if state.exists() else []
        assert (len(records), link, len(entries)) in ((0, False, 0), (1, True, 1)), (records, link, entries)
        if records:  # connected in full: undo it for the next round
            cid = records[0].rsplit("/", 1)[1]
            with overlay.Controller(store=url, advertise="192.0.2.1", host_id="ctrl-c",
                                    host_netns=lab.path(h1), state_dir=state) as c:
                c.disconnect("net", cid)
