"""`fastervlm eval run|cells`: the grid runner's command line (lmms-eval is imported only when a grid runs)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fastervlm.cli_args import add_threads
from fastervlm.eval import videoqa_cli


def add_parser(commands: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """Adds `eval` and returns its subcommands, so other eval tools can hang theirs there too."""
    evaluate = commands.add_parser("eval", help="run a models x methods x ratios grid through lmms-eval")
    kinds = evaluate.add_subparsers(dest="eval", required=True)
    config_help = "a grid YAML (see configs/), or 'default': the embedded tiny grid that needs no downloads"
    r = kinds.add_parser("run", help="run every unfinished cell (finished ones are skipped), or one with --cell")
    r.add_argument("config", nargs="?", default="default", help=config_help)
    r.add_argument("--out", type=Path, help="output folder; default: results/<grid name>")
    r.add_argument("--cell", type=int, help="run only this cell (0-based index, as `fastervlm eval cells` lists)")
    add_threads(r)
    r.set_defaults(func=run_grid)
    c = kinds.add_parser("cells", help="list the grid's cells, one 'INDEX<TAB>NAME' per line")
    c.add_argument("config", nargs="?", default="default", help=config_help)
    c.add_argument("--count", action="store_true", help="print only the number of cells (for a Slurm --array)")
    c.set_defaults(func=list_cells)
    videoqa_cli.add_parser(kinds)
    return kinds


def output_folder(config_name: str, out: Path | None) -> Path:
    return out if out is not None else Path("results") / config_name


def run_grid(args: argparse.Namespace) -> int:
    from fastervlm.eval.grid import load_config, run

    config = load_config(args.config)
    return run(config, output_folder(config.name, args.out), only=args.cell)


def list_cells(args: argparse.Namespace) -> int:
    from fastervlm.eval.grid import load_config

    cells = load_config(args.config).cells()
    if args.count:
        print(len(cells))
    else:
        for index, cell in enumerate(cells):
            print(f"{index}\t{cell.name}")
    return 0
