"""Real processes for tests: a strato server and the openstack CLI."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def strato(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "strato"), *args], capture_output=True, text=True,
                          check=check, **kw)


def terminate(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM a process we started and wait for it; SIGKILL when it does not go in
    ``timeout`` seconds.  Nothing when it has already exited."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class Server:
    """A `strato serve` process on its own state directory and port."""

    state: Path
    port: int
    password: str = "admin-secret"
    extra_conf: dict[str, dict[str, str]] = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def conf(self) -> Path:
        return self.state / "strato.conf"

    @property
    def clouds(self) -> Path:
        return self.state / "clouds.yaml"

    @property
    def log(self) -> Path:
        return self.state / "server.log"

    @property
    def network_conf(self) -> dict[str, str]:
        """The ``[network]`` options this server runs with: the user-mode data plane and
        no public network unless the test asks (so the many tests that do not need
        networking never build namespaces, nor race for one range)."""
        return {"dataplane": "usermode", "public_cidr": "",
                **self.extra_conf.get("network", {})}

    @property
    def linux_dataplane(self) -> bool:
        return self.network_conf["dataplane"] != "usermode"

    def setup(self) -> None:
        strato("init", "--state-path", str(self.state), "--port", str(self.port))
        text = self.conf.read_text()
        sections = {**self.extra_conf, "network": self.network_conf}
        for section, values in sections.items():
            lines = "".join(f"{k} = {v}\n" for k, v in values.items())
            text = text.replace(f"[{section}]\n", f"[{section}]\n{lines}", 1)
        self.conf.write_text(text)
        strato("db", "upgrade", "--config", str(self.conf))
        strato("bootstrap", "--config", str(self.conf), "--bootstrap-password", self.password,
               "--clouds-yaml", str(self.clouds))

    def start(self, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [str(BIN / "strato"), "serve", "--config", str(self.conf), *extra],
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"strato serve exited: {self.log.read_text()}")
            try:
                httpx.get(f"{self.url}/identity/v3", timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("strato serve did not come up in 30 s")

    def stop(self, teardown: bool = True) -> int | None:
        """SIGTERM (SIGKILL after 30 s); then, for a server on the Linux data plane,
        ``strato network teardown`` once the process is gone, so a test run leaves no
        namespace, device, rule or dnsmasq behind (``teardown=False``: a restart test
        that wants the guests' networking to outlive the process)."""
        if self.proc:
            terminate(self.proc)
        if teardown:
            self.network_teardown()
        return self.proc.returncode if self.proc else None

    def network_teardown(self) -> None:
        """Guests first (an open tap keeps its namespace alive), then everything the
        data plane made."""
        if self.linux_dataplane and self.conf.exists():
            self.destroy_guests()
            done = strato("network", "teardown", "--config", str(self.conf), check=False,
                          timeout=120)
            if done.returncode != 0:
                raise RuntimeError(f"strato network teardown failed ({done.returncode}):"
                                   f"\n{done.stdout}{done.stderr}")

    def destroy_guests(self) -> None:
        """Every guest of this server's state: QEMU outlives ``strato serve`` by
        design, so whoever ends a server for good stops its guests."""
        from strato.virt.qemu import QemuDriver

        drv = QemuDriver(self.state / "instances")
        for sid in drv.list_instances():
            drv.destroy(sid)

    # ------------------------------------------------------------ clients
    def token(self, user: str = "admin", password: str | None = None,
              project: str | None = "admin") -> str:
        body: dict = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"id": "default"},
            "password": password or self.password}}}}}
        if project:
            body["auth"]["scope"] = {"project": {"name": project, "domain": {"id": "default"}}}
        r = httpx.post(f"{self.url}/identity/v3/auth/tokens", json=body)
        assert r.status_code == 201, r.text
        return r.headers["X-Subject-Token"]

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"X-Auth-Token": token} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def openstack(self, *args: str, cloud: str = "strato", check: bool = True,
                  env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run the real CLI against this server."""
        full_env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(self.clouds), **(env or {})}
        for var in [k for k in full_env if k.startswith("OS_") and k != "OS_CLIENT_CONFIG_FILE"]:
            full_env.pop(var)
        full_env.update(env or {})
        # tests/osc.py: the real client, polling --wait every 0.5 s instead of 5 s
        proc = subprocess.run([sys.executable, str(ROOT / "tests" / "osc.py"),
                               "--os-cloud", cloud, *args],
                              capture_output=True, text=True, env=full_env, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"openstack {' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def openstack_json(self, *args: str, **kw) -> object:
        return json.loads(self.openstack(*args, "-f", "json", **kw).stdout)
