"""`fastervlm prepare-videoqa`: argparse over fastervlm.eval.videoqa.prepare."""

from __future__ import annotations

import argparse

from fastervlm.cli_args import Names

DATASETS = Names("fastervlm.eval.videoqa", "DATASETS")  # pyarrow and the tiny video model: loaded when needed


def add_parser(eval_commands: argparse._SubParsersAction) -> None:
    p = eval_commands.add_parser(
        "prepare-videoqa",
        help="convert Video-ChatGPT-style MSVD/MSRVTT/TGIF/ActivityNet QA annotations into fvlm_*_qa task data",
    )
    p.add_argument("name", choices=DATASETS, metavar="NAME", help="which dataset: %(choices)s")
    p.add_argument("--annotations", required=True, help="folder holding test_q.json and test_a.json")
    p.add_argument("--videos", required=True, help="folder holding the clips (<video_name>.mp4/.avi/.gif ...)")
    p.add_argument("--tasks-dir", required=True, help="materialized task folder (lmms-eval --include_path)")
    p.add_argument(
        "--limit", type=int, default=1000, help="first N questions in file order (default 1000, as the paper); 0: all"
    )
    p.set_defaults(func=run_prepare_videoqa)


def run_prepare_videoqa(args: argparse.Namespace) -> int:
    from fastervlm.eval.videoqa import prepare

    path = prepare(args.name, args.annotations, args.videos, args.tasks_dir, limit=args.limit or None)
    print(f"wrote {path}")
    return 0
