"""Search strategies over tri-segment configs, the shared evaluator, top-k and selection."""
