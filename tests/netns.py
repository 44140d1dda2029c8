"""Several "hosts" on one machine: Linux network namespaces joined to this one by veth links.

Each host is a namespace with one veth pair: a /30 of a private /24 (its address
inside, the gateway address on this side), its loopback up, and no other route,
so nothing it sends can leave the link. Services on this machine's loopback reach
a host through socat forwarders listening on its gateway address. Needs root.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class NetnsError(RuntimeError):
    """A namespace, a link or a forwarder could not be set up."""


def ip(*args: str) -> str:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if result.returncode:
        raise NetnsError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def unavailable() -> str | None:
    """Why namespaces cannot be used here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "socat", "ss"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def free_subnet(first: int) -> str:
    """A 10.213.x prefix that no address or route of this machine uses."""
    used = ip("-4", "addr") + ip("-4", "route", "show", "table", "all")
    for offset in range(250):
        prefix = f"10.213.{(first + offset) % 250 + 1}"
        if f"{prefix}." not in used:
            return prefix
    raise NetnsError("no free 10.213.x.0/24 subnet")


@dataclass
class Host:
    namespace: str
    link: str  # this side of the veth pair: down, and the host is cut off
    address: str  # the host's own address
    gateway: str  # this side's address, where the forwarders listen

    def popen(self, argv: list[str], log: Path, **kwargs: Any) -> subprocess.Popen:
        """Start ``argv`` inside the host, in its own process group, its output to ``log``."""
        with open(log, "ab") as output:
            return subprocess.Popen(
                ["ip", "netns", "exec", self.namespace, *argv],
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **kwargs,
            )

    def run(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["ip", "netns", "exec", self.namespace, *argv],
            capture_output=True,
            text=True,
            timeout=60,
            **kwargs,
        )

    def pids(self) -> set[int]:
        """Every process running inside the host."""
        return {int(pid) for pid in ip("netns", "pids", self.namespace).split()}

    def signal_all(self, sig: signal.Signals) -> None:
        for pid in self.pids():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def kill_all(self, timeout: float = 10) -> None:
        """SIGKILL every process inside, and wait until they are gone."""
        deadline = time.monotonic() + timeout
        while pids := self.pids():
            if time.monotonic() > deadline:
                raise NetnsError(f"processes {sorted(pids)} in {self.namespace} do not die")
            self.signal_all(signal.SIGCONT)  # a stopped process dies only once continued
            self.signal_all(signal.SIGKILL)
            time.sleep(0.1)

    def cut(self) -> None:
        ip("link", "set", self.link, "down")

    def reconnect(self) -> None:
        ip("link", "set", self.link, "up")

    def connections(self) -> list[str]:
        """This side's open TCP connections with the host (through its forwarders)."""
        out = subprocess.run(
            ["ss", "-Htn", "state", "connected", "exclude", "time-wait", "src", self.gateway],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return [line for line in out.splitlines() if line.strip()]


@dataclass
class Network:
    """Hosts named ``<name>-<role>``; close() removes everything, whatever state it is in."""

    name: str
    prefix: str  # "10.213.x"
    hosts: list[Host] = field(default_factory=list)
    forwarders: list[subprocess.Popen] = field(default_factory=list)

    def add_host(self, role: str) -> Host:
        base = 4 * len(self.hosts)
        host = Host(
            namespace=f"{self.name}-{role}",
            link=f"{self.name.replace('-', '')[:10]}{role}"[-15:],
            address=f"{self.prefix}.{base + 2}",
            gateway=f"{self.prefix}.{base + 1}",
        )
        ip("netns", "add", host.namespace)
        self.hosts.append(host)  # from here on, close() deletes it
        peer = ("peer", "name", "eth0", "netns", host.namespace)
        ip("link", "add", host.link, "type", "veth", *peer)
        ip("addr", "add", f"{host.gateway}/30", "dev", host.link)
        ip("link", "set", host.link, "up")
        ip("-n", host.namespace, "addr", "add", f"{host.address}/30", "dev", "eth0")
        ip("-n", host.namespace, "link", "set", "eth0", "up")
        ip("-n", host.namespace, "link", "set", "lo", "up")
        return host

    def forward(self, host: Host, target_host: str, target_port: int, log: Path) -> int:
        """Forward a port of ``host``'s gateway address to a service here; returns the port."""
        with socket.socket() as s:
            s.bind((host.gateway, 0))
            port = s.getsockname()[1]
        with open(log, "ab") as output:
            forwarder = subprocess.Popen(
                [
                    "socat",
                    f"TCP-LISTEN:{port},bind={host.gateway},fork,reuseaddr",
                    f"TCP:{target_host}:{target_port}",
                ],
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its children (one per connection) die with it
            )
        self.forwarders.append(forwarder)
        deadline = time.monotonic() + 10
        while True:
            if forwarder.poll() is not None:
                raise NetnsError(f"socat for {host.gateway}:{port} exited: see {log}")
            try:
                with socket.create_connection((host.gateway, port), timeout=1):
                    return port
            except OSError:
                if time.monotonic() > deadline:
                    raise NetnsError(f"socat does not listen on {host.gateway}:{port}") from None
                time.sleep(0.05)

    def close(self) -> None:
        for forwarder in self.forwarders:
            try:
                os.killpg(forwarder.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            forwarder.wait()
        for host in self.hosts:
            try:
                host.kill_all()
            finally:
                # Deleting the namespace deletes its end of the veth pair, and so both.
                subprocess.run(["ip", "netns", "delete", host.namespace], capture_output=True)
                subprocess.run(["ip", "link", "delete", host.link], capture_output=True)
