"""The cloud image builder's inputs: the mirrors it takes from the host's apt sources,
and a cache key that follows every input (no QEMU, no build)."""

from __future__ import annotations

from pathlib import Path

import pytest

from strato.virt import cloudimage, cloudimagefiles


def test_host_mirrors_reads_deb822_and_one_line_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main contrib\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg"
        "\n\nTypes: deb-src\nURIs: http://mirror.example/debian\nSuites: bookworm\n"
        "Components: main\n\nTypes: deb\nURIs: http://off.example/debian\nSuites: bookworm\n"
        "Components: main\nEnabled: no\n")
    (tmp_path / "sources.list").write_text(
        "# comment\ndeb [arch=amd64] http://security.example/debian-security "
        "bookworm-security main\ndeb http://other.example/ubuntu jammy main\n")
    (tmp_path / "sources.list.d" / "node.list").write_text(
        "deb https://deb.nodesource.com/node_20.x nodistro main\n")
    assert cloudimage.host_mirrors(tmp_path) == [
        "deb http://mirror.example/debian bookworm main contrib",
        "deb http://mirror.example/debian bookworm-updates main contrib",
        "deb http://security.example/debian-security bookworm-security main",
    ]


def test_host_mirrors_empty_without_sources(tmp_path: Path) -> None:
    assert cloudimage.host_mirrors(tmp_path) == []


def test_cache_key_follows_every_input(monkeypatch: pytest.MonkeyPatch) -> None:
    mirrors = ["deb http://mirror.example/debian bookworm main"]
    key = cloudimage.cache_key(mirrors)
    assert key == cloudimage.cache_key(list(mirrors))  # stable
    assert len(key) == 16 and int(key, 16) >= 0
    assert cloudimage.cache_key(["deb http://elsewhere.example/debian bookworm main"]) != key
    monkeypatch.setattr(cloudimagefiles, "PACKAGES", (*cloudimagefiles.PACKAGES, "vim"))
    assert cloudimage.cache_key(mirrors) != key
    monkeypatch.undo()
    monkeypatch.setattr(cloudimagefiles, "CLOUD_CFG", cloudimagefiles.CLOUD_CFG + "# x\n")
    assert cloudimage.cache_key(mirrors) != key
    monkeypatch.undo()
    monkeypatch.setattr(cloudimage, "BUILDER_VERSION", cloudimage.BUILDER_VERSION + 1)
    assert cloudimage.cache_key(mirrors) != key


def test_cached_finds_only_a_complete_build(tmp_path: Path) -> None:
    mirrors: list[str] = []
    assert cloudimage.cached(tmp_path, mirrors) is None
    d = tmp_path / cloudimage.cache_key(mirrors)
    d.mkdir()
    (d / cloudimage.INFO_FILE).write_text(
        '{"key": "k", "kernel_version": "6.1", "root_uuid": "u", "root_label": "l", '
        '"cmdline": "c", "virtual_size": 1, "build_seconds": 2.0, "packages": {}}')
    assert cloudimage.cached(tmp_path, mirrors) is None  # no disk: an unfinished copy
    (d / cloudimage.IMAGE_FILE).write_bytes(b"")
    found = cloudimage.cached(tmp_path, mirrors)
    assert found is not None and found.path == d / cloudimage.IMAGE_FILE
