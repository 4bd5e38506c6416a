"""Domain models and rules: pure Python, no I/O."""
