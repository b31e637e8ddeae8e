"""The whole system on one machine: servers (unless URLs are given) and the services as processes.

Started with supervise=True, a process or server that exits is started again, after a delay that grows
while it keeps failing; a server comes back on the port it had, with the data it had."""

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path

from linli.embedded import Server, start_mongo, start_nats
from linli.permissions import ADMIN, authorization, ensure_credentials, url_with
from linli.show import local_time

SERVICES = ("identity", "intake", "matcher", "notifier", "ledger", "care", "feed")
# Processes that answer no call on the bus but are part of the system: the web's pages.
FRONTS = ("web",)
FIRST_DELAY, LONGEST_DELAY = 0.5, 10.0
# A process that stayed up this long was healthy: its next failure is a new story, not a crash loop.
STEADY = 30.0
STARTERS: dict[str, Callable[..., Server]] = {"nats-server": start_nats, "nx-27017": start_mongo}


@dataclass
class Restart:
    what: str
    pid: int
    code: int
    exited_at: float
    delay: float


@dataclass
class Backoff:
    delay: float = FIRST_DELAY
    started: float = field(default_factory=time.monotonic)
    due: float | None = None

    def after_exit(self) -> float:
        if time.monotonic() - self.started > STEADY:
            self.delay = FIRST_DELAY
        delay, self.delay = self.delay, min(self.delay * 2, LONGEST_DELAY)
        self.due = time.monotonic() + delay
        return delay


def exit_code_text(code: int) -> str:
    if code < 0:
        try:
            return f"{code} ({signal.Signals(-code).name})"
        except ValueError:
            pass
    return str(code)


def announce_on_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def stop_orphaned_servers(data_dir: Path, announce: Callable[[str], None]) -> None:
    """Servers an earlier run on this folder left behind when it died; two servers on one store would
    corrupt it. Each is recognised by the pid it wrote down and this folder on its command line."""
    pids = [path.name.removeprefix("nats-server_").removesuffix(".ports") for path in data_dir.glob("nats-server_*.ports")]
    if (data_dir / "nx-27017.pid").exists():
        pids.append((data_dir / "nx-27017.pid").read_text().strip())
    for pid in (int(p) for p in pids if p.isdigit()):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone, or no /proc to tell whose it is
        if f"{data_dir}/" not in command:
            continue
        announce(f"stopping {command.split()[0].rsplit('/', 1)[-1]} (pid {pid}), left running on {data_dir}/ "
                 "by an earlier run that died")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)


