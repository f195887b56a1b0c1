"""The core's own commands (feature author's journey, audit log, lineage), each module exporting a typer ``app``."""
