"""``python -m meshctl`` runs the CLI."""

from meshctl.cli import main

main()
