"""The classifier service: gRPC Score over the difficulty classifier, micro-batched."""
