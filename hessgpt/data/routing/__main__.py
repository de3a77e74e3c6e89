"""`python -m hessgpt.data.routing ...`: the same command as `hessgpt data routing ...`."""

from hessgpt.data.routing.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
