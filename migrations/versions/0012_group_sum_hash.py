"""group sum hash: the SHA-256 a round group's sum blob had when the server wrote it

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 22:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("round_group") as batch:
        batch.add_column(
            sa.Column("acc_sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("round_group") as batch:
        batch.drop_column("acc_sha256")
