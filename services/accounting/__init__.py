"""sipmesh accounting service."""
