"""Policy with oslo.policy: each service's defaults, overridable by a policy file.

Rules are checked with the request context's credentials.  The base rules follow
OpenStack's secure defaults: ``admin`` anywhere is a cloud admin; ``member`` and
``reader`` count only in their own project.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from oslo_config import cfg
from oslo_policy import policy

from strato.context import RequestContext
from strato.exceptions import Forbidden

BASE_RULES = [
    policy.RuleDefault("admin_required", "role:admin", "A cloud administrator."),
    policy.RuleDefault(
        "project_member", "role:member and project_id:%(project_id)s",
        "A member of the project that owns the target.",
    ),
    policy.RuleDefault(
        "project_reader", "role:reader and project_id:%(project_id)s",
        "A reader of the project that owns the target.",
    ),
    policy.RuleDefault("admin_or_member", "rule:admin_required or rule:project_member"),
    policy.RuleDefault("admin_or_reader", "rule:admin_required or rule:project_reader"),
]


def all_rules() -> list[policy.RuleDefault]:
    """The defaults of every service, collected here so one enforcer knows all."""
    from strato.backup.policies import RULES as BACKUP
    from strato.compute.policies import RULES as COMPUTE
    from strato.identity.policies import RULES as IDENTITY
    from strato.image.policies import RULES as IMAGE
    from strato.lineage.policies import RULES as LINEAGE
    from strato.network.policies import RULES as NETWORK
    from strato.volume.policies import RULES as VOLUME

    return [*BASE_RULES, *IDENTITY, *IMAGE, *VOLUME, *BACKUP, *COMPUTE, *NETWORK, *LINEAGE]


class Enforcer:
    def __init__(self, policy_file: str = "", rules: Iterable[policy.RuleDefault] | None = None):
        conf = cfg.ConfigOpts()
        conf([], project="strato", default_config_files=[])
        if policy_file and not Path(policy_file).is_file():
            raise FileNotFoundError(f"policy file {policy_file} does not exist")
        self._enforcer = policy.Enforcer(
            conf, policy_file=policy_file or "strato-no-policy-file.yaml", use_conf=True
        )
        self._enforcer.register_defaults(list(rules) if rules is not None else all_rules())
        self._enforcer.load_rules()

    def allowed(self, ctx: RequestContext, rule: str, target: dict[str, Any] | None = None) -> bool:
        target = target if target is not None else {"project_id": ctx.project_id}
        return bool(self._enforcer.authorize(rule, target, ctx.credentials(), do_raise=False))

    def enforce(self, ctx: RequestContext, rule: str, target: dict[str, Any] | None = None) -> None:
        """Raise 403 unless ``rule`` allows ``ctx`` on ``target``."""
        if not self.allowed(ctx, rule, target):
            raise Forbidden(f"Policy doesn't allow {rule} to be performed.")

    def defaults_yaml(self) -> str:
        """A policy file listing every default, for operators to copy and edit."""
        lines = []
        for rule in self._enforcer.registered_rules.values():
            if rule.description:
                lines.append(f"# {rule.description}")
            lines.append(f'#"{rule.name}": "{rule.check_str}"')
        return "\n".join(lines) + "\n"
