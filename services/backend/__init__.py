"""The generation backend: vLLM AsyncLLM behind gRPC (run as the small or the large tier)."""
