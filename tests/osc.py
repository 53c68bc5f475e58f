"""The real ``openstack`` client, for the tests: ``python tests/osc.py ARGS`` is
``openstack ARGS`` except that ``--wait`` polls every half second instead of every five.

osc-lib's ``wait_for_status``/``wait_for_delete`` sleep 5 s between two GETs of the
resource, so every ``server create --wait``, ``server image create --wait`` or
``server delete --wait`` in the suite ended up to 5 s after the resource got there
(minutes over a CI run).  The requests the client sends are the same, only more often;
callers that choose their own interval (the volume commands: 1 s) keep it.
"""

from __future__ import annotations

import inspect
import sys

from osc_lib import utils

#: seconds between two status polls of a ``--wait``
POLL = 0.5


def _poll_faster(func: object) -> None:
    params = [p for p in inspect.signature(func).parameters.values()  # type: ignore[arg-type]
              if p.default is not inspect.Parameter.empty]
    func.__defaults__ = tuple(POLL if p.name == "sleep_time" else p.default  # type: ignore[attr-defined]
                              for p in params)


if __name__ == "__main__":
    _poll_faster(utils.wait_for_status)
    _poll_faster(utils.wait_for_delete)
    from openstackclient.shell import main

    sys.argv[0] = "openstack"
    sys.exit(main())
