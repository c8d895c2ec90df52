"""Data: chat templates, ECGInstruct loading and the dual-view collator."""
