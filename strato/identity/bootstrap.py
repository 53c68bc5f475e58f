"""``strato bootstrap``: the first domain, project, admin user and roles.

Like ``keystone-manage bootstrap``: idempotent, so it can run on every start; an
existing admin keeps their password unless a new one is given with ``reset``.
"""

from __future__ import annotations

from sqlalchemy import select

from strato.db import Database
from strato.identity.api import DEFAULT_DOMAIN_ID
from strato.identity.models import Assignment, Domain, ImpliedRole, Project, Role, User
from strato.identity.passwords import hash_password

# Keystone's bootstrap roles (2024.1 on): "manager" sits between admin and member, and
# "service" is for service users (Nova's external events, Cinder's callbacks).
ROLES = ("admin", "manager", "member", "reader", "service")
IMPLIES = (("admin", "manager"), ("manager", "member"), ("member", "reader"))


def bootstrap(db: Database, password: str, *, project: str = "admin", user: str = "admin",
              reset_password: bool = False) -> dict[str, str]:
    """Create what is missing; returns the ids of the admin user and project."""
    with db.session() as session:
        domain = session.get(Domain, DEFAULT_DOMAIN_ID)
        if domain is None:
            domain = Domain(id=DEFAULT_DOMAIN_ID, name="Default",
                            description="The default domain", enabled=True)
            session.add(domain)
        roles = {}
        for name in ROLES:
            role = session.scalars(select(Role).where(Role.name == name)).first()
            if role is None:
                role = Role(name=name)
                session.add(role)
            roles[name] = role
        session.flush()
        for prior, implied in IMPLIES:
            key = (roles[prior].id, roles[implied].id)
            if session.get(ImpliedRole, key) is None:
                session.add(ImpliedRole(prior_role_id=key[0], implied_role_id=key[1]))
        proj = session.scalars(select(Project).where(
            Project.name == project, Project.domain_id == DEFAULT_DOMAIN_ID)).first()
        if proj is None:
            proj = Project(name=project, domain_id=DEFAULT_DOMAIN_ID,
                           description="Bootstrap project for the cloud administrator")
            session.add(proj)
        admin = session.scalars(select(User).where(
            User.name == user, User.domain_id == DEFAULT_DOMAIN_ID)).first()
        if admin is None:
            admin = User(name=user, domain_id=DEFAULT_DOMAIN_ID,
                         password_hash=hash_password(password))
            session.add(admin)
        elif reset_password:
            admin.password_hash = hash_password(password)
        session.flush()
        admin.default_project_id = proj.id
        key = (admin.id, proj.id, roles["admin"].id)
        if session.get(Assignment, key) is None:
            session.add(Assignment(user_id=admin.id, project_id=proj.id,
                                   role_id=roles["admin"].id))
        return {"user_id": admin.id, "project_id": proj.id, "domain_id": domain.id}
