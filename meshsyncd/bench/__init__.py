"""Benchmarks that print figures (targets live here, not in tests), and the node processes
(``nodeproc``) that the benches, the demo and the integration tests start.

The ``bench`` click group lives in ``commands`` so that importing ``nodeproc`` does not load
every bench and the engine with it.
"""
