"""The running node and its links: daemon, peer sessions, TLS transport, systemd notify.

``daemon`` owns the nursery and the node's state; ``links`` dials and accepts peers;
``session`` is one peer link and ``lanes`` its pull and answer loops; ``transport`` is TLS
and identity checks. Nothing is imported here: each module is imported where it is used.
"""
