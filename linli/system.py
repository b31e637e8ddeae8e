"""The whole system on one machine: servers (unless URLs are given) and the services as processes."""

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from linli.embedded import Server, start_mongo, start_nats

SERVICES = ("intake", "matcher", "notifier", "ledger", "care")


@dataclass
class System:
    data_dir: Path
    nats_url: str
    mongo_url: str
    servers: list[Server] = field(default_factory=list)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def start(
        cls,
        data_dir: Path,
        nats_url: str | None = None,
        mongo_url: str | None = None,
        replicas: dict[str, int] | None = None,
        env: dict[str, str] | None = None,
    ) -> "System":
        data_dir.mkdir(parents=True, exist_ok=True)
        servers = []
        try:
            if not nats_url:
                servers.append(start_nats(data_dir))
                nats_url = servers[-1].url
            if not mongo_url:
                servers.append(start_mongo(data_dir))
                mongo_url = servers[-1].url
            system = cls(data_dir, nats_url, mongo_url, servers, env={**(env or {})})
        except BaseException:
            for server in servers:
                server.stop()
            raise
        try:
            (data_dir / "urls.env").write_text(f"NATS_URL={nats_url}\nMONGO_URL={mongo_url}\n")
            for name in SERVICES:
                for n in range((replicas or {}).get(name, 1)):
                    system.spawn(name, n)
            system.wait_ready()
            return system
        except BaseException:
            system.stop()  # whatever did start, services and servers alike
            raise

    def spawn(self, name: str, n: int = 0) -> subprocess.Popen[bytes]:
        key = f"{name}-{n}"
        logs = self.data_dir / "logs"
        logs.mkdir(exist_ok=True)
        self.ready_file(key).unlink(missing_ok=True)
        env = {
            **os.environ,
            "NATS_URL": self.nats_url,
            "MONGO_URL": self.mongo_url,
            "PYTHONUNBUFFERED": "1",
            **self.env,
            "LINLI_READY_FILE": str(self.ready_file(key)),
        }
        log = open(logs / f"{key}.log", "ab")
        process = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"], env=env, stdout=log, stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parent.parent,
        )
        self.processes[key] = process
        return process

    def ready_file(self, key: str) -> Path:
        return self.data_dir / "logs" / f"{key}.ready"

    def log_of(self, key: str) -> str:
        path = self.data_dir / "logs" / f"{key}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        pending = set(self.processes)
        while pending:
            for key in list(pending):
                process = self.processes[key]
                if process.poll() is not None:
                    raise RuntimeError(f"{key} exited with code {process.returncode}:\n{self.log_of(key)[-3000:]}")
                if self.ready_file(key).exists():
                    pending.discard(key)
            if time.monotonic() > deadline:
                raise RuntimeError(f"not ready after {timeout:.0f} s: {sorted(pending)}")
            time.sleep(0.1)

    def kill(self, key: str) -> None:
        self.processes[key].kill()
        self.processes[key].wait()

    def stop(self, timeout: float = 15.0) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + timeout
        for process in self.processes.values():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for server in reversed(self.servers):
            server.stop()
