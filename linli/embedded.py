"""The embedded default: a real nats-server and the nx-27017 MongoDB wire-protocol server on loopback."""

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode} before it listened on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout:.0f} s")


def tool(name: str) -> str:
    beside_python = Path(sys.executable).parent / name
    found = str(beside_python) if beside_python.exists() else shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} is not installed; run: pip install -e '.[test]'")
    return found


@dataclass
class Server:
    name: str
    url: str
    port: int
    process: subprocess.Popen[bytes]

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_nats(data_dir: Path, port: int | None = None) -> Server:
    port = port or free_port()
    store = data_dir / "nats"
    store.mkdir(parents=True, exist_ok=True)
    log = open(data_dir / "nats-server.log", "ab")
    process = subprocess.Popen(
        [tool("nats-server"), "-js", "-sd", str(store), "-a", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    wait_for_port(port, process, "nats-server")
    return Server("nats-server", f"nats://127.0.0.1:{port}", port, process)


def start_mongo(data_dir: Path, port: int | None = None) -> Server:
    port = port or free_port()
    store = data_dir / "mongo"
    store.mkdir(parents=True, exist_ok=True)
    log = open(data_dir / "nx-27017.out", "ab")
    process = subprocess.Popen(
        [
            tool("nx-27017"),
            "--data-dir", str(store),
            "--host", "127.0.0.1",
            "-p", str(port),
            "--log-file", str(data_dir / "nx-27017.log"),
            "--pid-file", str(data_dir / "nx-27017.pid"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    wait_for_port(port, process, "nx-27017")
    return Server("nx-27017", f"mongodb://127.0.0.1:{port}", port, process)
