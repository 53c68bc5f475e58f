"""Database access: one engine per process, sessions per unit of work."""

from strato.db.base import Base, utcnow
from strato.db.session import Database

__all__ = ["Base", "Database", "utcnow"]
