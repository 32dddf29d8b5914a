"""`fastervlm demo` and `fastervlm generate`: argparse over fastervlm.demo and fastervlm.viz."""

from __future__ import annotations

import argparse
import sys

import torch
from PIL import Image
from rich.console import Console
from rich.progress import Progress

import fastervlm
from fastervlm import demo
from fastervlm.bench import cli as bench_cli
from fastervlm.methods import METHODS, resolve_config
from fastervlm.models import adapter_for
from fastervlm.viz import kept_grid_figure

DEMO_QUESTIONS = {"images": "What is shown in this image?", "videos": "What happens in this video?"}


def random_note(arch: str) -> str:
    family = demo.ARCHS[arch]
    return (
        f"NOTE: this is the embedded tiny model with RANDOM weights ({family.geometry}): generated text is "
        f"meaningless and timings only show relative cost. Pass --model {family.example} or a local model "
        "directory for real answers."
    )


def ratio_list(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ratios like 0.5,0.9, got {text!r}") from None


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an int >= 1, got {text!r}")
    return value


def pick_device(name: str | None) -> str:
    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but torch.cuda.is_available() is False; use --device cpu")
    return name


def open_images(paths: list[str]) -> list[Image.Image]:
    return [Image.open(path).convert("RGB") for path in paths]


def run_demo(args: argparse.Namespace) -> int:
    configs = [resolve_config(args.method, {"ratio": ratio}) for ratio in args.ratios]
    device = pick_device(args.device)
    if args.model in (None, demo.TINY):
        print(random_note(args.arch))
    family = demo.ARCHS[args.arch]
    # Image files go through the image path of either arch (Video-LLaVA answers about images too).
    media = "images" if args.image else family.media
    samples = open_images(args.image) if args.image else family.synthetic(args.images)
    model, processor = demo.load_llava(args.model, arch=args.arch, attn=args.attn, device=device)
    inputs = demo.batch(model, processor, samples, DEMO_QUESTIONS[media], media)
    print(
        f"model: {args.model or 'tiny (random weights)'} ({args.arch}); {len(samples)} {media[:-1]}(s); "
        f"device {device}; attn {args.attn}"
    )
    with Progress(console=Console(stderr=True), transient=True) as progress:
        runs = demo.run_all(
            model, inputs, configs, repeats=args.repeats, max_new_tokens=args.max_new_tokens, progress=progress
        )
    Console().print(demo.table(runs))
    adapter = adapter_for(model)
    size = processor.image_processor.crop_size["height"]
    kept = {f"{demo.budget_label(r.config)} ({len(r.first_kept)} kept)": r.first_kept for r in runs[1:]}
    first, name = (samples[0], "image 1") if media == "images" else (samples[0][0], "video 1, frame 1")
    path = kept_grid_figure(family.first_view(first, size), kept, adapter.patch_grid(model), args.out, size=size)
    print(f"kept patches of {name} written to {path}")
    return 0


def run_generate(args: argparse.Namespace) -> int:
    budget = (
        {"tokens": args.tokens} if args.tokens is not None else {"ratio": 0.9 if args.ratio is None else args.ratio}
    )
    config = resolve_config(args.method, budget)
    device = pick_device(args.device)
    if args.model == demo.TINY:
        print(random_note(args.arch))
    images = open_images(args.image)
    model, processor = demo.load_llava(args.model, arch=args.arch, attn=args.attn, device=device)
    inputs = demo.batch(model, processor, images, args.prompt)
    fastervlm.prune(model, config)
    answers = demo.answers(model, processor, inputs, args.max_new_tokens)
    report = demo.applied_report(model, demo.visual_tokens(model, inputs))
    for path, answer in zip(args.image, answers, strict=True):
        print(f"{path}: {answer}")
    print(demo.summary(report))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastervlm", description="Training-free visual token pruning for VLMs.")
    commands = parser.add_subparsers(dest="command", required=True)
    methods = sorted(METHODS)

    d = commands.add_parser("demo", help="time a model unpruned and pruned at several ratios; draw the kept patches")
    d.add_argument("--model", help="hub id or local directory; default: the embedded tiny model (random weights)")
    d.add_argument("--ratios", type=ratio_list, default=[0.5, 0.75, 0.9, 0.95], help="comma-separated, e.g. 0.5,0.9")
    d.add_argument("--arch", default="llava-1.5", choices=sorted(demo.ARCHS), help="model family (default llava-1.5)")
    d.add_argument(
        "--images", type=positive_int, default=2, help="synthetic images (videos for video-llava) without --image"
    )
    d.add_argument("--image", action="append", help="image file (repeatable); replaces the synthetic images")
    d.add_argument("--max-new-tokens", type=positive_int, default=16)
    d.add_argument("--repeats", type=positive_int, default=3, help="timed runs per row (median, after a warm-up)")
    d.add_argument("--out", default="fastervlm_demo.png", help="PNG of the first image's (or frame's) kept patches")
    d.add_argument("--method", default="fastervlm", choices=methods)
    d.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    d.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    d.set_defaults(func=run_demo)

    g = commands.add_parser("generate", help="answer one question about each image with a pruned model")
    g.add_argument("--model", required=True, help="hub id or local directory; 'tiny' is the embedded random model")
    g.add_argument("--arch", default="llava-1.5", choices=sorted(demo.ARCHS), help="model family (default llava-1.5)")
    g.add_argument("--image", action="append", required=True, help="image file (repeatable)")
    g.add_argument(
        "--prompt", required=True, help="question; wrapped as 'USER: <image>\\n... ASSISTANT:' unless it has <image>"
    )
    g.add_argument("--method", default="fastervlm", choices=methods)
    budget = g.add_mutually_exclusive_group()
    budget.add_argument("--ratio", type=float, help="fraction of visual tokens removed per view (default 0.9)")
    budget.add_argument("--tokens", type=int, help="visual tokens kept per view instead of a ratio")
    g.add_argument("--max-new-tokens", type=positive_int, default=64)
    g.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    g.add_argument("--attn", default="sdpa", choices=["sdpa", "eager", "flash_attention_2"])
    g.set_defaults(func=run_generate)

    bench_cli.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done; 2 bad arguments (argparse's or the library's ValueError); 1 a model/image not loadable."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        return args.func(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (OSError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
