"""Persistence: SQLAlchemy tables, queries, blob storage and migrations.

Owns: everything on disk and in the database except job directories (jobs/) and the model
cache (models/)."""
