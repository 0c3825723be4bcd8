"""sipmesh presence service."""
