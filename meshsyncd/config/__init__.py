"""The node's configuration: one frozen :class:`Config` loaded from ``meshsyncd.toml``.

``loader`` reads and validates the file, ``values`` parses single values (durations,
addresses, tier lists), ``text`` edits the TOML text in place so that ``peers add`` keeps the
operator's comments. The names below are the package's public face; import them from here.
"""

from __future__ import annotations

from . import loader
from .loader import *  # noqa: F403 - the loader's public names are this package's

__all__ = loader.__all__
