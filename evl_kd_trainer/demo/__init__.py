"""The embedded default (``make demo``): starting checkpoints, figures and the report of the demo run."""
