"""Typed client interfaces between services (in-process and gRPC)."""
