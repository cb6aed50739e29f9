"""Network namespaces for the controller tests: hosts joined by an underlay, and containers.

Everything is made with `ip` (allowed in tests) under names with a random tag, and removed by
`Lab.cleanup` even when a test fails; cleanup goes on after a failure and reports every one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from typing import List

import pytest


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


class Lab:
    """Hosts (namespaces on one underlay bridge-less veth mesh) and container namespaces."""

    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex[:6]
        self.namespaces: List[str] = []

    def namespace(self, role: str) -> str:
        name = f"ovpy-{self.tag}-{role}"
        ip("netns", "add", name)
        self.namespaces.append(name)
        ip("-n", name, "link", "set", "lo", "up")
        return name

    def two_hosts(self) -> "tuple[str, str]":
        """Two host namespaces joined by a veth pair: 192.0.2.1/24 and 192.0.2.2/24."""
        h1, h2 = self.namespace("h1"), self.namespace("h2")
        ip("link", "add", "ul0", "netns", h1, "type", "veth", "peer", "name", "ul0", "netns", h2)
        for ns, addr in ((h1, "192.0.2.1/24"), (h2, "192.0.2.2/24")):
            ip("-n", ns, "addr", "add", addr, "dev", "ul0")
            ip("-n", ns, "link", "set", "ul0", "up")
        return h1, h2

    @staticmethod
    def path(name: str) -> str:
        return f"/run/netns/{name}"

    def run_in(self, ns: str, code: str, *args: str, timeout: float = 30) -> "subprocess.CompletedProcess[str]":
        """Runs Python `code` inside namespace `ns`."""
        return subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-c", code, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def cleanup(self) -> None:
        failures = []
        # The overlay sandboxes of this lab's hosts: host ids end in "-<tag>", and a host's
        # sandboxes are named "ovl-<id with '-' as '_'>-<network>".
        sandbox_suffix = f"_{self.tag}-"
        leftovers = [n for n in os.listdir("/run/netns") if n.startswith("ovl-") and sandbox_suffix in n] \
            if os.path.isdir("/run/netns") else []
        for ns in reversed(self.namespaces + leftovers):
            try:
                ip("netns", "del", ns)
            except subprocess.CalledProcessError as e:
                failures.append(f"ip netns del {ns}: {e.stderr.strip()}")
        self.namespaces.clear()
        if failures:
            raise RuntimeError("cleanup failed: " + "; ".join(failures))


def can_make_namespaces() -> str:
    """Empty when this process may create namespaces, else why not."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "needs the ip command (Debian package iproute2)"
    return ""


def require_namespaces() -> None:
    """Skips the test where namespaces cannot be made; fails it instead under CI=true."""
    why = can_make_namespaces()
    if why:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{why}; CI=true requires it", pytrace=False)
        pytest.skip(why)
