"""The NATS JetStream batching broker between the gateway and the vLLM backends."""
