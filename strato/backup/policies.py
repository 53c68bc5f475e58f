"""Backup policy rules: Cinder's names and defaults (cinder/policies/backups.py and
backup_actions.py)."""

from oslo_policy.policy import RuleDefault

MEMBER = "rule:admin_or_member"
READER = "rule:admin_or_reader"
ADMIN = "rule:admin_required"

RULES = [
    RuleDefault("backup:get_all", READER),
    RuleDefault("backup:backup_project_attribute", ADMIN),
    RuleDefault("backup:create", MEMBER),
    RuleDefault("backup:get", READER),
    RuleDefault("backup:update", MEMBER),
    RuleDefault("backup:delete", MEMBER),
    RuleDefault("backup:restore", MEMBER),
    RuleDefault("backup:backup-import", ADMIN),
    RuleDefault("backup:export-import", ADMIN),
    RuleDefault("backup:backup-export", ADMIN),
    RuleDefault("volume_extension:backup_admin_actions:reset_status", ADMIN),
    RuleDefault("volume_extension:backup_admin_actions:force_delete", ADMIN),
]
