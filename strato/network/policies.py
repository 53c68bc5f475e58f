"""Networking default policy rules (Neutron's names).

Neutron's own defaults: members manage their project's resources; only an admin
creates shared or external networks, sets another project's quotas or binds ports.
Visibility of shared and external networks to every project is decided in
``strato.network.api`` (it is a property of the network, not of the caller)."""

from oslo_policy.policy import RuleDefault

MEMBER = "rule:admin_or_member"
READER = "rule:admin_or_reader"
ADMIN = "rule:admin_required"

RULES = [
    *(RuleDefault(f"{verb}_{kind}", READER if verb == "get" else MEMBER)
      for kind in ("network", "subnet", "port", "security_group", "security_group_rule",
                   "router", "floatingip")
      for verb in ("create", "get", "update", "delete")),
    RuleDefault("create_network:shared", ADMIN),
    RuleDefault("create_network:router:external", ADMIN),
    RuleDefault("update_network:shared", ADMIN),
    RuleDefault("update_network:router:external", ADMIN),
    RuleDefault("create_port:binding:host_id", ADMIN),
    RuleDefault("update_port:binding:host_id", ADMIN),
    RuleDefault("create_port:device_owner", MEMBER),
    RuleDefault("add_router_interface", MEMBER),
    RuleDefault("remove_router_interface", MEMBER),
    RuleDefault("get_quota", READER),
    RuleDefault("update_quota", ADMIN),
    RuleDefault("delete_quota", ADMIN),
]
