"""The inference service: FastAPI app (``create_app``), API-key auth, hash-chained audit log, web viewer.

Sits on top of every other layer (io -> models -> explain -> serve) and is imported by nothing below it.
"""

from radiolens.serve.config import ServeSettings

__all__ = ["ServeSettings", "create_app"]


def create_app(settings: ServeSettings, hooks=None):
    from radiolens.serve.http.app import create_app as _create

    return _create(settings, hooks)
