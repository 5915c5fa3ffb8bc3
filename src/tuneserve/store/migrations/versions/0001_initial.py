"""The initial schema: api keys, files, jobs, job events, checkpoints.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _ids():
    return [
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
    ]


def upgrade() -> None:
    op.create_table(
        "api_keys",
        *_ids(),
        sa.Column("project", sa.String(128), nullable=False, index=True),
        sa.Column("key_hash", sa.String(128), nullable=False, unique=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "files",
        *_ids(),
        sa.Column("project", sa.String(128), nullable=False, index=True),
        sa.Column("filename", sa.String(1024), nullable=False),
        sa.Column("purpose", sa.String(64), nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("status_details", sa.Text),
        sa.Column("format", sa.String(32)),
        sa.Column("n_examples", sa.Integer),
        sa.Column("deleted", sa.Boolean, nullable=False),
    )
    op.create_table(
        "jobs",
        *_ids(),
        sa.Column("project", sa.String(128), nullable=False, index=True),
        sa.Column("model", sa.String(1024), nullable=False),
        sa.Column("training_file", sa.String(64), nullable=False),
        sa.Column("validation_file", sa.String(64)),
        sa.Column("status", sa.String(32), nullable=False, index=True),
        sa.Column("hyperparameters", sa.JSON, nullable=False),
        sa.Column("method", sa.JSON, nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("suffix", sa.String(64)),
        sa.Column("seed", sa.BigInteger, nullable=False),
        sa.Column("metadata", sa.JSON),
        sa.Column("fine_tuned_model", sa.String(1024)),
        sa.Column("trained_tokens", sa.BigInteger),
        sa.Column("error", sa.JSON),
        sa.Column("result_files", sa.JSON, nullable=False),
        sa.Column("estimated_finish", sa.BigInteger),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("started_at", sa.BigInteger),
        sa.Column("finished_at", sa.BigInteger),
        sa.Column("idempotency_key", sa.String(256), index=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("runner_pid", sa.Integer),
        sa.Column("events_offset", sa.BigInteger, nullable=False),
        sa.Column("last_step", sa.Integer, nullable=False),
        sa.Column("total_steps", sa.Integer),
        sa.Column("step_time_s", sa.Float),
    )
    op.create_table(
        "job_events",
        *_ids(),
        sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("data", sa.JSON),
    )
    op.create_table(
        "checkpoints",
        *_ids(),
        sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("step_number", sa.Integer, nullable=False),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("path", sa.String(2048), nullable=False),
        sa.Column("fine_tuned_model_checkpoint", sa.String(1024), nullable=False),
    )


def downgrade() -> None:
    for table in ("checkpoints", "job_events", "jobs", "files", "api_keys"):
        op.drop_table(table)
