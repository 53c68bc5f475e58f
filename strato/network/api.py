"""The network service: Neutron's v2.0 resources (validation, policy, quota, records),
and what compute asks of it for an instance's NICs.

Every change that alters a data plane object is applied before its transaction
commits (``NetworkManager.apply``): a failure rolls the records back, so a record never
claims a network the host does not have.  Security groups cost nothing on the data
plane and stay manageable when networking is unavailable here.

``NetworkAPI`` is the one object callers hold (``services.network``); its operations
live with their resource: ``networks``, ``subnets``, ``ports``, ``secgroups``,
``routers``, ``floatingips``, ``quotas``, ``nova`` (compute's side), over ``base``
(transaction, policy, quota counting, visibility), ``views`` and ``validation``."""

from __future__ import annotations

import logging

from strato.network.floatingips import FloatingIPOps
from strato.network.networks import NetworkOps
from strato.network.nova import NovaOps
from strato.network.ports import PortOps
from strato.network.quotas import QuotaOps
from strato.network.routers import RouterOps
from strato.network.secgroups import SecurityGroupOps
from strato.network.subnets import SubnetOps

LOG = logging.getLogger("strato.network")
Params = list[tuple[str, str]]


class NetworkAPI(NovaOps, NetworkOps, SubnetOps, PortOps, SecurityGroupOps, RouterOps,
                 FloatingIPOps, QuotaOps):
    """The network service as callers see it: one class, each resource's operations a
    mixin in its own module (they share ``NetworkBase``'s state and call each other's
    helpers through ``self``)."""
