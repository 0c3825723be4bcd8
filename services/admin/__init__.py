"""sipmesh admin service."""
