"""Evaluations (a tuneserve extension): models answer a dataset file and are scored.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "evaluations",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("project", sa.String(128), nullable=False, index=True),
        sa.Column("status", sa.String(32), nullable=False, index=True),
        sa.Column("models", sa.JSON, nullable=False),
        sa.Column("dataset_file", sa.String(64), nullable=False),
        sa.Column("judge_model", sa.String(1024)),
        sa.Column("judge_base_url", sa.String(2048)),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("metadata", sa.JSON),
        sa.Column("fine_tuning_job_id", sa.String(64), unique=True),
        sa.Column("progress_done", sa.Integer, nullable=False),
        sa.Column("progress_total", sa.Integer, nullable=False),
        sa.Column("summary", sa.JSON),
        sa.Column("error", sa.JSON),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("started_at", sa.BigInteger),
        sa.Column("finished_at", sa.BigInteger),
        sa.Column("worker_id", sa.String(256)),
        sa.Column("heartbeat_at", sa.Float),
    )


def downgrade() -> None:
    op.drop_table("evaluations")
