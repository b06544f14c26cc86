"""The delivery algorithm, free of Dagster: read a bounded batch from the smallest sink checkpoint,
mask it, store what failed, map and write it into each sink (retrying a sink that is down), move each
sink's checkpoint with its data, and let the source free the log every sink has passed.

`steps.py` holds the steps; `session.py` runs them for one batch with the sinks in parallel and
the connections kept between batches; `loop.py` repeats batches until a run's end condition. The
Dagster ops (defs/replication/) only call these and report what they did.
"""
