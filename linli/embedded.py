"""The embedded default: a real nats-server and the nx-27017 MongoDB wire-protocol server on loopback."""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


def listening(port: int) -> bool:
    """Whether something accepts connections on the port. A connection to a port nobody listens on can,
    rarely, be given that same port as its own and connect to itself; that is not a server."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            return bool(sock.getsockname() != sock.getpeername())
    except OSError:
        return False


def wait_for_own_port(
    reported: Callable[[], int | None], process: subprocess.Popen[bytes], what: str, report: Path,
    timeout: float = 20.0,
) -> int:
    """Waits until the server itself says which port it listens on, then until that port answers.

    Asking the server, rather than only knocking on the port, is what tells our server from another
    program that happens to hold the port; a server that could not bind its port exits instead."""
    deadline = time.monotonic() + timeout
    port = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            where = f" on {port}" if port else ""
            raise RuntimeError(f"{what} exited with code {process.returncode} before it listened{where}")
        port = port or reported()
        if port and listening(port):
            return port
        time.sleep(0.05)
    if port:
        raise RuntimeError(f"{what} did not answer on port {port} within {timeout:.0f} s")
    raise RuntimeError(f"{what} did not report a port it listens on within {timeout:.0f} s (see {report})")


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


def start_nats(data_dir: Path, port: int | None = None, authorization: str = "") -> Server:
    """Starts nats-server with JetStream on the port given, or on one it picks itself when none is.

    With `authorization` (an `authorization { users: [...] }` block, see linli/permissions.py) every
    client must sign in as one of its users and may do only what that user may; without, anyone may do
    anything, as the tests of a single service want."""
    store = data_dir / "nats"
    store.mkdir(parents=True, exist_ok=True)
    # Without sync_interval: always, a message JetStream has acknowledged can still sit in the server's
    # own write buffer for a few milliseconds: a SIGKILLed server loses it, and the publisher, holding
    # the ack, has already dropped it from its outbox. Only a configuration file can set it.
    config = data_dir / "nats-server.conf"
    config.touch(mode=0o600, exist_ok=True)
    config.chmod(0o600)  # it may hold every user's password
    config.write_text(f"jetstream {{\n  store_dir: {json.dumps(str(store))}\n  sync_interval: always\n}}\n"
                      + authorization)
    with (data_dir / "nats-server.log").open("ab") as log:
        process = subprocess.Popen(
            [tool("nats-server"), "-c", str(config), "-js", "-a", "127.0.0.1", "-p", str(port or -1),
             "--ports_file_dir", str(data_dir)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    ports_file = data_dir / f"nats-server_{process.pid}.ports"

    def reported() -> int | None:
        try:  # {"nats": ["nats://127.0.0.1:4222"]}, written once the server listens
            return int(json.loads(ports_file.read_text())["nats"][0].rsplit(":", 1)[1])
        except (OSError, ValueError, KeyError, IndexError):  # not written yet, or half written
            return None

    port = _started(process, reported, "nats-server", ports_file)
    return Server("nats-server", f"nats://127.0.0.1:{port}", port, process)


def start_mongo(data_dir: Path, port: int | None = None) -> Server:
    """Starts nx-27017 on the port given, or on one it picks itself when none is."""
    store = data_dir / "mongo"
    store.mkdir(parents=True, exist_ok=True)
    output = data_dir / "nx-27017.out"
    with output.open("ab") as log:
        earlier = log.tell()  # the file keeps what servers started before this one printed
        process = subprocess.Popen(
            [
                tool("nx-27017"),
                "--data-dir", str(store),
                "--host", "127.0.0.1",
                "-p", str(port or 0),
                "--log-file", str(data_dir / "nx-27017.log"),
                "--pid-file", str(data_dir / "nx-27017.pid"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    announcement = re.compile(rf"\[{process.pid}\] - Listening on [0-9.]+:(\d+)".encode())

    def reported() -> int | None:
        with output.open("rb") as printed:
            printed.seek(earlier)
            found = announcement.search(printed.read())
        return int(found[1]) if found else None

    port = _started(process, reported, "nx-27017", output)
    return Server("nx-27017", f"mongodb://127.0.0.1:{port}", port, process)


def _started(
    process: subprocess.Popen[bytes], reported: Callable[[], int | None], what: str, report: Path
) -> int:
    try:
        return wait_for_own_port(reported, process, what, report)
    except BaseException:
        if process.poll() is None:
            process.kill()
            process.wait()
        raise
