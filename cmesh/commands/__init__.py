"""Command groups of the `cmesh` CLI."""
