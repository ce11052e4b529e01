"""The HTTP face of the service: FastAPI app, routers, schemas, middleware, security headers, viewer, server.

The top of ``serve``: may import ``serve.store`` and ``serve.runtime``; neither imports it (tests/test_layers.py).
"""
