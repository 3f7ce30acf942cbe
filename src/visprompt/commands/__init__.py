"""Subcommands of the ``visprompt`` CLI (the only modules besides ``cli`` that print)."""
