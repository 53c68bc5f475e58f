"""Regenerate ``strato/api/reference_routes.py`` from the OpenStack API references.

Reads the ``.. rest_method::`` lines of each service's ``api-ref/source`` in local git
clones (nova, cinder, glance, keystone, neutron-lib) and writes the route table as data,
so the 501 router and the README's support matrix follow the references, not memory.
Run: ``python scripts/extract_reference_routes.py NOVA CINDER GLANCE KEYSTONE NEUTRON_LIB``
(each a git directory; HEAD is read).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

# (service, api-ref subfolders to read, prefix the reference paths start with)
SERVICES = (
    ("compute", ("api-ref/source/",), ""),
    ("volume", ("api-ref/source/v3/",), ""),
    ("image", ("api-ref/source/v2/",), ""),
    ("identity", ("api-ref/source/v3/", "api-ref/source/v3-ext/"), ""),
    ("networking", ("api-ref/source/v2/",), ""),
)
# Nova's "Obsolete APIs": removed, Nova answers 410 Gone.
NOVA_OBSOLETE = {
    "os-certificates", "os-cloudpipe", "os-fping", "os-virtual-interfaces", "os-fixed-ips",
    "os-floating-ips-bulk", "os-floating-ip-dns", "os-cells", "os-consoles",
    "os-security-group-default-rules", "os-agents", "servers-action-rdp-remote-consoles",
}
REST = re.compile(r"^\s*\.\.\s+rest_method::\s*(\w+)?\s*(\S+)?")
ARG = re.compile(r"^\s+(\w+)\s+(\S+)")
INCLUDE = re.compile(r"^\s*\.\.\s+literalinclude::\s+(\S+)")
SPECIFY = re.compile(r"``([\w:-]+)``\s+action")
HEADING = re.compile(r"\((\w[\w:-]*) Action\)")


def git(repo: str, *args: str) -> str:
    return subprocess.run(["git", "-C", repo, *args], check=True, capture_output=True,
                          text=True).stdout


def norm_path(service: str, path: str) -> str | None:
    path = path.split("?", 1)[0].rstrip().removeprefix("/identity").removesuffix(".json")
    if not path.startswith("/"):
        path = "/" + path
    path = re.sub(r"\{([^}]*)\}", lambda m: "{" + re.sub(r"\W", "_", m.group(1)) + "}", path)
    if path in ("/", "/{api_version}/") or path.endswith("/versions"):
        return None  # version discovery: served by every service's own router
    if service == "compute":
        return "/v2.1" + path
    if service == "volume":  # the reference misspells a few collection names
        path = path.replace("/snapshot/{", "/snapshots/{")
    if service == "volume" and path in ("/v3/", "/v3"):
        return None
    if service == "image" and not path.startswith("/v2"):
        return None
    if service == "networking" and not path.startswith("/v2.0"):
        return None
    return path.rstrip("/") or None


def action_name(repo: str, folder: str, block: list[str], heading: list[str]) -> str | None:
    """The action a section documents: its request sample's only key, else the
    ``X`` action named in the text, else the heading's "(X Action)"."""
    for line in block:
        m = INCLUDE.match(line)
        if m and m.group(1).endswith(".json") and "resp" not in m.group(1).rsplit("/")[-1]:
            target = str(Path(folder) / m.group(1))
            target = str(Path(target).resolve().relative_to(Path("/").resolve()))
            try:
                sample = json.loads(git(repo, "show", "HEAD:" + target))
            except (subprocess.CalledProcessError, json.JSONDecodeError):
                continue
            if isinstance(sample, dict) and len(sample) == 1:
                return next(iter(sample))
    text = "\n".join(heading + block)
    m = SPECIFY.search(text) or HEADING.search(text)
    return m.group(1) if m else None


def main(repos: list[str]) -> None:
    routes: set[tuple[str, str, str, str, int]] = set()
    actions: dict[str, set[str]] = {}
    for (service, folders, _), repo in zip(SERVICES, repos, strict=True):
        files = git(repo, "ls-tree", "-r", "--name-only", "HEAD", "api-ref/source").split()
        for name in sorted(files):
            if not name.endswith(".inc") or not any(name.startswith(f) for f in folders):
                continue
            if service == "volume" and "/v2/" in name:
                continue
            seen: set[tuple[str, str]] = {(r[1], r[2]) for r in routes if r[0] == service}
            lines = git(repo, "show", "HEAD:" + name).splitlines()
            group = Path(name).stem
            status = 410 if service == "compute" and group in NOVA_OBSOLETE else 501
            heading_at = 0
            for i, line in enumerate(lines):
                if len(set(line.strip())) == 1 and line.strip()[0] in "=-~^*+#" \
                        and i and lines[i - 1].strip() and len(line.strip()) > 3:
                    heading_at = i - 1
                m = REST.match(line)
                if not m:
                    continue
                if not m.group(2):  # the directive's argument on the next line
                    m = ARG.match(lines[i + 1]) if i + 1 < len(lines) else None
                    if not m:
                        continue
                path = norm_path(service, m.group(2))
                if path is None:
                    continue
                if (m.group(1).upper(), path) not in seen:
                    routes.add((service, m.group(1).upper(), path, group, status))
                    seen.add((m.group(1).upper(), path))
                if path.endswith("/action"):
                    end = next((j for j in range(i + 1, len(lines)) if REST.match(lines[j])),
                               len(lines))
                    act = action_name(repo, "/" + str(Path(name).parent),
                                      lines[i:end], lines[heading_at:i + 1])
                    if act:
                        parts = [p for p in path.split("/")[:-1] if not p.startswith("{")]
                        owner = parts[-1]
                        actions.setdefault(f"{service}:{owner}", set()).add(act)
    out = ['"""The API references\' routes (method, path template) per service, as data.',
           "",
           "Generated by scripts/extract_reference_routes.py from the ``rest_method`` lines",
           "of nova, cinder, glance, keystone and neutron-lib's api-ref; do not edit by hand.",
           'Paths are relative to each service\'s mount point (``/compute``, ``/volume``, ...).',
           '"""', "", "from __future__ import annotations", "",
           "# (service, method, path template, api-ref section, status when unimplemented)",
           "ROUTES: tuple[tuple[str, str, str, str, int], ...] = ("]
    for r in sorted(routes, key=lambda r: (r[0], r[2], r[1])):
        line = f"    {r!r},"
        if len(line) > 100:
            line = f"    ({r[0]!r}, {r[1]!r},\n     {r[2]!r},\n     {r[3]!r}, {r[4]}),"
        out.append(line)
    out += [")", "", "# Action names of each ``.../{id}/action`` route, by service:collection.",
            "ACTIONS: dict[str, tuple[str, ...]] = {"]
    for key in sorted(actions):
        out.append(f"    {key!r}: (")
        out += [f"        {a!r}," for a in sorted(actions[key])]
        out.append("    ),")
    out.append("}")
    target = Path(__file__).resolve().parent.parent / "strato/api/reference_routes.py"
    target.write_text("\n".join(out) + "\n")
    print(f"{len(routes)} routes, {sum(map(len, actions.values()))} actions -> {target}")


if __name__ == "__main__":
    main(sys.argv[1:])
