"""The mesh: what makes a set of two-node links behave as one connected graph.

``relay`` forwards fresh URGENT/HIGH/NORMAL versions and tells the other peers when a pull
changed our state; ``barrier`` spreads ``sync --now`` along sessions (SPEC.md 4.1);
``repair`` finds and fetches what differs when digests disagree (SPEC.md 4.2). Each is a
small state object with pure decisions, driven by the daemon and the sessions; none of
them touches a socket, and none imports the node layer (the node imports them).
"""
