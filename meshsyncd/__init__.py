"""meshsyncd: a peer-to-peer mesh sync daemon for AI agents' memory items."""

from __future__ import annotations

__version__ = "0.1.0"
