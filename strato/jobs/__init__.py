"""Durable jobs: rows committed with the state change that asked for them."""
