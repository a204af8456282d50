"""The local control socket, server side: the line protocol, its operations and the change feed.

``proto`` is the shared vocabulary (errors, value and id parsing) that the client imports
too, so it must stay free of trio; ``ops`` holds one handler per operation against the view
of the daemon it declares (``DaemonView``); ``server`` reads lines, dispatches to ``ops`` and
streams ``watch`` events from ``feed``. Dependencies run server -> ops -> proto, never back.
Nothing is imported here, so that ``meshsyncd.client`` pays only for ``proto``.
"""
