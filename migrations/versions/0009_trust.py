"""trust: the transparency log's leaves, accounts' identity keys, the hash of each round's sum

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_S = sqlmodel.sql.sqltypes.AutoString

# Append-only, like the journal (migration 0002): the log's leaves are never changed.
_SQLITE = [
    """CREATE TRIGGER log_leaf_no_update BEFORE UPDATE ON log_leaf
       BEGIN SELECT RAISE(ABORT, 'log leaves are never updated'); END""",
    """CREATE TRIGGER log_leaf_no_delete BEFORE DELETE ON log_leaf
       BEGIN SELECT RAISE(ABORT, 'log leaves are never deleted'); END""",
]
_PG = [
    """CREATE OR REPLACE FUNCTION log_leaf_immutable() RETURNS trigger AS $$
       BEGIN RAISE EXCEPTION 'log leaves are never updated or deleted'; END
       $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER log_leaf_immutable BEFORE UPDATE OR DELETE ON log_leaf
       FOR EACH ROW EXECUTE FUNCTION log_leaf_immutable()""",
]


def upgrade() -> None:
    op.create_table(
        "log_leaf",
        sa.Column("index", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("leaf_hash", _S(length=64), nullable=False),
        sa.Column("kind", _S(length=32), nullable=False),
        sa.Column("job_id", _S(length=32), nullable=True),
        sa.Column("round", sa.Integer(), nullable=True),
        sa.Column("account_id", _S(length=32), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("index"),
    )
    op.create_index(op.f("ix_log_leaf_kind"), "log_leaf", ["kind"], unique=False)
    op.create_index(op.f("ix_log_leaf_job_id"), "log_leaf", ["job_id"], unique=False)
    op.create_index(op.f("ix_log_leaf_account_id"), "log_leaf", ["account_id"], unique=False)
    op.create_table(
        "identity_key",
        sa.Column("account_id", _S(length=32), nullable=False),
        sa.Column("public_key", _S(length=64), nullable=False),
        sa.Column("fingerprint", _S(length=64), nullable=False),
        sa.Column("registered_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["account.id"]),
        sa.PrimaryKeyConstraint("account_id"),
        sa.UniqueConstraint("fingerprint"),
    )
    op.add_column("round", sa.Column("acc_sha256", _S(length=64), nullable=True))
    for stmt in _PG if op.get_bind().dialect.name == "postgresql" else _SQLITE:
        op.execute(stmt)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS log_leaf_immutable ON log_leaf")
        op.execute("DROP FUNCTION IF EXISTS log_leaf_immutable()")
    op.drop_column("round", "acc_sha256")
    op.drop_table("identity_key")
    op.drop_index(op.f("ix_log_leaf_account_id"), table_name="log_leaf")
    op.drop_index(op.f("ix_log_leaf_job_id"), table_name="log_leaf")
    op.drop_index(op.f("ix_log_leaf_kind"), table_name="log_leaf")
    op.drop_table("log_leaf")
