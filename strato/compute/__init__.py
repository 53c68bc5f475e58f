"""Compute (Nova v2.1 subset): API logic, the per-host agent and its job handlers."""
