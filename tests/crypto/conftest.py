"""Keys are cheap but not free: one buyer (and one stranger) per test session."""

from __future__ import annotations

import pytest

from crypto import BuyerKeys, PublicContext


@pytest.fixture(scope="session")
def keys() -> BuyerKeys:
    return BuyerKeys.generate()


@pytest.fixture(scope="session")
def public(keys: BuyerKeys) -> PublicContext:
    # What the server and providers hold: parsed from the exported bytes only.
    return PublicContext.from_bytes(keys.public_context().to_bytes())


@pytest.fixture(scope="session")
def other_public() -> PublicContext:
    return BuyerKeys.generate().public_context()
