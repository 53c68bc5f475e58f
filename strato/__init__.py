"""strato: an OpenStack-compatible cloud built around a copy-on-write block store."""

__version__ = "0.1.0"
