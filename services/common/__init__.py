"""Wiring shared by every service: gRPC server lifecycle, health, metrics, NATS."""
