"""Files keep their validation report and the kind of data they hold (sft, preference, text).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("files") as batch:
        batch.add_column(sa.Column("kind", sa.String(16)))
        batch.add_column(sa.Column("report", sa.JSON))


def downgrade() -> None:
    with op.batch_alter_table("files") as batch:
        batch.drop_column("report")
        batch.drop_column("kind")
