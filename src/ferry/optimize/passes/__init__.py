"""Graph passes, one per module. Each exposes `run(model) -> bool`: rewrite in place, say whether it changed."""
