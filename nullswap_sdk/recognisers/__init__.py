"""Face-identity encoders behind one registry (see ``registry.py``)."""
from . import builtin as _builtin  # noqa: F401  (registers the known recognisers)
from .registry import (
    RECOGNISERS,
    RecogniserConfig,
    available_recognisers,
    get_recogniser_config,
    list_recognisers,
    register_recogniser,
)

__all__ = ["RECOGNISERS", "RecogniserConfig", "available_recognisers", "get_recogniser_config", "list_recognisers",
           "register_recogniser"]
