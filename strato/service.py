"""Services: everything a process builds once from its configuration and shares."""

from __future__ import annotations

from dataclasses import dataclass

from strato.config import Config
from strato.db import Database
from strato.identity.api import IdentityAPI
from strato.identity.tokens import TokenFactory, load_keys
from strato.policy import Enforcer


@dataclass
class Services:
    conf: Config
    db: Database
    policy: Enforcer
    identity: IdentityAPI

    @classmethod
    def build(cls, conf: Config) -> Services:
        db = Database.from_config(conf)
        policy = Enforcer(conf.oslo_policy.policy_file)
        tokens = TokenFactory(load_keys(conf.token.key_repository), conf.token.expiration)
        identity = IdentityAPI(db, tokens, policy, conf.public_endpoint,
                               conf.DEFAULT.region_name, conf.identity.password_min_length)
        return cls(conf=conf, db=db, policy=policy, identity=identity)

    def close(self) -> None:
        self.db.dispose()
