"""LSQ low-bit quantization-aware training with integer-only inference (the README's LSQ section)."""
