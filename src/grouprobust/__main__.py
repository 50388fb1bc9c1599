"""``python -m grouprobust``: the same command as the ``grouprobust`` script."""

from grouprobust.cli import main

main()
