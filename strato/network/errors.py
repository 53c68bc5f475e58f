"""Neutron's faults: each carries the ``type`` Neutron names it by, so clients that
match on ``NeutronError.type`` (openstacksdk, Terraform) see what they expect."""

from __future__ import annotations

from strato import exceptions


class NeutronMixin:
    neutron_type = "HTTPInternalServerError"


class BadRequest(NeutronMixin, exceptions.BadRequest):
    neutron_type = "HTTPBadRequest"


class InvalidInput(NeutronMixin, exceptions.BadRequest):
    neutron_type = "InvalidInput"


class NotFound(NeutronMixin, exceptions.NotFound):
    neutron_type = "HTTPNotFound"


class PolicyNotAuthorized(NeutronMixin, exceptions.Forbidden):
    neutron_type = "PolicyNotAuthorized"


class Conflict(NeutronMixin, exceptions.Conflict):
    neutron_type = "Conflict"


class InUse(NeutronMixin, exceptions.Conflict):
    neutron_type = "InUse"


class OverQuota(NeutronMixin, exceptions.Conflict):
    neutron_type = "OverQuota"


class ServiceUnavailable(NeutronMixin, exceptions.ServiceUnavailable):
    neutron_type = "ServiceUnavailable"


NOT_FOUND = {
    "network": "NetworkNotFound", "subnet": "SubnetNotFound", "port": "PortNotFound",
    "security_group": "SecurityGroupNotFound",
    "security_group_rule": "SecurityGroupRuleNotFound", "router": "RouterNotFound",
    "floatingip": "FloatingIPNotFound",
}
_NOUN = {"network": "Network", "subnet": "Subnet", "port": "Port",
         "security_group": "Security group", "security_group_rule": "Security group rule",
         "router": "Router", "floatingip": "Floating IP"}


def not_found(kind: str, ident: str) -> NotFound:
    err = NotFound(f"{_NOUN[kind]} {ident} could not be found.")
    err.neutron_type = NOT_FOUND[kind]
    return err


def in_use(kind: str, message: str) -> InUse:
    err = InUse(message)
    err.neutron_type = kind
    return err


def conflict(kind: str, message: str) -> Conflict:
    err = Conflict(message)
    err.neutron_type = kind
    return err


def bad(kind: str, message: str) -> BadRequest:
    err = BadRequest(message)
    err.neutron_type = kind
    return err
