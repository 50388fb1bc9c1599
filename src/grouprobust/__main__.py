"""``python -m grouprobust``: the command line."""

from grouprobust.cli import main

main()
