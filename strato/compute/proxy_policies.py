"""Policy defaults of Nova's proxy APIs (Nova's rule names and defaults): reads for a
project's readers, changes for its members; the network proxies as Nova has them."""

from oslo_policy.policy import RuleDefault

MEMBER = "rule:admin_or_member"
READER = "rule:admin_or_reader"
P = "os_compute_api:"

RULES = [
    *(RuleDefault(f"{P}os-volumes:{name}", READER) for name in ("list", "detail", "show")),
    *(RuleDefault(f"{P}os-volumes:{name}", MEMBER) for name in ("create", "delete")),
    *(RuleDefault(f"{P}os-volumes:snapshots:{name}", READER)
      for name in ("list", "detail", "show")),
    *(RuleDefault(f"{P}os-volumes:snapshots:{name}", MEMBER) for name in ("create", "delete")),
    *(RuleDefault(f"{P}os-security-groups:{name}", READER) for name in ("get", "show")),
    *(RuleDefault(f"{P}os-security-groups:{name}", MEMBER) for name in (
        "create", "update", "delete", "rule:create", "rule:delete")),
    *(RuleDefault(f"{P}os-floating-ips:{name}", READER) for name in ("list", "show")),
    *(RuleDefault(f"{P}os-floating-ips:{name}", MEMBER) for name in (
        "create", "delete", "add", "remove")),
    RuleDefault(f"{P}os-floating-ip-pools:list", READER),
    RuleDefault(f"{P}os-networks:list", READER),
    RuleDefault(f"{P}os-networks:view", READER),
    RuleDefault(f"{P}os-tenant-networks:list", READER),
    RuleDefault(f"{P}os-tenant-networks:show", READER),
]
