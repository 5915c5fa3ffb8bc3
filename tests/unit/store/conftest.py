"""Store tests use the database fixtures of tests/unit/conftest.py (SQLite and PostgreSQL)."""
