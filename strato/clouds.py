"""Write a clouds.yaml entry so `openstack --os-cloud strato` works at once."""

from __future__ import annotations

import os
from pathlib import Path

import yaml


def write_cloud(path: Path, name: str, *, auth_url: str, username: str, password: str,
                project_name: str, region: str) -> Path:
    """Add or replace cloud ``name`` in ``path``, keeping every other cloud there."""
    data: dict = {}
    if path.exists():
        data = yaml.safe_load(path.read_text()) or {}
    data.setdefault("clouds", {})[name] = {
        "auth": {
            "auth_url": auth_url, "username": username, "password": password,
            "project_name": project_name, "user_domain_name": "Default",
            "project_domain_name": "Default",
        },
        "region_name": region,
        "identity_api_version": 3,
        "interface": "public",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        yaml.safe_dump(data, fh, default_flow_style=False, sort_keys=False)
    tmp.replace(path)
    return path
