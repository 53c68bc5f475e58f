"""Identity's default policy rules (Keystone's names and, as Keystone without
``enforce_scope``: an admin anywhere, or a reader with system scope for reads)."""

from oslo_policy.policy import RuleDefault

ADMIN = "rule:admin_required"
SYSTEM_READER = "(role:reader and system_scope:all)"
READ = f"{ADMIN} or {SYSTEM_READER}"

_ADMIN_ONLY = [
    "create_domain", "update_domain", "delete_domain",
    "create_project", "update_project", "delete_project",
    "create_user", "update_user", "delete_user",
    "create_role", "update_role", "delete_role",
    "create_grant", "revoke_grant",
    "create_group", "update_group", "delete_group",
    "add_user_to_group", "remove_user_from_group",
    "create_system_grant_for_user", "revoke_system_grant_for_user",
    "create_system_grant_for_group", "revoke_system_grant_for_group",
    "update_project_tags", "create_project_tag", "delete_project_tag",
    "create_service", "update_service", "delete_service",
    "create_endpoint", "update_endpoint", "delete_endpoint",
    "create_region", "update_region", "delete_region",
    "create_implied_role", "delete_implied_role",
    "create_policy", "update_policy", "delete_policy",
]
_READERS = [
    "list_domains", "list_projects", "list_users", "get_role", "list_roles",
    "list_role_inference_rules", "check_grant", "list_grants",
    "list_groups", "get_group", "list_users_in_group", "check_user_in_group",
    "check_system_grant_for_user", "list_system_grants_for_user",
    "check_system_grant_for_group", "list_system_grants_for_group",
    "list_services", "get_service", "list_endpoints", "get_endpoint",
    "list_implied_roles", "get_implied_role", "check_implied_role",
    "list_policies", "get_policy",
]

RULES = [
    *(RuleDefault(f"identity:{name}", ADMIN) for name in _ADMIN_ONLY),
    *(RuleDefault(f"identity:{name}", READ) for name in _READERS),
    RuleDefault("identity:get_domain",
                f"{READ} or project_domain_id:%(target.domain.id)s"
                " or token_domain_id:%(target.domain.id)s"),
    RuleDefault("identity:get_project", f"{READ} or project_id:%(target.project.id)s"),
    RuleDefault("identity:get_project_tags", f"{READ} or project_id:%(target.project.id)s"),
    RuleDefault("identity:get_project_tag", f"{READ} or project_id:%(target.project.id)s"),
    RuleDefault("identity:list_user_projects", f"{READ} or user_id:%(target.user.id)s"),
    RuleDefault("identity:get_user", f"{READ} or user_id:%(target.user.id)s"),
    RuleDefault("identity:list_groups_for_user", f"{READ} or user_id:%(target.user.id)s"),
    RuleDefault("identity:change_password", f"{ADMIN} or user_id:%(target.user.id)s"),
    RuleDefault("identity:list_role_assignments", f"{READ} or user_id:%(target.user.id)s"),
    RuleDefault("identity:validate_token", f"{READ} or user_id:%(target.token.user_id)s"),
    RuleDefault("identity:revoke_token", f"{ADMIN} or user_id:%(target.token.user_id)s"),
    RuleDefault("identity:list_credentials", "@"),  # non-admins see only their own
    *(RuleDefault(f"identity:{name}", f"{ADMIN} or user_id:%(target.credential.user_id)s")
      for name in ("create_credential", "get_credential", "update_credential",
                   "delete_credential")),
    RuleDefault("identity:create_application_credential", "user_id:%(target.user.id)s"),
    *(RuleDefault(f"identity:{name}", f"{READ} or user_id:%(target.user.id)s")
      for name in ("get_application_credential", "list_application_credentials")),
    RuleDefault("identity:delete_application_credential",
                f"{ADMIN} or user_id:%(target.user.id)s"),
    *(RuleDefault(f"identity:ec2_{name}", f"{ADMIN} or user_id:%(target.user.id)s")
      for name in ("create_credential", "get_credential", "list_credentials",
                   "delete_credential")),
    RuleDefault("identity:list_regions", "@"),
    RuleDefault("identity:get_region", "@"),
]
