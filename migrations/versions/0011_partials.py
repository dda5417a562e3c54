"""partials: checkpoints of each server process's partial sum of a collecting round

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 02:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_S = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "round_partial",
        sa.Column("id", _S(length=32), nullable=False),
        sa.Column("round_id", _S(length=32), nullable=False),
        sa.Column("group_index", sa.Integer(), nullable=True),
        sa.Column("key", _S(length=200), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("providers", sa.JSON(), nullable=False),
        sa.Column("sha256", _S(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["round_id"], ["round.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_round_partial_round_id"), "round_partial", ["round_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_round_partial_round_id"), table_name="round_partial")
    op.drop_table("round_partial")
