"""Built-in files (the demo's config)."""
