"""sums name their providers; envelopes are not kept; one pending payout per payable

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 22:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("round", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("acc_providers", sa.JSON(), nullable=False, server_default="[]")
        )
    with op.batch_alter_table("submission", schema=None) as batch_op:
        batch_op.alter_column("envelope_key", existing_type=sa.String(length=200), nullable=True)
    # Rounds summed before this revision: their submitters are exactly who is in the sum.
    rounds = sa.table("round", sa.column("id", sa.String), sa.column("acc_providers", sa.JSON))
    subs = sa.table(
        "submission", sa.column("round_id", sa.String), sa.column("provider_id", sa.String)
    )
    conn = op.get_bind()
    members: dict[str, list[str]] = {}
    for round_id, provider_id in conn.execute(sa.select(subs.c.round_id, subs.c.provider_id)):
        members.setdefault(round_id, []).append(provider_id)
    for round_id, providers in members.items():
        conn.execute(rounds.update().where(rounds.c.id == round_id).values(acc_providers=providers))
    # Envelopes are deleted from the blob store at startup; no row points at one any more.
    conn.execute(sa.text("UPDATE submission SET envelope_key = NULL"))
    with op.batch_alter_table("payout", schema=None) as batch_op:
        batch_op.create_index(
            "uq_payout_pending",
            ["provider_id", "job_id", "currency"],
            unique=True,
            sqlite_where=sa.text("status = 'pending'"),
            postgresql_where=sa.text("status = 'pending'"),
        )


def downgrade() -> None:
    with op.batch_alter_table("payout", schema=None) as batch_op:
        batch_op.drop_index("uq_payout_pending")
    with op.batch_alter_table("submission", schema=None) as batch_op:
        batch_op.alter_column("envelope_key", existing_type=sa.String(length=200), nullable=False)
    with op.batch_alter_table("round", schema=None) as batch_op:
        batch_op.drop_column("acc_providers")
