"""Alembic migrations, shipped inside the package so `campaign db upgrade` works from any install."""
