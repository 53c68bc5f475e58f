"""What networking things exist on this machine, and what a test left behind.

A :class:`Snapshot` records the network namespaces (``ip netns list``), the links of
the host's namespace (``ip -o link``), the host namespace's nftables ruleset and the
dnsmasq processes (from /proc).  ``Snapshot.take().leaked_since(before)`` is what
appeared since ``before``; a test asserts it is empty after server delete, network
delete, a restart or a teardown::

    before = Snapshot.take()
    ...                      # create and delete things
    assert not Snapshot.take().leaked_since(before, tag=plane_tag)

Other helpers' tests run on the same machine at the same time, so a diff can be
narrowed to names containing this deployment's tag (``dataplane_id``).
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path


def _run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return done.stdout


def namespaces() -> set[str]:
    """Names of the network namespaces (``ip netns list`` prints ``name (id: N)``)."""
    return {line.split()[0] for line in _run("ip", "netns", "list").splitlines()
            if line.strip()}


def host_links() -> set[str]:
    """Link names in the host's namespace (``veth0@if12`` -> ``veth0``)."""
    out = set()
    for line in _run("ip", "-o", "link", "show").splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            out.add(parts[1].strip().split("@", 1)[0])
    return out


def namespace_links(ns: str) -> set[str]:
    out = set()
    for line in _run("ip", "-n", ns, "-o", "link", "show").splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            out.add(parts[1].strip().split("@", 1)[0])
    return out


def host_ruleset() -> str:
    return _run("nft", "list", "ruleset")


_TABLE = re.compile(r"^table (\S+) (\S+)", re.MULTILINE)


def host_tables(ruleset: str) -> set[str]:
    """``family name`` of every nftables table in a ruleset listing."""
    return {f"{m.group(1)} {m.group(2)}" for m in _TABLE.finditer(ruleset)}


def dnsmasq_pids() -> dict[int, str]:
    """Running dnsmasq processes: pid -> command line."""
    out: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0].decode(errors="replace")) == "dnsmasq":
            out[int(entry.name)] = " ".join(a.decode(errors="replace") for a in argv if a)
    return out


@dataclass(frozen=True)
class Leaks:
    """What appeared between two snapshots."""

    namespaces: frozenset[str] = frozenset()
    links: frozenset[str] = frozenset()
    nft_tables: frozenset[str] = frozenset()
    nft_changed: bool = False  # the host ruleset differs (beyond new tables)
    dnsmasq: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.namespaces or self.links or self.nft_tables or self.nft_changed
                    or self.dnsmasq)

    def __str__(self) -> str:
        parts = []
        if self.namespaces:
            parts.append(f"namespaces {sorted(self.namespaces)}")
        if self.links:
            parts.append(f"host links {sorted(self.links)}")
        if self.nft_tables:
            parts.append(f"host nftables tables {sorted(self.nft_tables)}")
        if self.nft_changed:
            parts.append("the host nftables ruleset changed")
        if self.dnsmasq:
            parts.append(f"dnsmasq processes {list(self.dnsmasq)}")
        return "; ".join(parts) or "nothing"


@dataclass(frozen=True)
class Snapshot:
    namespaces: frozenset[str] = field(default_factory=frozenset)
    links: frozenset[str] = field(default_factory=frozenset)
    ruleset: str = ""
    dnsmasq: dict[int, str] = field(default_factory=dict)

    @classmethod
    def take(cls) -> Snapshot:
        return cls(frozenset(namespaces()), frozenset(host_links()), host_ruleset(),
                   dnsmasq_pids())

    def leaked_since(self, before: Snapshot, tag: str | None = None,
                     state: Path | str | None = None) -> Leaks:
        """What exists now and did not in ``before``.  With ``tag``, only names that
        contain it (other tests on this machine make their own); with ``state``, only
        dnsmasq processes whose command line mentions that directory."""

        def mine(name: str) -> bool:
            return tag is None or tag in name

        ns = frozenset(n for n in self.namespaces - before.namespaces if mine(n))
        links = frozenset(n for n in self.links - before.links if mine(n))
        tables = frozenset(t for t in host_tables(self.ruleset) - host_tables(before.ruleset)
                           if mine(t))
        # the host's own rules must never change (only tables of our tag may appear,
        # and they are reported above); without a tag any change is reported
        changed = tag is None and self.ruleset != before.ruleset and not tables
        procs = tuple(cmd for pid, cmd in self.dnsmasq.items()
                      if pid not in before.dnsmasq
                      and (state is None or str(state) in cmd)
                      and (tag is None or state is not None or tag in cmd))
        return Leaks(ns, links, tables, changed, procs)

    def owned_by(self, tag: str, state: Path | str | None = None) -> Leaks:
        """Everything on the machine that carries ``tag`` (namespaces, host links,
        host nftables tables) and the dnsmasq processes of ``state``: what must be gone
        after a teardown, whatever existed before."""
        return self.leaked_since(Snapshot(), tag=tag, state=state)
