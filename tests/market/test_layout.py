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


ROOT = MARKET.parent
# Where a commit may stand without a word: the unit-of-work helper and the request's own
# session (`market.db`, `market.api.deps`), and the job lock, which ends the read
# transaction before it reads the job afresh (`market.services.locks`).
_COMMITTERS = {"market/db.py", "market/api/deps.py", "market/services/locks.py"}


def test_no_module_of_market_agents_or_crypto_is_over_400_lines() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for top in ("market", "agents", "crypto", "dataspec")
        for p in (ROOT / top).rglob("*.py")
        if (n := p.read_text().count("\n")) > 400
    }
    assert long == {}


def test_every_commit_outside_the_unit_of_work_says_why() -> None:
    """Services commit through `market.db.unit_of_work` at their entry points; the few
    commits elsewhere (a Stripe call between steps, a counter that stands alone) carry a
    comment on the same line saying why."""
    silent = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in MARKET.rglob("*.py")
        if str(p.relative_to(ROOT)) not in _COMMITTERS
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if re.search(r"\.commit\(\)", line) and "#" not in line.split(".commit()", 1)[1]
    ]
    assert silent == []
