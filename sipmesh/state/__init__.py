"""State backends: key/value, location, tables, event bus."""
