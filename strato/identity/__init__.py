"""Identity: a Keystone v3 subset (domains, projects, users, roles, tokens)."""
