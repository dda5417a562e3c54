"""How the dashboard writes numbers, money and times for people.

Money stays an integer of minor units until the last moment: `money(5400, "usd")` is
"USD 54.00", computed with integer arithmetic only (never a float).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from markupsafe import Markup

# ISO 4217 exponents that differ from 2 (the common case).
_EXPONENT = {
    **dict.fromkeys(
        ("bif", "clp", "djf", "gnf", "isk", "jpy", "kmf", "krw", "pyg", "rwf", "ugx", "vnd",
         "vuv", "xaf", "xof", "xpf"), 0),
    **dict.fromkeys(("bhd", "iqd", "jod", "kwd", "lyd", "omr", "tnd"), 3),
}  # fmt: skip


def money(cents: int | None, currency: str) -> str:
    """`cents` minor units of `currency` as e.g. "USD 1,234.50" (an em dash for None)."""
    if cents is None:
        return "—"
    exponent = _EXPONENT.get(currency.lower(), 2)
    sign = "−" if cents < 0 else ""
    whole, frac = divmod(abs(int(cents)), 10**exponent)
    text = f"{whole:,}" + (f".{frac:0{exponent}d}" if exponent else "")
    return f"{sign}{currency.upper()} {text}"


def money_axis(currency: str) -> Callable[[float], str]:
    """A chart axis formatter for values in minor units (tick positions may be fractional)."""
    return lambda value: money(round(value), currency)


def when(at: datetime | None) -> Markup:
    """A UTC timestamp to the second, the way the API and logs speak, as a `<time>`."""
    if at is None:
        return Markup("—")
    utc = at.astimezone(UTC)
    return Markup('<time datetime="{}">{}</time>').format(
        utc.isoformat(), utc.strftime("%Y-%m-%d %H:%M:%S UTC")
    )


def percent(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value * 100:.{digits}f}%"


def number(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def short(identifier: str | None, keep: int = 12) -> str:
    """Ids and hashes cut for tables; the full value goes in a `title` attribute."""
    if identifier is None:
        return "—"
    return identifier if len(identifier) <= keep else identifier[:keep] + "…"
