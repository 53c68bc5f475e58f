"""Quotas with reservations, shared by the services (Cinder's and Nova's model)."""
