"""The tests' throwaway PostgreSQL cluster: `bench.postgres` (the benchmarks start the same
one), named here for the fixtures."""

from __future__ import annotations

from bench.postgres import (
    PG_BIN,
    create_database,
    drop_database,
    throwaway_cluster,
    with_database,
)

__all__ = ["PG_BIN", "create_database", "drop_database", "throwaway_cluster", "with_database"]
