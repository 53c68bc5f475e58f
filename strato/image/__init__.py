"""Image service: a Glance v2 subset whose data lives in an image store."""
