"""Compute default policy rules (Nova's names)."""

from oslo_policy.policy import RuleDefault

MEMBER = "rule:admin_or_member"
READER = "rule:admin_or_reader"
ADMIN = "rule:admin_required"
P = "os_compute_api:"
ADMIN_OR_USER = "rule:admin_required or user_id:%(user_id)s"

RULES = [
    *(RuleDefault(f"{P}servers:{name}", MEMBER) for name in (
        "create", "update", "delete", "start", "stop", "reboot", "resize", "confirm_resize",
        "revert_resize")),
    RuleDefault(f"{P}os-migrations:index", ADMIN),
    RuleDefault(f"{P}os-migrate-server:migrate", ADMIN),  # cold migration (resize.py)
    RuleDefault(f"{P}os-evacuate", ADMIN),  # evacuate.py
    RuleDefault(f"{P}servers:migrations:index", ADMIN),
    # live migration (issue 20, part B)
    RuleDefault(f"{P}os-migrate-server:migrate_live", ADMIN),
    *(RuleDefault(f"{P}servers:migrations:{name}", ADMIN)
      for name in ("show", "delete", "force_complete")),
    *(RuleDefault(f"{P}servers:{name}", READER) for name in ("index", "detail", "show")),
    RuleDefault(f"{P}servers:create_image", MEMBER),
    RuleDefault(f"{P}os-create-backup", MEMBER),
    RuleDefault(f"{P}servers:rebuild", MEMBER),
    RuleDefault(f"{P}servers:rebuild:trusted_certs", MEMBER),
    RuleDefault(f"{P}servers:create_image:allow_volume_backed", MEMBER),
    RuleDefault(f"{P}servers:index:get_all_tenants", ADMIN),
    RuleDefault(f"{P}servers:show:host_status", ADMIN),
    RuleDefault(f"{P}os-extended-server-attributes", ADMIN),
    RuleDefault(f"{P}os-pause-server:pause", MEMBER),
    RuleDefault(f"{P}os-pause-server:unpause", MEMBER),
    RuleDefault(f"{P}os-suspend-server:suspend", MEMBER),
    RuleDefault(f"{P}os-suspend-server:resume", MEMBER),
    RuleDefault(f"{P}os-rescue", MEMBER),
    RuleDefault(f"{P}os-unrescue", MEMBER),
    RuleDefault(f"{P}os-shelve:shelve", MEMBER),
    RuleDefault(f"{P}os-shelve:unshelve", MEMBER),
    RuleDefault(f"{P}os-shelve:unshelve_to_host", ADMIN),
    RuleDefault(f"{P}os-shelve:shelve_offload", ADMIN),
    RuleDefault(f"{P}os-console-output", MEMBER),
    RuleDefault(f"{P}os-remote-consoles", MEMBER),
    RuleDefault(f"{P}os-volumes-attachments:index", READER),
    RuleDefault(f"{P}os-volumes-attachments:show", READER),
    RuleDefault(f"{P}os-volumes-attachments:create", MEMBER),
    RuleDefault(f"{P}os-volumes-attachments:delete", MEMBER),
    RuleDefault(f"{P}os-volumes-attachments:update", MEMBER),
    RuleDefault(f"{P}os-volumes-attachments:swap", ADMIN),
    RuleDefault(f"{P}os-instance-actions:list", READER),
    RuleDefault(f"{P}os-instance-actions:show", READER),
    RuleDefault(f"{P}os-instance-actions:events", ADMIN),
    RuleDefault(f"{P}os-instance-actions:events:details", ADMIN),
    RuleDefault(f"{P}server-metadata:index", READER),
    RuleDefault(f"{P}server-metadata:show", READER),
    RuleDefault(f"{P}server-metadata:create", MEMBER),
    RuleDefault(f"{P}server-metadata:update", MEMBER),
    RuleDefault(f"{P}server-metadata:update_all", MEMBER),
    RuleDefault(f"{P}server-metadata:delete", MEMBER),
    RuleDefault(f"{P}os-flavor-manage:create", ADMIN),
    RuleDefault(f"{P}os-flavor-manage:update", ADMIN),
    RuleDefault(f"{P}os-flavor-manage:delete", ADMIN),
    RuleDefault(f"{P}os-flavor-access", ADMIN),
    RuleDefault(f"{P}os-flavor-access:add_tenant_access", ADMIN),
    RuleDefault(f"{P}os-flavor-access:remove_tenant_access", ADMIN),
    RuleDefault(f"{P}os-flavor-extra-specs:index", READER),
    RuleDefault(f"{P}os-flavor-extra-specs:show", READER),
    RuleDefault(f"{P}os-flavor-extra-specs:create", ADMIN),
    RuleDefault(f"{P}os-flavor-extra-specs:update", ADMIN),
    RuleDefault(f"{P}os-flavor-extra-specs:delete", ADMIN),
    *(RuleDefault(f"{P}os-keypairs:{name}", ADMIN_OR_USER) for name in (
        "index", "show", "create", "delete")),
    RuleDefault(f"{P}os-quota-sets:show", READER),
    RuleDefault(f"{P}os-quota-sets:update", ADMIN),
    RuleDefault(f"{P}os-quota-sets:delete", ADMIN),
    RuleDefault(f"{P}os-server-tags:index", READER),
    RuleDefault(f"{P}os-server-tags:show", READER),
    *(RuleDefault(f"{P}os-server-tags:{name}", MEMBER) for name in (
        "update", "update_all", "delete", "delete_all")),
    RuleDefault(f"{P}os-quota-sets:defaults", "@"),
    # strato's own: snapshot schedules (admin or the server's project)
    *(RuleDefault(f"strato:snapshot_schedules:{name}", READER) for name in ("list", "show")),
    *(RuleDefault(f"strato:snapshot_schedules:{name}", MEMBER) for name in (
        "create", "update", "delete")),
]

NETWORK_RULES = [
    RuleDefault(f"{P}ips:index", READER),
    RuleDefault(f"{P}ips:show", READER),
    RuleDefault(f"{P}os-security-groups:add", MEMBER),
    RuleDefault(f"{P}os-security-groups:remove", MEMBER),
    RuleDefault(f"{P}os-security-groups:list", READER),
    RuleDefault(f"{P}os-attach-interfaces:list", READER),
    RuleDefault(f"{P}os-attach-interfaces:show", READER),
    RuleDefault(f"{P}os-attach-interfaces:create", MEMBER),
    RuleDefault(f"{P}os-attach-interfaces:delete", MEMBER),
]
RULES += NETWORK_RULES

from strato.compute.proxy_policies import RULES as PROXY_RULES  # noqa: E402

RULES += PROXY_RULES

from strato.compute.reads_policies import RULES as READS_RULES  # noqa: E402

RULES += READS_RULES

from strato.compute.guestops import RULES as GUEST_OPS_RULES  # noqa: E402

RULES += GUEST_OPS_RULES
