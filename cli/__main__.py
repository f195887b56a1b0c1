"""``python -m cli`` runs the ``mlplatform`` command."""

from cli import main

main()
