"""Alembic migrations of the service database, shipped as package data (run by ``radiolens db upgrade``)."""
