"""LSQ low-bit quantization-aware training with integer-only inference (see INTEGRATION.md)."""
