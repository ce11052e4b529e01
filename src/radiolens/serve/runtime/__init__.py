"""The running service: start-up and shutdown (``Service``), ingest, inference, hooks, pool, metrics, monitoring.

May import ``serve.store``, never ``serve.http`` (tests/test_layers.py): the CLI runs predictions through it
without the web stack.
"""
