"""Lineage policy rules (strato's own API).  Default: any user whose token is scoped to
a project may ask; what they see is cut to that project by the walk itself."""

from oslo_policy.policy import RuleDefault

ANY_PROJECT_ROLE = "rule:admin_required or project_id:%(project_id)s"

RULES = [
    RuleDefault("lineage:show", ANY_PROJECT_ROLE,
                "See the lineage graph around an image, volume, snapshot, server or "
                "backup."),
    RuleDefault("lineage:delete_blockers", ANY_PROJECT_ROLE,
                "See what blocks deleting an image, volume, snapshot, server or backup."),
]
