"""privacy: the ε each provider reports having spent on a job

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 22:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "privacy_report",
        sa.Column("job_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("provider_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("epsilon", sa.Float(), nullable=False),
        sa.Column("delta", sa.Float(), nullable=False),
        sa.Column("reported_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["job.id"]),
        sa.ForeignKeyConstraint(["provider_id"], ["account.id"]),
        sa.PrimaryKeyConstraint("job_id", "provider_id"),
    )


def downgrade() -> None:
    op.drop_table("privacy_report")
