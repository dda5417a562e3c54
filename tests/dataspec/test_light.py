"""The wire package stays light: an agent reading it loads no web framework, database or torch."""

from __future__ import annotations

import subprocess
import sys

import crypto
import dataspec.jobs


def test_importing_dataspec_loads_no_server_or_torch() -> None:
    """`import dataspec` pulls in none of fastapi, sqlmodel, sqlalchemy or torch."""
    code = (
        "import sys, dataspec, dataspec.jobs, dataspec.views, dataspec.states\n"
        "import dataspec.money, dataspec.records\n"
        "heavy = ('fastapi', 'sqlmodel', 'sqlalchemy', 'torch')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_the_default_preset_is_the_crypto_default() -> None:
    """A job that names no preset gets the one the crypto library uses by default."""
    assert dataspec.jobs.DEFAULT_PRESET_ID == crypto.DEFAULT_PRESET_ID
