"""Who owns what: ledger reads in `market.ledger`, pages in `market.ui`, visibility decided
in `market.services.access`, and no shipped package leaning on `tests/`."""

from __future__ import annotations

import ast
import re
from pathlib import Path

MARKET = Path(__file__).resolve().parents[2] / "market"


def _modules(under: str) -> list[Path]:
    return sorted((MARKET / under).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_services_do_not_import_the_pages() -> None:
    """No service imports `market.ui`: view-models live under `market/ui/`."""
    offenders = [
        p.name for p in _modules("services") if any(m.startswith("market.ui") for m in _imports(p))
    ]
    assert offenders == []


def test_postings_are_read_only_inside_the_ledger() -> None:
    """Only `market.ledger` (and the models defining them) touches `LedgerPosting`."""
    offenders = [
        str(p.relative_to(MARKET))
        for p in MARKET.rglob("*.py")
        if "LedgerPosting" in p.read_text() and p.parts[-2] not in ("ledger", "models")
    ]
    assert offenders == []


# A role or ownership test spelled out: what `access.py` decides for everyone else.
_DECISION = re.compile(r'\.role [!=]= "admin"|buyer_id [!=]= (viewer|account)\.id')


def test_visibility_is_decided_in_access_only() -> None:
    """Pages, routes and the money services ask `services.access` who sees what."""
    watched = [
        *_modules("ui"),
        *_modules("api/routes"),
        *(MARKET / "services" / f"{m}.py"
          for m in ("trust", "views", "receipts", "payouts", "privacy", "jobs")),
    ]  # fmt: skip
    offenders = [str(p.relative_to(MARKET)) for p in watched if _DECISION.search(p.read_text())]
    assert offenders == []


def test_shipped_packages_do_not_import_the_tests() -> None:
    """`market`, `agents`, `crypto` and the load benchmark run without the tests folder."""
    root = MARKET.parent
    modules = [p for pkg in ("market", "agents", "crypto") for p in (root / pkg).rglob("*.py")]
    modules.append(root / "bench" / "load.py")
    offenders = [
        str(p.relative_to(root))
        for p in sorted(modules)
        if any(m == "tests" or m.startswith("tests.") for m in _imports(p))
    ]
    assert offenders == []
