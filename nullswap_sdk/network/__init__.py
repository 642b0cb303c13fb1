"""The NullSwap cloaking network: architecture, discriminator, and the ``CloakMethod`` wrapper.

Shared by training (``training/``), export (``export/``) and the SDK (``Cloaker``).
"""
from .cloaker import NetworkCloaker, load_network, save_network
from .discriminator import DiscriminatorConfig, PatchDiscriminator
from .model import NetworkConfig, NullSwapNet, count_flops, count_params, working_template

__all__ = ["NetworkConfig", "NullSwapNet", "NetworkCloaker", "PatchDiscriminator", "DiscriminatorConfig",
           "save_network", "load_network", "count_params", "count_flops", "working_template"]
