"""Training loops: small, readable, resumable (progress bar, periodic checkpoints, exact resume)."""
