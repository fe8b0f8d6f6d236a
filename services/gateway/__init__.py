"""The gateway: the cascade orchestrator behind one authenticated gRPC API."""
