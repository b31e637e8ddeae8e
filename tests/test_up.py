"""`linli up` is safe to run every morning: the demo seeds an empty folder only, a second one in the same
folder is refused, and a command that finds no system says so in one line."""

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from linli.demo import LOCK, running_pid
from linli.show import local_time

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
    assert len(logs) == 5  # intake, two matchers, notifier, ledger
    for name, text in logs.items():
        assert "ERROR" not in text and "Traceback" not in text, f"{name}:\n{text[-3000:]}"
