"""Generated protobuf/gRPC code (scripts/genproto). Never edit by hand."""
