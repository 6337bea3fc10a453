"""Hardware cost of a student: multiplies, selects and skips at every conv/linear input, and energy."""
