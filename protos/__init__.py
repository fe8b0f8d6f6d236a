"""gRPC contracts of every cascade-mesh service and their generated Python."""
