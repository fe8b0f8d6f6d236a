"""The cache service: a thin gRPC adapter over `cache.SemanticCache`."""
