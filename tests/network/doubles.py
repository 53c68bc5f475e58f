"""A data plane that records the plans it is given (unit tests of the network service
only; the shipping data plane is strato.network.linux)."""

from __future__ import annotations

import socket

from strato.network.dataplane import NetworkPlan, Owned, RouterPlan


class RecordingDataplane:
    def __init__(self) -> None:
        self.networks: dict[str, NetworkPlan] = {}
        self.routers: dict[str, RouterPlan] = {}
        self.calls: list[tuple[str, str]] = []
        self.fail_on: set[str] = set()  # ids whose apply raises

    def probe(self) -> None:
        return None

    def apply_network(self, plan: NetworkPlan) -> None:
        self.calls.append(("apply_network", plan.id))
        if plan.id in self.fail_on:
            raise RuntimeError(f"cannot build {plan.id}")
        self.networks[plan.id] = plan

    def remove_network(self, network_id: str) -> None:
        self.calls.append(("remove_network", network_id))
        self.networks.pop(network_id, None)

    def apply_router(self, plan: RouterPlan) -> None:
        self.calls.append(("apply_router", plan.id))
        if plan.id in self.fail_on:
            raise RuntimeError(f"cannot build {plan.id}")
        self.routers[plan.id] = plan

    def remove_router(self, router_id: str) -> None:
        self.calls.append(("remove_router", router_id))
        self.routers.pop(router_id, None)

    def open_tap(self, network_id: str, port_id: str) -> int:
        raise NotImplementedError

    def metadata_listener(self, network_id: str) -> socket.socket:
        raise NotImplementedError

    def owned(self) -> Owned:
        return Owned(networks=set(self.networks), routers=set(self.routers))

    def teardown(self) -> None:
        self.networks.clear()
        self.routers.clear()
