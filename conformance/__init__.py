"""``make conformance``: OpenStack's Tempest against a strato server (not part of CI)."""
