"""Policy defaults of the compute read APIs (Nova's rule names and defaults)."""

from oslo_policy.policy import RuleDefault

MEMBER = "rule:admin_or_member"
READER = "rule:admin_or_reader"
ADMIN = "rule:admin_required"
ANY = "@"
P = "os_compute_api:"

RULES = [
    RuleDefault(f"{P}os-availability-zone:list", ANY),
    RuleDefault(f"{P}os-availability-zone:detail", ADMIN),
    RuleDefault(f"{P}limits", ANY),
    RuleDefault(f"{P}limits:other_project", ADMIN),
    RuleDefault(f"{P}os-simple-tenant-usage:list", ADMIN),
    RuleDefault(f"{P}os-simple-tenant-usage:show", READER),
    *(RuleDefault(f"{P}os-services:{n}", ADMIN) for n in ("list", "update", "delete")),
    *(RuleDefault(f"{P}os-hypervisors:{n}", ADMIN) for n in (
        "list", "list-detail", "show", "statistics", "uptime", "search", "servers")),
    RuleDefault(f"{P}os-server-groups:index", READER),
    RuleDefault(f"{P}os-server-groups:show", READER),
    RuleDefault(f"{P}os-server-groups:create", MEMBER),
    RuleDefault(f"{P}os-server-groups:delete", MEMBER),
    RuleDefault(f"{P}os-server-groups:index:all_projects", ADMIN),
    *(RuleDefault(f"{P}os-aggregates:{n}", ADMIN) for n in (
        "index", "create", "show", "update", "delete", "add_host", "remove_host",
        "set_metadata")),
    *(RuleDefault(f"{P}os-hosts:{n}", ADMIN) for n in (
        "list", "show", "update", "reboot", "shutdown", "start")),
    RuleDefault(f"{P}os-quota-class-sets:show", ADMIN),
    RuleDefault(f"{P}os-quota-class-sets:update", ADMIN),
]
