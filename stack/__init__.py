"""The embedded stack: Temporal dev server, the lab's AWS, worker and webhook on one machine."""
