"""The embedded servers listen on ports they picked themselves, and say so when they cannot listen."""

import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from linli.embedded import Server, listening, start_mongo, start_nats, wait_for_own_port

pytestmark = pytest.mark.service

STARTERS = pytest.mark.parametrize("start", [start_nats, start_mongo], ids=["nats-server", "nx-27017"])


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another program is listening on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


@STARTERS
def test_two_servers_without_a_port_each_listen_on_the_port_they_report(
    tmp_path: Path, start: Callable[[Path], Server]
) -> None:
    first = start(tmp_path / "one")
    second = start(tmp_path / "two")
    try:
        assert first.port != second.port
        assert first.url.endswith(f":{first.port}") and listening(first.port) and listening(second.port)
    finally:
        first.stop()
        second.stop()
    assert not listening(first.port)


@STARTERS
def test_a_port_held_by_another_program_is_not_mistaken_for_the_server(
    tmp_path: Path, taken_port: int, start: Callable[..., Server]
) -> None:
    with pytest.raises(RuntimeError, match=r"exited with code \d+ before it listened"):
        start(tmp_path, port=taken_port)


def test_a_bound_port_nobody_listens_on_is_not_a_server() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        assert not listening(int(sock.getsockname()[1]))


def test_a_server_that_never_names_its_port_is_a_clear_error(tmp_path: Path) -> None:
    silent = subprocess.Popen(["sleep", "30"])
    try:
        with pytest.raises(RuntimeError, match="did not report a port it listens on within 1 s"):
            wait_for_own_port(lambda: None, silent, "silent", tmp_path / "silent.out", timeout=1)
    finally:
        silent.kill()
        silent.wait()
