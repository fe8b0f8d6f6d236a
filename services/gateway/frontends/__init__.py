"""The gateway's doors: each translates its wire to a `Question`, runs admission and the
orchestrator, and translates the events back (`grpc` for Ask/AskStream, `openai` for
the OpenAI-compatible HTTP API)."""
