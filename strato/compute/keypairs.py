"""Keypairs as server create sees them: a lookup by owner and name.

Nova refuses a server whose ``key_name`` names no keypair of the requesting user
(400 "Invalid key_name provided.").  strato has no keypairs API yet, so the lookup
finds nothing and every ``key_name`` is refused; the keypairs API replaces
:meth:`KeyPairs.get` with a query on its table and server create keeps working as is.
"""

from __future__ import annotations

from dataclasses import dataclass

from strato.db import Database


@dataclass(frozen=True)
class KeyPair:
    name: str
    user_id: str
    public_key: str
    fingerprint: str
    type: str = "ssh"


class KeyPairs:
    def __init__(self, db: Database) -> None:
        self.db = db

    def get(self, user_id: str | None, name: str) -> KeyPair | None:
        """The user's keypair called ``name``, or None (today: always None)."""
        return None
