"""sipmesh media-relay service."""
