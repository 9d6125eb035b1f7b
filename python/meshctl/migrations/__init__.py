"""Alembic migrations for the control-plane database (shipped in the wheel)."""
