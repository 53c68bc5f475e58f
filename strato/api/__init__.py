"""HTTP: one ASGI app with a router per service on DevStack's paths."""
