"""``python -m nullswap_sdk.cli`` runs the ``nullswap`` command."""
import sys

from ._main import main

sys.exit(main())
