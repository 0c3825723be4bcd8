"""sipmesh registrar service."""
