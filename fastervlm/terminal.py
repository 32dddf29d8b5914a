"""Printing rich tables so that logs get them whole."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def print_table(table: Table) -> None:
    """Print at the table's natural width when stdout is not a terminal.

    rich sizes a console that writes to a pipe or a file at 80 columns (or $COLUMNS) and folds or truncates
    wider tables ("5728…"), which makes them useless in logs and Slurm output; a terminal keeps its own width.
    """
    console = Console()
    if not console.is_terminal:
        natural = console.measure(table, options=console.options.update_width(1_000_000)).maximum
        console = Console(width=natural)
    console.print(table)
