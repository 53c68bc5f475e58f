"""Block storage default policy rules (Cinder's names)."""

from oslo_policy.policy import RuleDefault

MEMBER = "rule:admin_or_member"
READER = "rule:admin_or_reader"

RULES = [
    RuleDefault("volume:create", MEMBER),
    RuleDefault("volume:get", READER),
    RuleDefault("volume:get_all", READER),
    RuleDefault("volume:update", MEMBER),
    RuleDefault("volume:delete", MEMBER),
    RuleDefault("volume:extend", MEMBER),
    RuleDefault("volume_extension:volume_actions:update_readonly_flag", MEMBER),
    RuleDefault("volume:create_snapshot", MEMBER),
    RuleDefault("volume:get_snapshot", READER),
    RuleDefault("volume:get_all_snapshots", READER),
    RuleDefault("volume:update_snapshot", MEMBER),
    RuleDefault("volume:delete_snapshot", MEMBER),
    RuleDefault("message:get_all", READER),
    RuleDefault("message:get", READER),
    RuleDefault("message:delete", MEMBER),
    RuleDefault("volume_extension:types_manage", "rule:admin_required"),
    RuleDefault("volume_extension:volume_type_access:get_all_for_type",
                "rule:admin_required"),
    RuleDefault("volume_extension:volume_type_access:addProjectAccess",
                "rule:admin_required"),
    RuleDefault("volume_extension:volume_type_access:removeProjectAccess",
                "rule:admin_required"),
    RuleDefault("volume_extension:quotas:show", READER),
    RuleDefault("volume_extension:quotas:update", "rule:admin_required"),
    RuleDefault("volume:get_all_tenants", "rule:admin_required"),
    RuleDefault("volume_extension:volume_admin_actions:reset_status", "rule:admin_required"),
]
