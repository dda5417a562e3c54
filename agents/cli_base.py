"""What the `pollen` commands share: the consoles, the common options, one-line errors
(`friendly`), the API client from `--server` / `--api-key`, logging and agent-tagged lines."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from agents.data import DataError

if TYPE_CHECKING:
    from agents.client import Backoff, PollenClient

# Soft wrap: a message stays one line in a log or a pipe (rich would cut it at 80 columns).
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

DEFAULT_SERVER = "http://127.0.0.1:8000"
DEFAULT_KEYS = Path.home() / ".pollen" / "buyer.key"

ServerOpt = Annotated[
    str, typer.Option("--server", envvar="POLLEN_SERVER", help="Marketplace base URL.")
]
ApiKeyOpt = Annotated[
    str,
    typer.Option("--api-key", envvar="POLLEN_API_KEY", help="Your API key (or POLLEN_API_KEY)."),
]
KeysOpt = Annotated[
    Path,
    typer.Option("--keys", envvar="POLLEN_KEYS", help="Buyer secret-key file (mode 0600)."),
]

RetryForOpt = Annotated[
    float,
    typer.Option(
        "--retry-for",
        envvar="POLLEN_RETRY_FOR",
        help="Seconds to keep retrying while the server is unreachable, then give up.",
    ),
]
MaxRetryWaitOpt = Annotated[
    float, typer.Option("--max-retry-wait", help="Longest wait between two retries, seconds.")
]
NoProgressOpt = Annotated[
    bool,
    typer.Option(
        "--no-progress",
        help="No live bars, even on a terminal: one plain line per event (as in a pipe).",
    ),
]

F = TypeVar("F", bound=Callable[..., Any])


def friendly(fn: F) -> F:
    """Turn the errors a user can fix into one clear line and exit status 1."""
    from agents.client import ApiError, ServerUnreachableError
    from crypto import PollenError

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ApiError as exc:
            err_console.print(f"[red]error:[/red] {escape(str(exc))}")
        except ServerUnreachableError as exc:
            err_console.print(
                f"[red]error:[/red] {escape(str(exc))}; state is saved, run again to resume"
            )
        except (PollenError, DataError, FileNotFoundError, ValueError) as exc:
            err_console.print(f"[red]error:[/red] {escape(str(exc))}")
        except KeyboardInterrupt:
            err_console.print("interrupted; state is saved, run the same command to resume")
        raise typer.Exit(1)

    return wrapper  # type: ignore[return-value]


def api_client(server: str, api_key: str | None) -> PollenClient:
    from agents.client import PollenClient

    if not api_key:
        raise ValueError("no API key: pass --api-key or set POLLEN_API_KEY")
    return PollenClient(server, api_key)


def retrying(
    retry_for: float, poll: float, max_retry_wait: float, notify: Callable[[str], None]
) -> Backoff:
    """The `--retry-for` / `--max-retry-wait` policy: the first retry after one poll (at
    most the longest wait), `notify` told when an outage starts and ends."""
    from agents.client import Backoff

    return Backoff(
        give_up_after_s=retry_for,
        first_wait_s=min(poll, max_retry_wait),
        max_wait_s=max_retry_wait,
        notify=notify,
    )


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def say_as(name: str | None, message: str) -> None:
    # Escaped: "[provider-0]" or an "[Errno 111]" in a message would be eaten as markup.
    console.print(escape(f"[{name}] {message}" if name else message), highlight=False)


def parse_classes(text: str | None) -> list[int] | None:
    if not text:
        return None
    if "-" in text and "," not in text:
        lo, hi = text.split("-", 1)
        return list(range(int(lo), int(hi) + 1))
    return [int(c) for c in text.split(",")]
