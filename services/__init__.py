"""cascade-mesh services: one thin gRPC adapter per folder."""
