"""Semantic cache library: embedder, per-namespace FAISS index, verifier, log.

Nothing here imports grpc or nats' service adapters; the transport lives in
`services/cache`.
"""
