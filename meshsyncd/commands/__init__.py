"""Click commands of the ``meshsyncd`` CLI, one module per area (``node``: init, id, peers)."""
