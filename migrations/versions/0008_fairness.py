"""random groups per round and their sums; the job's tensor layout

Revision ID: 0008
Revises: 0006
Create Date: 2026-12-01 23:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0008"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "round_group",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("round_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("members", sa.JSON(), nullable=False),
        sa.Column("acc_key", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("acc_count", sa.Integer(), nullable=False),
        sa.Column("acc_providers", sa.JSON(), nullable=False),
        sa.Column("merged_into", sa.Integer(), nullable=True),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("loss_without", sa.Float(), nullable=True),
        sa.Column("loss_with", sa.Float(), nullable=True),
        sa.Column("excluded", sa.Boolean(), nullable=False),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True),
        sa.ForeignKeyConstraint(["round_id"], ["round.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("round_id", "index"),
    )
    with op.batch_alter_table("round_group", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_round_group_round_id"), ["round_id"], unique=False)
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(sa.Column("layout", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_column("layout")
    with op.batch_alter_table("round_group", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_round_group_round_id"))
    op.drop_table("round_group")
