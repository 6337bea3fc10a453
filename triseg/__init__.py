"""triseg: tri-segment activation approximation for INT8 CIFAR-10 CNNs, and LSQ low-bit QAT."""

__version__ = "0.1.0"
