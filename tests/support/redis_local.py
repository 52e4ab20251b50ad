"""A throwaway `redis-server` on a free loopback port, for tests and the serving benchmark (never production)."""
from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass

from lfm.errors import LfmError


class NoRedis(LfmError):
    """No redis-server binary on PATH."""


@dataclass
class LocalRedis:
    process: subprocess.Popen
    port: int
    workdir: str

    @property
    def connection(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        terminate(self.process, grace_s=10)
        shutil.rmtree(self.workdir, ignore_errors=True)


def terminate(process: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM, then SIGKILL once `grace_s` has passed: a test server never outlives its test."""
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(timeout_s: float = 20.0, port: int | None = None) -> LocalRedis:
    """Start redis-server (no persistence) on 127.0.0.1:<free port> (or `port`: a server stopped there comes back,
    empty) and wait until it answers PING."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise NoRedis("redis-server is not installed (apt-get install redis-server)")
    import redis

    wanted = port
    for _ in range(3 if wanted is None else 1):  # a free port can be taken between probing and binding: retry
        port, workdir = wanted or free_port(), tempfile.mkdtemp(prefix="lfm-redis-")
        proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", workdir, "--protected-mode", "yes"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if redis.Redis(host="127.0.0.1", port=port, socket_timeout=1).ping():
                    return LocalRedis(proc, port, workdir)
            except redis.exceptions.ConnectionError:
                time.sleep(0.1)
        proc.kill()
        proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    raise NoRedis(f"redis-server did not start on {f'port {wanted}' if wanted else 'a free loopback port'}")
