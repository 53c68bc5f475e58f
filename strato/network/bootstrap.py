"""The external ("public") network ``strato bootstrap`` makes: floating IPs and router
gateways come from it.  Only records: ``strato serve`` applies them at startup
(``NetworkAPI.sync_host``), where its host veth takes the gateway address."""

from __future__ import annotations

import ipaddress
import uuid

from sqlalchemy import select

from strato.config import Config
from strato.db import Database
from strato.network import ipam
from strato.network.models import Network, Subnet


def bootstrap_public_network(db: Database, conf: Config, project_id: str) -> str | None:
    """Create the admin's external network and its subnet if missing (idempotent);
    returns the network's id, None when ``[network] public_network`` is empty."""
    name, cidr = conf.network.public_network, conf.network.public_cidr
    if not name or not cidr:
        return None
    net_range = ipam.parse_cidr(cidr)
    with db.session() as s:
        net = s.scalars(select(Network).where(Network.name == name,
                                              Network.router_external)).first()
        if net is None:
            net = Network(id=str(uuid.uuid4()), project_id=project_id, name=name,
                          router_external=True, shared=False,
                          mtu=conf.network.global_physnet_mtu)
            s.add(net)
            s.flush()
        if s.scalars(select(Subnet).where(Subnet.network_id == net.id)).first() is None:
            gateway = str(ipaddress.ip_address(ipam.hosts(net_range)[0]))
            s.add(Subnet(id=str(uuid.uuid4()), project_id=project_id, network_id=net.id,
                         name=f"{name}-subnet", cidr=str(net_range), gateway_ip=gateway,
                         enable_dhcp=False,
                         allocation_pools=ipam.default_pools(net_range, gateway)))
        return net.id
