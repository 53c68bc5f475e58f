"""Run Tempest against a fresh strato server and summarize the result per module.

    python -m conformance.run [--regex R] [--concurrency N] [--workdir D] [--list]

Tempest (pinned below) is installed into its own venv (``$TEMPEST_VENV`` or
``<workdir>/venv``), a strato server is set up from this tree on a free loopback port,
``tempest.conf`` says honestly what strato has (``conformance/tempest_conf.py``), and the
summary is saved as JSON lines like the benches: ``conformance/results/latest.json``
(totals and one line per module) and ``conformance/results/tests.json`` (every test with
its status and, for skips and failures, the reason).
"""

from __future__ import annotations

import argparse
import collections
import functools
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from conformance.tempest_conf import render
from tests.support import ROOT, Server, free_port, strato

TEMPEST = "tempest==47.0.0"
#: Tempest's API tests of the four services this issue covers, and its scenario tests
#: (those needing SSH or a network service skip themselves from the configuration).
DEFAULT_REGEX = (r"^tempest\.(api\.(compute|image|volume|identity)|scenario)\.")
RESULTS = ROOT / "conformance" / "results"


def _workdir(arg: str | None) -> Path:
    if arg:
        return Path(arg).resolve()
    tag = hashlib.sha256(str(ROOT).encode()).hexdigest()[:6]
    return Path(f"/var/tmp/strato-conformance-{tag}")


def ensure_tempest(venv: Path) -> Path:
    """The venv's ``tempest`` command, installing Tempest from PyPI when missing."""
    tempest = venv / "bin" / "tempest"
    if not tempest.exists():
        subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", TEMPEST], check=True)
    return tempest


def _max_version(server: Server, path: str) -> str:
    """The newest microversion of a service's version document (one or a list)."""
    body = httpx.get(f"{server.url}{path}", timeout=10).json()
    doc = body["version"] if "version" in body else body["versions"][0]
    return doc["version"]


def serve_images(work: Path) -> str:
    """A loopback HTTP server (a thread of this run) with a small qcow2 image: what
    Tempest's web-download imports (``image.http_qcow2_image``) instead of its default
    URL on the internet, which a test run never contacts."""
    root = work / "web"
    root.mkdir(parents=True, exist_ok=True)
    disk = root / "disk.qcow2"
    if not disk.exists():
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"],
                       check=True)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(root)))
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{httpd.server_address[1]}/disk.qcow2"


def start_server(work: Path) -> tuple[Server, dict[str, str]]:
    """A strato server on its own state directory with the tiny guest registered."""
    state = work / "state"
    if state.exists():
        shutil.rmtree(state)
    state.mkdir(parents=True)
    web = serve_images(work)
    # the user-mode data plane (no network service in this run), with `make run`'s
    # external network record, as a deployment has one (Nova's os-networks lists it);
    # web-download may fetch from this run's loopback image server only
    server = Server(state, free_port(), password="conformance-admin",
                    extra_conf={"network": {"public_cidr": "198.18.0.0/24"},
                                # two backends: Tempest's multi-backend and retype
                                # with migration tests (tempest_conf backend_names)
                                "volume": {"enabled_backends":
                                           "strato-local:volumes,strato-local-2:volumes2"},
                                "import_filtering_opts": {
                                    "allowed_hosts": "127.0.0.1",
                                    "allowed_ports": web.split(":")[2].split("/")[0]}})
    server.setup()
    out = strato("guest", "--config", str(server.conf), timeout=900).stdout
    image = out.strip().rsplit(" ", 1)[-1]
    server.start()
    try:
        facts = {"image_ref": image, "http_image": web,
                 "compute_max": _max_version(server, "/compute/v2.1"),
                 "volume_max": _max_version(server, "/volume/v3")}
    except Exception:
        server.stop()
        raise
    return server, facts


def run_tempest(tempest: Path, work: Path, server: Server, facts: dict[str, str],
                regex: str, concurrency: int, list_only: bool) -> list[dict]:
    ws = work / "workspace"
    for old in (ws, work / ".tempest"):  # .tempest: Tempest's registry of workspaces
        if old.exists():
            shutil.rmtree(old)
    subprocess.run([str(tempest), "init", "--name", f"strato-{work.name}", str(ws)],
                   check=True, capture_output=True,
                   env={**os.environ, "HOME": str(work)})
    (ws / "etc" / "tempest.conf").write_text(render(server, facts, work))
    env = {**os.environ, "HOME": str(work)}
    env = {k: v for k, v in env.items() if not k.startswith("OS_")}
    if list_only:
        subprocess.run([str(tempest), "run", "--list-tests", "--regex", regex], cwd=ws,
                       env=env, check=True)
        return []
    raw = ws / "results.subunit"
    with raw.open("wb") as fh:
        subprocess.run([str(tempest), "run", "--subunit", "--concurrency", str(concurrency),
                        "--regex", regex], cwd=ws, env=env, stdout=fh)
    summary = subprocess.run(
        [str(tempest.parent / "python"), str(ROOT / "conformance" / "subunit_summary.py")],
        stdin=raw.open("rb"), capture_output=True, text=True, check=True)
    return [json.loads(line) for line in summary.stdout.splitlines() if line.strip()]


def module_of(test_id: str) -> str:
    """``tempest.api.compute.servers.test_x.Class.test_y`` -> ``...servers.test_x``;
    a class-level failure ``setUpClass (tempest.api....Class)`` counts for its module."""
    if "(" in test_id:
        test_id = test_id.split("(", 1)[1].rstrip(")")
    parts = test_id.split(".")
    for i, part in enumerate(parts):
        if part[:1].isupper():
            return ".".join(parts[:i])
    return ".".join(parts[:-1])


def summarize(rows: list[dict], seconds: float) -> list[dict]:
    per: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for row in rows:
        status = {"success": "passed", "fail": "failed", "skip": "skipped"}.get(
            row["status"], row["status"])
        per[module_of(row["id"])][status] += 1
    total: collections.Counter = collections.Counter()
    for counts in per.values():
        total.update(counts)
    lines = [{"conformance": "tempest", "scope": "total", "passed": total["passed"],
              "failed": total["failed"], "skipped": total["skipped"],
              "seconds": round(seconds), "goal": "failed == 0"}]
    for module in sorted(per):
        c = per[module]
        lines.append({"conformance": "tempest", "scope": module, "passed": c["passed"],
                      "failed": c["failed"], "skipped": c["skipped"]})
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--regex", default=DEFAULT_REGEX)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--workdir")
    ap.add_argument("--list", action="store_true", help="list the selected tests only")
    ap.add_argument("--results", default=str(RESULTS),
                    help="where latest.json and tests.json go")
    args = ap.parse_args(argv)
    work = _workdir(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    tempest = ensure_tempest(Path(os.environ.get("TEMPEST_VENV") or work / "venv"))
    server, facts = start_server(work)
    started = time.monotonic()
    try:
        rows = run_tempest(tempest, work, server, facts, args.regex, args.concurrency,
                           args.list)
    finally:
        server.stop()
        server.destroy_guests()  # the guests Tempest left (a failed cleanup, a ^C)
    if args.list:
        return 0
    lines = summarize(rows, time.monotonic() - started)
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (out / "tests.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for line in lines[1:]:
        print(f"{line['scope']:70} {line['passed']:4} passed {line['failed']:4} failed "
              f"{line['skipped']:4} skipped")
    t = lines[0]
    print(f"TOTAL {t['passed']} passed, {t['failed']} failed, {t['skipped']} skipped "
          f"in {t['seconds']} s; per test: {out / 'tests.json'}")
    return 0 if t["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
