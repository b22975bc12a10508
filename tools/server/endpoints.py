"""Where a Triton server listens: host and ports, and free ports for a server of a test or a tool."""

from __future__ import annotations

import secrets
import socket
from dataclasses import dataclass
from pathlib import Path

from pipelines import spec


def _ephemeral_ports() -> range:
    """The kernel's range for outgoing connections' local ports (Linux; a common default elsewhere)."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(low, high + 1)


def free_port() -> int:
    """A port nothing listens on, outside the ephemeral range.

    A port the kernel handed out (bind to port 0) is free only until Triton binds it; meanwhile any
    outgoing connection may take it as its local port. Ports below the ephemeral range are never
    given to outgoing connections, so only another listener could take it.
    """
    ephemeral = _ephemeral_ports()
    candidates = [p for p in range(20000, 32768) if p not in ephemeral]
    for port in secrets.SystemRandom().sample(candidates, 64):
        with socket.socket() as s:
            try:
                s.bind((spec.HOST, port))
            except OSError:
                continue
            return port
    raise OSError("no free port found between 20000 and 32767")


@dataclass
class Endpoints:
    host: str = spec.HOST
    http: int = spec.HTTP_PORT
    grpc: int = spec.GRPC_PORT
    metrics: int = spec.METRICS_PORT

    @classmethod
    def free(cls) -> Endpoints:
        return cls(http=free_port(), grpc=free_port(), metrics=free_port())

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc}"

    def url(self, protocol: str) -> str:
        """The address for a client of `protocol` (grpc or http)."""
        return self.grpc_url if protocol == "grpc" else self.http_url
