"""``python -m nephoscope`` runs the CLI."""

from nephoscope.cli import main

main()
