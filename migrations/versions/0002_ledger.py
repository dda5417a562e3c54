"""ledger: accounts, hash-chained journal, postings; immutability and balance triggers

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 11:30:00

The triggers enforce `market.ledger`'s rules in the database itself (they do not show in
metadata comparisons, so the drift test ignores them):

- UPDATE and DELETE on the three ledger tables are refused on both backends;
- a posting is never zero, and never added to a transaction already recorded;
- a transaction's postings number at least two and sum to zero: on PostgreSQL a deferred
  constraint trigger checks it at commit; on SQLite the transaction row, inserted after its
  postings, checks them in a BEFORE INSERT trigger.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("ledger_account", "ledger_txn", "ledger_posting")


def _s(n: int) -> sqlmodel.sql.sqltypes.AutoString:
    return sqlmodel.sql.sqltypes.AutoString(length=n)


def upgrade() -> None:
    op.create_table(
        "ledger_account",
        sa.Column("name", _s(100), nullable=False),
        sa.Column("kind", _s(16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    with op.batch_alter_table("ledger_account") as batch_op:
        batch_op.create_index(batch_op.f("ix_ledger_account_kind"), ["kind"], unique=False)
    op.create_table(
        "ledger_txn",
        sa.Column("id", _s(32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("key", _s(200), nullable=False),
        sa.Column("kind", _s(16), nullable=False),
        sa.Column("job_id", _s(32), nullable=True),
        sa.Column("currency", _s(3), nullable=False),
        sa.Column("memo", _s(500), nullable=False),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("prev_hash", _s(64), nullable=False),
        sa.Column("hash", _s(64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("seq"),
        sa.UniqueConstraint("key"),
        sa.UniqueConstraint("hash"),
    )
    with op.batch_alter_table("ledger_txn") as batch_op:
        batch_op.create_index(batch_op.f("ix_ledger_txn_kind"), ["kind"], unique=False)
        batch_op.create_index(batch_op.f("ix_ledger_txn_job_id"), ["job_id"], unique=False)
    op.create_table(
        "ledger_posting",
        sa.Column("id", _s(32), nullable=False),
        sa.Column("txn_id", sa.String(32), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("account", _s(100), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["account"], ["ledger_account.name"]),
        sa.ForeignKeyConstraint(
            ["txn_id"], ["ledger_txn.id"], deferrable=True, initially="DEFERRED"
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("ledger_posting") as batch_op:
        batch_op.create_index(batch_op.f("ix_ledger_posting_txn_id"), ["txn_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_ledger_posting_account"), ["account"], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        _postgres_triggers()
    else:
        _sqlite_triggers()


def _sqlite_triggers() -> None:
    for table in TABLES:
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, 'ledger is append-only: {action} on {table}'); END"
            )
    op.execute(
        "CREATE TRIGGER ledger_posting_checks BEFORE INSERT ON ledger_posting BEGIN "
        "SELECT RAISE(ABORT, 'ledger: a posting is never zero') WHERE NEW.amount = 0; "
        "SELECT RAISE(ABORT, 'ledger: transaction already recorded') "
        "WHERE EXISTS (SELECT 1 FROM ledger_txn WHERE id = NEW.txn_id); END"
    )
    op.execute(
        "CREATE TRIGGER ledger_txn_balanced BEFORE INSERT ON ledger_txn BEGIN "
        "SELECT RAISE(ABORT, 'ledger: a transaction needs at least two postings') "
        "WHERE (SELECT COUNT(*) FROM ledger_posting WHERE txn_id = NEW.id) < 2; "
        "SELECT RAISE(ABORT, 'ledger: postings do not sum to zero') "
        "WHERE (SELECT SUM(amount) FROM ledger_posting WHERE txn_id = NEW.id) <> 0; END"
    )


def _postgres_triggers() -> None:
    op.execute(
        "CREATE OR REPLACE FUNCTION ledger_refuse_change() RETURNS trigger AS $$ BEGIN "
        "RAISE EXCEPTION 'ledger is append-only: % on %', TG_OP, TG_TABLE_NAME; END $$ "
        "LANGUAGE plpgsql"
    )
    for table in TABLES:
        op.execute(
            f"CREATE TRIGGER {table}_immutable BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change()"
        )
    op.execute(
        "CREATE OR REPLACE FUNCTION ledger_posting_checks() RETURNS trigger AS $$ BEGIN "
        "IF NEW.amount = 0 THEN RAISE EXCEPTION 'ledger: a posting is never zero'; END IF; "
        "IF EXISTS (SELECT 1 FROM ledger_txn WHERE id = NEW.txn_id) THEN "
        "RAISE EXCEPTION 'ledger: transaction % already recorded', NEW.txn_id; END IF; "
        "RETURN NEW; END $$ LANGUAGE plpgsql"
    )
    op.execute(
        "CREATE TRIGGER ledger_posting_checks BEFORE INSERT ON ledger_posting "
        "FOR EACH ROW EXECUTE FUNCTION ledger_posting_checks()"
    )
    # Runs at commit, once every posting and the transaction row are in.
    op.execute(
        "CREATE OR REPLACE FUNCTION ledger_txn_balanced() RETURNS trigger AS $$ "
        "DECLARE tid text; n integer; total numeric; BEGIN "
        "IF TG_TABLE_NAME = 'ledger_txn' THEN tid := NEW.id; ELSE tid := NEW.txn_id; END IF; "
        "SELECT COUNT(*), COALESCE(SUM(amount), 0) INTO n, total "
        "FROM ledger_posting WHERE txn_id = tid; "
        "IF n < 2 THEN RAISE EXCEPTION "
        "'ledger: transaction % needs at least two postings', tid; END IF; "
        "IF total <> 0 THEN RAISE EXCEPTION "
        "'ledger: postings of % sum to %, not zero', tid, total; END IF; "
        "RETURN NULL; END $$ LANGUAGE plpgsql"
    )
    for table in ("ledger_txn", "ledger_posting"):
        op.execute(
            f"CREATE CONSTRAINT TRIGGER {table}_balanced AFTER INSERT ON {table} "
            "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_txn_balanced()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_immutable ON {table}")
    op.drop_table("ledger_posting")
    op.drop_table("ledger_txn")
    op.drop_table("ledger_account")
