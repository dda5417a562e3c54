"""limits: counted events per address (failed keys, registrations), uploads in flight

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 22:16:19.332514
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rate_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("scope", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("subject", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("rate_event", schema=None) as batch_op:
        batch_op.create_index("ix_rate_event_scope_at", ["scope", "at"], unique=False)
        batch_op.create_index(
            "ix_rate_event_scope_subject_at", ["scope", "subject", "at"], unique=False
        )

    op.create_table(
        "upload_claim",
        sa.Column("job_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("round_number", sa.Integer(), nullable=False),
        sa.Column("provider_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("token", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "round_number", "provider_id"),
    )


def downgrade() -> None:
    op.drop_table("upload_claim")
    with op.batch_alter_table("rate_event", schema=None) as batch_op:
        batch_op.drop_index("ix_rate_event_scope_subject_at")
        batch_op.drop_index("ix_rate_event_scope_at")
    op.drop_table("rate_event")
