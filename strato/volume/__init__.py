"""Block storage: a Cinder v3 subset whose volumes are block-store images."""
