"""Where approximation hurts: activation dumps, variance and percentile statistics, layer sensitivity."""
