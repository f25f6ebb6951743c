"""SQS producer and worker loop (the distributed modes; empty until they land)."""
