"""cascade-mesh command line and shared helpers."""
