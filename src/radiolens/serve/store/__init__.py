"""What the service keeps: database engine and migrations, tables, the hash-chained audit log, API keys, state folder.

Imports nothing from ``serve.runtime`` or ``serve.http`` (tests/test_layers.py), so the CLI's ``db``/``users``/
``audit`` commands and the migrations work without the web stack or a model.
"""
