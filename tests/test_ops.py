"""Operations: Ctrl-C on `strato serve`, `strato config check`, the apt/dpkg lock wait."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from strato.virt.qemu.process import accel, accel_args, choose_accel
from tests.support import ROOT, Server, free_port, strato


def test_ctrl_c_stops_serve_cleanly_without_a_traceback(tmp_path: Path) -> None:
    srv = Server(tmp_path, free_port())
    srv.setup()
    srv.start()
    srv.proc.send_signal(signal.SIGINT)  # what Ctrl-C on `make run` sends
    assert srv.proc.wait(30) == 0
    log = srv.log.read_text()  # the server's stdout and stderr
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log
    assert "stopping job workers after their current step" in log and "stopped" in log
    # The accelerator is logged with its reason at startup (the rule: test_accel_*).
    assert f"guests run under {accel().name}: {accel().reason}" in log


def test_config_check_names_the_file_it_checked(tmp_path: Path) -> None:
    strato("init", "--state-path", str(tmp_path))
    conf = tmp_path / "strato.conf"
    out = strato("config", "check", "--config", str(conf)).stdout
    assert str(conf) in out and "valid" in out

    env = {**os.environ, "STRATO_CONFIG": str(conf)}
    out = strato("config", "check", env=env).stdout
    assert str(conf) in out and "$STRATO_CONFIG" in out

    env.pop("STRATO_CONFIG")
    out = strato("config", "check", env=env).stdout
    assert "no configuration file" in out and "defaults" in out

    env["STRATO_CONFIG"] = str(tmp_path / "missing.conf")
    proc = strato("config", "check", env=env, check=False)
    assert proc.returncode == 2 and "missing.conf" in proc.stderr


WAIT_LOCK = ROOT / "scripts" / "wait-apt-lock.sh"


def _wait_lock(lock: Path, timeout: int) -> tuple[subprocess.Popen, float]:
    env = {**os.environ, "STRATO_APT_LOCKS": str(lock),
           "STRATO_APT_LOCK_TIMEOUT": str(timeout)}
    return subprocess.Popen([str(WAIT_LOCK)], env=env, stderr=subprocess.PIPE,
                            text=True), time.monotonic()


def test_setup_waits_for_an_apt_lock_held_with_flock_then_proceeds(tmp_path: Path) -> None:
    """setup.sh's wait for the dpkg lock: a holder (flock(1), as a script would hold it)
    for 3 s delays it by about that much; then it proceeds.  Nothing is installed."""
    lock = tmp_path / "lock-frontend"
    lock.touch()
    holder = subprocess.Popen(["flock", str(lock), "sleep", "3"])
    try:
        deadline = time.monotonic() + 5
        while f"FLOCK  ADVISORY  WRITE {holder.pid} " not in Path("/proc/locks").read_text():
            assert time.monotonic() < deadline, "flock never took the lock"
            time.sleep(0.05)
        waiter, started = _wait_lock(lock, timeout=60)
        _, err = waiter.communicate(timeout=30)
        took = time.monotonic() - started
        holder_done = holder.poll() is not None
    finally:
        holder.wait(10)
    assert waiter.returncode == 0, err
    assert holder_done and took >= 0.5, f"did not wait for the holder ({took:.1f} s)"
    assert f"waiting up to 60 s for pid {holder.pid}" in err and str(lock) in err
    assert "lock is free" in err


def test_setup_gives_up_on_an_apt_lock_after_its_timeout(tmp_path: Path) -> None:
    """A POSIX (fcntl) lock, the kind apt and dpkg take, held past the timeout: a clear
    message naming the holder, exit 1."""
    lock = tmp_path / "lock"
    lock.touch()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, sys, time\n"
        f"fh = open({str(lock)!r}, 'w')\n"
        "fcntl.lockf(fh, fcntl.LOCK_EX)\n"
        "print('held', flush=True)\n"
        "time.sleep(30)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with open(lock, "w") as fh:  # really held: taking it fails
            try:
                fcntl.lockf(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                raise AssertionError("the lock was not held")
            except OSError:
                pass
        waiter, started = _wait_lock(lock, timeout=2)
        _, err = waiter.communicate(timeout=30)
        took = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait()
    assert waiter.returncode == 1
    assert 2 <= took < 30  # it waited its whole timeout, and not much more
    assert f"gave up after 2 s: pid {holder.pid}" in err and str(lock) in err
    assert "STRATO_APT_LOCK_TIMEOUT" in err


def test_setup_does_not_wait_for_a_free_apt_lock(tmp_path: Path) -> None:
    lock = tmp_path / "lock"
    lock.touch()
    waiter, started = _wait_lock(lock, timeout=60)
    _, err = waiter.communicate(timeout=30)
    assert waiter.returncode == 0 and err == ""
    assert time.monotonic() - started < 2


def test_accel_is_kvm_only_with_a_hardware_module_and_a_dev_kvm_that_opens(
        tmp_path: Path) -> None:
    modules, dev = tmp_path / "module", tmp_path / "kvm"
    (modules / "kvm").mkdir(parents=True)
    (modules / "kvm_pvm").mkdir()  # a software virtualiser: /dev/kvm, but no vmx/svm
    dev.touch()
    choice = choose_accel(modules, dev)
    assert not choice.kvm and choice.name == "TCG"
    assert "kvm_intel" in choice.reason and "kvm_pvm" in choice.reason

    (modules / "kvm_amd").mkdir()
    dev.unlink()
    choice = choose_accel(modules, dev)
    assert not choice.kvm and f"{dev} does not open" in choice.reason

    dev.touch()
    choice = choose_accel(modules, dev)
    assert choice.kvm and choice.name == "KVM" and "kvm_amd is loaded" in choice.reason

    (modules / "kvm_amd").rmdir()
    (modules / "kvm_intel").mkdir()
    assert choose_accel(modules, dev).kvm


def test_accel_args_follow_the_choice_on_this_machine() -> None:
    args = accel_args()
    assert ("-accel" in args) and (("kvm" in args) == accel().kvm)
    if not accel().kvm:
        assert args[args.index("-accel") + 1].startswith("tcg,thread=multi")


def test_upload_cut_off_by_the_client_puts_the_image_back_to_queued(tmp_path: Path) -> None:
    """The upload reads the body straight from ASGI ``receive``: a client that goes away
    halfway is seen (http.disconnect), its partial data removed, the image ``queued``
    again; a full upload afterwards works."""
    import socket

    srv = Server(tmp_path, free_port())
    srv.setup()
    srv.start()
    try:
        token = srv.token()
        with srv.client(token) as c:
            image = c.post("/image/v2/images", json={
                "name": "cut", "disk_format": "raw", "container_format": "bare"}).json()
            path = f"/image/v2/images/{image['id']}/file"
            sock = socket.create_connection(("127.0.0.1", srv.port))
            sock.sendall((f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Auth-Token: {token}\r\n"
                          "Content-Type: application/octet-stream\r\n"
                          f"Content-Length: {32 << 20}\r\n\r\n").encode())
            sock.sendall(os.urandom(10 << 20))
            deadline = time.monotonic() + 30
            while c.get(f"/image/v2/images/{image['id']}").json()["status"] != "saving":
                assert time.monotonic() < deadline, "the upload never started"
                time.sleep(0.05)
            sock.close()
            while (status := c.get(f"/image/v2/images/{image['id']}").json()["status"]) \
                    != "queued":
                assert time.monotonic() < deadline, f"still {status}"
                time.sleep(0.05)
            data = os.urandom(9 << 20) + b"end"
            r = c.put(path, content=data, headers={"Content-Type": "application/octet-stream"})
            assert r.status_code == 204, r.text
            assert c.get(path).content == data
    finally:
        srv.stop()

