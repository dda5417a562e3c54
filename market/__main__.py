"""`python -m market [--data-dir DIR] [--host H] [--port P]`: run the service."""

from __future__ import annotations

import argparse

from market.server import serve


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m market", description=__doc__)
    parser.add_argument("--data-dir", default=".pollen")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    serve(
        data_dir=args.data_dir,
        host=args.host,
        port=args.port,
        database_url=args.database_url,
        workers=args.workers,
    )


if __name__ == "__main__":
    main()