@dataclass
class System:
    data_dir: Path
    nats_url: str
    mongo_url: str
    servers: list[Server] = field(default_factory=list)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    announce: Callable[[str], None] = announce_on_stderr
    restarts: list[Restart] = field(default_factory=list)
    _backoff: dict[str, Backoff] = field(default_factory=dict)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _supervisor: threading.Thread | None = None
    _lock: threading.RLock = field(default_factory=threading.RLock)
    # Secure: every user's password (linli/permissions.py), the server's address without one, and the
    # authorization block a restarted server is given again.
    passwords: dict[str, str] = field(default_factory=dict)
    server_url: str = ""
    authorization: str = ""

    @classmethod
    def start(
        cls,
        data_dir: Path,
        nats_url: str | None = None,
        mongo_url: str | None = None,
        replicas: dict[str, int] | None = None,
        env: dict[str, str] | None = None,
        supervise: bool = False,
        announce: Callable[[str], None] = announce_on_stderr,
        secure: bool = True,
        web_port: int = 0,
    ) -> "System":
        """secure: the NATS server it starts admits only the users of linli/permissions.py, with
        passwords kept in <data_dir>/credentials/; each service connects as itself, and `nats_url` is
        the administrator's. A server given by URL is used as it is. web_port: where the pages are served;
        0 for any free port (`web_url` says which)."""
        data_dir.mkdir(parents=True, exist_ok=True)
        stop_orphaned_servers(data_dir, announce)
        servers = []
        passwords = ensure_credentials(data_dir) if secure and not nats_url else {}
        rules = authorization(passwords) if passwords else ""
        try:
            if not nats_url:
                servers.append(start_nats(data_dir, authorization=rules))
                nats_url = servers[-1].url
            if not mongo_url:
                servers.append(start_mongo(data_dir))
                mongo_url = servers[-1].url
            server_url = nats_url
            if passwords:
                nats_url = url_with(server_url, ADMIN, passwords[ADMIN])
            system = cls(data_dir, nats_url, mongo_url, servers, env={"LINLI_WEB_PORT": str(web_port), **(env or {})},
                         announce=announce,
                         passwords=passwords, server_url=server_url, authorization=rules)
        except BaseException:
            for server in servers:
                server.stop()
            raise
        try:
            # No password here: a command finds the administrator's in credentials/ (linli/client.py).
            (data_dir / "urls.env").write_text(f"NATS_URL={server_url}\nMONGO_URL={mongo_url}\n")
            for name in (*SERVICES, *FRONTS):
                for n in range((replicas or {}).get(name, 1)):
                    system.spawn(name, n)
            system.wait_ready()
            if system.web_url:
                with open(data_dir / "urls.env", "a") as urls:
                    urls.write(f"WEB_URL={system.web_url}\n")
            if supervise:
                system.supervise()
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
            "NATS_URL": self.url_for(name),
            "MONGO_URL": self.mongo_url,
            "PYTHONUNBUFFERED": "1",
            "LINLI_INSTANCE": key,
            "LINLI_PARENT_PID": str(os.getpid()),
            **self.env,
            "LINLI_READY_FILE": str(self.ready_file(key)),
            "LINLI_WEB_URL_FILE": str(logs / f"{key}.url"),
        }
        with open(logs / f"{key}.log", "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", f"services.{name}"], env=env, stdout=log, stderr=subprocess.STDOUT,
                cwd=Path(__file__).resolve().parent.parent,
            )
        with self._lock:
            self.processes[key] = process
            self._backoff.setdefault(key, Backoff()).started = time.monotonic()
        return process

    def url_for(self, user: str) -> str:
        """The NATS URL a process connects with as `user`: the service of that name, or a caller such as
        "kiosk" or "district". Without security, everyone's is the one URL."""
        if not self.passwords:
            return self.nats_url
        return url_with(self.server_url, user, self.passwords[user])

    @property
    def web_url(self) -> str:
        """Where the web's pages are served (http://127.0.0.1:<port>), once it is ready; "" without one."""
        path = self.data_dir / "logs" / "web-0.url"
        return path.read_text().strip() if "web-0" in self.processes and path.exists() else ""

    def ready_file(self, key: str) -> Path:
        return self.data_dir / "logs" / f"{key}.ready"

    def ready_pid(self, key: str) -> int | None:
        """The pid of the process that last said it was ready under this key, if it is the current one."""
        try:
            pid = int(self.ready_file(key).read_text())
        except (OSError, ValueError):
            return None
        return pid if pid == self.processes[key].pid else None

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

    def server(self, name: str) -> Server:
        return next(server for server in self.servers if server.name == name)

    def kill(self, key: str) -> None:
        """SIGKILLs a service process (by key, as `matcher-1`) or an embedded server (by name)."""
        with self._lock:
            process = self.processes[key] if key in self.processes else self.server(key).process
        process.kill()
        process.wait()

    def supervise(self, every: float = 0.1) -> None:
        """From now on, whatever exits is started again, until stop()."""
        self._supervisor = threading.Thread(target=self._watch, args=(every,), name="supervisor", daemon=True)
        self._supervisor.start()

    def _watch(self, every: float) -> None:
        while not self._stopping.wait(every):
            for server in list(self.servers):
                self._revive(server.name, server.process, partial(self._restart_server, server))
            for key, process in list(self.processes.items()):
                name, n = key.rsplit("-", 1)
                self._revive(key, process, partial(self.spawn, name, int(n)))

    def _revive(self, what: str, process: subprocess.Popen[bytes], restart: Callable[[], object]) -> None:
        code = process.poll()
        if code is None:
            return
        backoff = self._backoff.setdefault(what, Backoff())
        if backoff.due is None:
            delay = backoff.after_exit()
            self.restarts.append(Restart(what, process.pid, code, time.time(), delay))
            self.announce(
                f"{local_time(datetime.now().astimezone())} {what} (pid {process.pid}) exited with code "
                f"{exit_code_text(code)}; starting it again in {delay:.1f} s"
            )
        if time.monotonic() < (backoff.due or 0) or self._stopping.is_set():
            return
        try:
            with self._lock:
                if self._stopping.is_set():
                    return
                restart()
            backoff.due = None
        except Exception as exc:  # e.g. the port not yet free: try again, later each time
            delay = backoff.after_exit()
            self.announce(f"{what} did not start again ({exc}); trying again in {delay:.1f} s")

    def _restart_server(self, old: Server) -> None:
        # The same port, so every service's reconnect finds it; the same data dir, so nothing is lost.
        (self.data_dir / f"{old.name}_{old.process.pid}.ports").unlink(missing_ok=True)  # a killed one leaves it
        options = {"authorization": self.authorization} if old.name == "nats-server" else {}
        new = STARTERS[old.name](self.data_dir, port=old.port, **options)
        self.servers[self.servers.index(old)] = new
        self._backoff.setdefault(old.name, Backoff()).started = time.monotonic()

    def stop_restarting(self) -> None:
        """Ctrl-C reaches the services as well as `linli up`: what exits from now on stays down."""
        self._stopping.set()

    def stop(self, timeout: float = 15.0) -> None:
        self._stopping.set()
        if self._supervisor:
            self._supervisor.join()
        with self._lock:
            processes = list(self.processes.values())
        for process in processes:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + timeout
        for process in processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for server in reversed(self.servers):
            server.stop()
