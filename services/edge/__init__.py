"""sipmesh edge service."""
