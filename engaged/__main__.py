"""`python -m engaged`: the CLI."""

from engaged.cli import main

main()
