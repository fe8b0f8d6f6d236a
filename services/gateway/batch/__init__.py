"""OpenAI's Batch API on the mesh: files and batch state in JetStream (`store`), lines
run through the orchestrator as the broker's batch class (`runner`)."""
