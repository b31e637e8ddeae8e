"""`linli up` is safe to run every morning: the demo seeds an empty folder only, a second one in the same
folder is refused, and a command that finds no system says so in one line."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from linli.system import FRONTS, SERVICES

from linli.demo import LOCK, running_pid
from linli.show import local_time
from linli.system import stop_orphaned_servers

ROOT = Path(__file__).resolve().parent.parent


def linli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "MONGO_URL", "LINLI_HOME")}
    return subprocess.run([sys.executable, "-m", "linli", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env={**env, "LINLI_DEMO_PAUSE": "0", "COLUMNS": "200"})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.domain
def test_times_are_shown_in_the_districts_time_zone() -> None:
    assert local_time("2026-12-01T23:05:00Z") == "07:05:00"
    assert local_time("2026-12-01T23:05:00+00:00") == "07:05:00"


@pytest.mark.domain
def test_a_pid_file_left_by_a_process_that_ended_is_not_a_running_linli_up(tmp_path: Path) -> None:
    ended = subprocess.Popen(["true"])
    ended.wait()
    (tmp_path / LOCK).write_text(f"{ended.pid}\n")
    assert running_pid(tmp_path) is None
    (tmp_path / LOCK).write_text("not a pid\n")
    assert running_pid(tmp_path) is None


@pytest.mark.domain
def test_a_second_linli_up_in_the_same_folder_says_in_one_line_that_one_is_running(tmp_path: Path) -> None:
    (tmp_path / LOCK).write_text(f"{os.getpid()}\n")  # this test's own process stands for the first one

    second = linli("up", "--data", str(tmp_path), "--once")

    assert second.returncode == 1
    assert second.stderr.strip() == (
        f"linli up is already running in {tmp_path}/ (pid {os.getpid()}); stop it first, or give another "
        "folder with --data"
    )
    assert not (tmp_path / "urls.env").exists(), "nothing was started"


@pytest.mark.domain
@pytest.mark.parametrize("args", [("status", "R"), ("ledger", "review"), ("health", "intake"), ("tail",)])
def test_a_command_that_finds_no_system_says_where_it_looked_in_one_line(tmp_path: Path, args: tuple[str]) -> None:
    (tmp_path / "urls.env").write_text(f"NATS_URL=nats://127.0.0.1:{free_port()}\n")

    found = linli(*args, "--data", str(tmp_path), timeout=60)

    assert found.returncode == 2, found
    assert "Traceback" not in found.stderr and len(found.stderr.strip().splitlines()) == 1, found.stderr
    assert str(tmp_path / "urls.env") in found.stderr and "--data" in found.stderr and "NATS_URL" in found.stderr


@pytest.fixture(scope="module")
def mornings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[str]]]:
    data = tmp_path_factory.mktemp("up") / "linli"
    outputs = []
    for _ in range(2):
        run = linli("up", "--once", "--data", str(data))
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        outputs.append(run.stdout)
    yield data, outputs


@pytest.mark.system
def test_the_demo_is_played_into_an_empty_folder_only(mornings: tuple[Path, list[str]]) -> None:
    data, (first, second) = mornings
    assert "volunteers sign up" in first and "already holds data" not in first
    assert "volunteers sign up" not in second
    assert f"{data}/ already holds data, so the demo is not played into it" in second
    assert not (data / LOCK).exists(), "the pid file goes when linli up ends"


@pytest.mark.system
def test_normal_operation_writes_no_error_or_traceback_to_the_service_logs(
    mornings: tuple[Path, list[str]]
) -> None:
    logs = {path.name: path.read_text(errors="replace") for path in (mornings[0] / "logs").glob("*.log")}
    assert len(logs) == len(SERVICES) + len(FRONTS) + 1  # every service, the web, and a second matcher
    for name, text in logs.items():
        assert "ERROR" not in text and "Traceback" not in text, f"{name}:\n{text[-3000:]}"


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.system
def test_what_a_killed_linli_up_leaves_behind_stops_and_the_next_one_starts_cleanly(tmp_path: Path) -> None:
    data = tmp_path / "linli"
    env = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "MONGO_URL", "LINLI_HOME")}
    first = subprocess.Popen([sys.executable, "-m", "linli", "up", "--no-demo", "--data", str(data)], cwd=ROOT,
                             env={**env, "COLUMNS": "200"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while len(list((data / "logs").glob("*.ready"))) < len(SERVICES) + 1:
            assert time.monotonic() < deadline and first.poll() is None, "the first linli up did not start"
            time.sleep(0.2)
        services = [int(path.read_text()) for path in (data / "logs").glob("*.ready")]
        first.kill()  # as a closed terminal or the OOM killer would: no chance to stop anything
        first.wait()

        deadline = time.monotonic() + 30
        while any(alive(pid) for pid in services):
            assert time.monotonic() < deadline, "a service outlived the linli up that started it"
            time.sleep(0.2)
        servers = [int((data / "nx-27017.pid").read_text())] + [
            int(path.stem.removeprefix("nats-server_")) for path in data.glob("nats-server_*.ports")]
        assert all(alive(pid) for pid in servers)  # servers run in their own session and are left behind

        second = linli("up", "--once", "--no-demo", "--data", str(data))

        assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
        assert "left running on" in second.stdout and not any(alive(pid) for pid in servers)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        stop_orphaned_servers(data, announce=lambda line: None)  # whatever a failed run left
