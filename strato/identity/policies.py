"""Identity's default policy rules (Keystone's names)."""

from oslo_policy.policy import RuleDefault

ADMIN = "rule:admin_required"

RULES = [
    RuleDefault("identity:get_domain", f"{ADMIN} or token.project.domain.id:%(target.domain.id)s"),
    RuleDefault("identity:list_domains", ADMIN),
    RuleDefault("identity:create_domain", ADMIN),
    RuleDefault("identity:update_domain", ADMIN),
    RuleDefault("identity:delete_domain", ADMIN),
    RuleDefault("identity:get_project", f"{ADMIN} or project_id:%(target.project.id)s"),
    RuleDefault("identity:list_projects", ADMIN),
    RuleDefault("identity:list_user_projects", f"{ADMIN} or user_id:%(target.user.id)s"),
    RuleDefault("identity:create_project", ADMIN),
    RuleDefault("identity:update_project", ADMIN),
    RuleDefault("identity:delete_project", ADMIN),
    RuleDefault("identity:get_user", f"{ADMIN} or user_id:%(target.user.id)s"),
    RuleDefault("identity:list_users", ADMIN),
    RuleDefault("identity:create_user", ADMIN),
    RuleDefault("identity:update_user", ADMIN),
    RuleDefault("identity:delete_user", ADMIN),
    RuleDefault("identity:change_password", "user_id:%(target.user.id)s"),
    RuleDefault("identity:get_role", ADMIN),
    RuleDefault("identity:list_roles", ADMIN),
    RuleDefault("identity:create_role", ADMIN),
    RuleDefault("identity:update_role", ADMIN),
    RuleDefault("identity:delete_role", ADMIN),
    RuleDefault("identity:list_role_inference_rules", ADMIN),
    RuleDefault("identity:check_grant", ADMIN),
    RuleDefault("identity:list_grants", ADMIN),
    RuleDefault("identity:create_grant", ADMIN),
    RuleDefault("identity:revoke_grant", ADMIN),
    RuleDefault("identity:list_role_assignments", f"{ADMIN} or user_id:%(target.user.id)s"),
    RuleDefault("identity:validate_token", f"{ADMIN} or user_id:%(target.token.user_id)s"),
    RuleDefault("identity:revoke_token", f"{ADMIN} or user_id:%(target.token.user_id)s"),
    RuleDefault("identity:list_services", ADMIN),
    RuleDefault("identity:list_endpoints", ADMIN),
    RuleDefault("identity:list_regions", "@"),
]
