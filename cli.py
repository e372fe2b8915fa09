"""Thin entry point: `python cli.py ...` does what the `xsearch` console script does."""

from xsearch.cli import main

if __name__ == "__main__":
    main()
