"""The layer under every other package: errors with their status kinds, the generation
vocabulary, model locations, the shared embedder and micro-batcher.

Nothing here imports grpc, nats, protobuf messages, the services or the CLI, so
`cache/`, `cascade/`, `services/` and `cmesh/` can all import it (the
import-linter contracts in pyproject.toml enforce this).
"""
