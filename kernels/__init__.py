"""Custom kernels, each beside its pure-PyTorch reference (installed as ``nullswap_sdk.kernels``)."""
