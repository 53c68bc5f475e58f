"""Console tokens in the database: only their SHA-256 is kept, as Nova keeps them.

Apart from :mod:`strato.compute.consoles` so that deleting an instance
(:mod:`strato.compute.api`) can end its tokens without importing the console API.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from strato.compute.models import ConsoleAuthToken


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue(session: Session, instance_uuid: str, console_type: str, host: str,
          ttl: int) -> str:
    """A new random token for one instance's console, valid ``ttl`` seconds; expired
    tokens are purged on the way (Nova cleans them periodically)."""
    purge_expired(session)
    token = secrets.token_urlsafe(32)
    session.add(ConsoleAuthToken(
        token_hash=hash_token(token), console_type=console_type,
        instance_uuid=instance_uuid, host=host,
        expires=datetime.now(UTC) + timedelta(seconds=ttl)))
    return token


def find(session: Session, token: str) -> ConsoleAuthToken | None:
    """The unexpired token row, or None."""
    return session.scalars(select(ConsoleAuthToken).where(
        ConsoleAuthToken.token_hash == hash_token(token),
        ConsoleAuthToken.expires > datetime.now(UTC))).first()


def delete_for_instance(session: Session, instance_uuid: str) -> None:
    """A deleted instance's tokens go with it (Nova: clean_console_auths_for_instance)."""
    session.execute(delete(ConsoleAuthToken).where(
        ConsoleAuthToken.instance_uuid == instance_uuid))


def purge_expired(session: Session) -> int:
    return session.execute(delete(ConsoleAuthToken).where(
        ConsoleAuthToken.expires <= datetime.now(UTC))).rowcount or 0
