"""The real ``openstack`` client, for the tests: ``python tests/osc.py ARGS`` is
``openstack ARGS`` except that ``--wait`` polls every half second.

osc-lib's ``wait_for_status``/``wait_for_delete`` sleep 5 s between two GETs of the
resource (openstacksdk's, used by ``server delete --wait``, 2 s), so every ``server
create --wait``, ``server image create --wait`` or ``server delete --wait`` in the suite
ended up to 5 s after the resource got there (minutes over a CI run).  The requests the
client sends are the same, only more often; callers that pass their own interval (the
volume commands: 1 s) keep it.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from typing import Any

#: seconds between two status polls of a ``--wait``
POLL = 0.5
#: the names the waiting functions give their polling interval
INTERVALS = ("sleep_time", "interval")


def poll_faster(func: Callable[..., Any]) -> None:
    """Set ``func``'s default polling interval to ``POLL``."""
    params = [p for p in inspect.signature(func).parameters.values()
              if p.default is not inspect.Parameter.empty
              and p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    assert any(p.name in INTERVALS for p in params), func
    func.__defaults__ = tuple(POLL if p.name in INTERVALS else p.default  # type: ignore[attr-defined]
                              for p in params)


def waits() -> list[Callable[..., Any]]:
    """Every function a ``--wait`` of the commands the tests run polls with."""
    import openstack.resource
    from openstack.block_storage.v3._proxy import Proxy as Volume
    from openstack.compute.v2._proxy import Proxy as Compute
    from openstack.image.v2._proxy import Proxy as Image
    from osc_lib import utils

    return [utils.wait_for_status, utils.wait_for_delete, openstack.resource.wait_for_status,
            openstack.resource.wait_for_delete, Compute.wait_for_server,
            Compute.wait_for_status, Compute.wait_for_delete, Image.wait_for_status,
            Image.wait_for_delete, Volume.wait_for_status, Volume.wait_for_delete]


if __name__ == "__main__":
    if "--wait" in sys.argv:  # (the SDK's proxies cost an import otherwise not made)
        for wait in waits():
            poll_faster(wait)
    from openstackclient.shell import main

    sys.argv[0] = "openstack"
    sys.exit(main())
