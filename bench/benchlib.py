"""Small helpers the benchmark scripts share (they run as scripts, so this module is
imported from the script's own directory)."""

from __future__ import annotations

import random
import socket
import subprocess


def run(cmd, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("check", True)
    return subprocess.run([str(c) for c in cmd], **kw)


def free_port() -> int:
    for _ in range(50):
        port = random.randint(20000, 60000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise SystemExit("no free loopback port found")
