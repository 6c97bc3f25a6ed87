"""``python -m gradlab``: the gradlab command line."""

from gradlab.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
