"""The node's configuration: one frozen :class:`Config` loaded from ``meshsyncd.toml``.

``loader`` reads and validates the file (``peers`` its ``[[peers]]`` tables), ``edit``
writes it (``init``, ``peers add/remove``), ``values`` parses single values (durations,
addresses, tier lists), ``text`` edits the TOML text in place so that ``peers add`` keeps the
operator's comments. The names below are the package's public face; import them from here.
"""

from __future__ import annotations

from . import edit, loader
from .edit import *  # noqa: F403 - the writers' public names are this package's
from .loader import *  # noqa: F403 - the loader's public names are this package's

__all__ = [*loader.__all__, *edit.__all__]
