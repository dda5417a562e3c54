"""Run benchmarks: `python -m bench NAME` for one, `python -m bench all` for every one."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = ("crypto", "matching", "round", "load", "privacy", "fairness", "tasks", "big", "scale")
# Benchmarks that take options after their name (`python -m bench big --params 2000000`).
WITH_OPTIONS = ("big", "scale")


def main(argv: list[str]) -> int:
    if argv[:1] and argv[0] in WITH_OPTIONS:
        importlib.import_module(f"bench.{argv[0]}").main(argv[1:])
        return 0
    if len(argv) != 1 or argv[0] in {"-h", "--help"}:
        print(f"usage: python -m bench {{{'|'.join(BENCHMARKS)}|all}} (big takes --params N)")
        return 2
    names = BENCHMARKS if argv[0] == "all" else (argv[0],)
    for name in names:
        if name not in BENCHMARKS:
            print(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)} or all")
            return 2
        try:
            module = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError as exc:
            if argv[0] == "all" and exc.name == f"bench.{name}":
                print(f"[skip] bench {name}: not present in this checkout")
                continue
            raise
        module.main()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
