"""sipmesh router service."""
