"""Model-specific knowledge: loading, per-architecture adapters and feature capture."""
