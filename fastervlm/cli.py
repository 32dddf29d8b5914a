"""`fastervlm demo`, `generate` and `viz`: argparse over fastervlm.demo and fastervlm.viz."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fastervlm
from fastervlm.bench import cli as bench_cli
from fastervlm.cli_args import (
    DEMO_ARCHS,
    METHOD_NAMES,
    add_threads,
    apply_threads,
    method_list,
    positive_int,
    ratio_list,
)
from fastervlm.eval import cli as eval_cli
from fastervlm.eval import report_cli

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from PIL import Image
    from torch import nn
    from transformers import ProcessorMixin

# Heavy modules (torch, transformers, matplotlib, the models) are imported inside the commands that use them,
# so that --help, --version and argument errors answer at once. A registry's names go in as metavar + help:
# argparse then lists them only when it prints help (see cli_args.Names).
ARCH_HELP = (
    "model family: %(choices)s; read from --model's config when left out (and checked against it when given); "
    "llava-1.5 for the tiny model"
)
METHOD_HELP = "pruning method: %(choices)s (default %(default)s)"
DEMO_QUESTIONS = {"images": "What is shown in this image?", "videos": "What happens in this video?"}


def random_note(arch: str) -> str:
    from fastervlm import demo

    family = demo.ARCHS[arch]
    return (
        f"NOTE: this is the embedded tiny model with RANDOM weights ({family.geometry}): generated text is "
        f"meaningless and timings only show relative cost. Pass --model {family.example} or a local model "
        "directory for real answers."
    )


def pick_device(name: str | None) -> str:
    import torch

    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but torch.cuda.is_available() is False; use --device cpu")
    return name


def open_images(paths: list[str]) -> list[Image.Image]:
    from PIL import Image

    return [Image.open(path).convert("RGB") for path in paths]


def method_config(name: str, budget: dict[str, Any], model: str | None) -> Any:
    """A method's config for one CLI run; on the embedded tiny model, what the method loads by name (CDPruner's
    CLIP) points at tiny stand-ins, since nothing is downloaded for it."""
    from fastervlm import demo
    from fastervlm.methods import resolve_config
    from fastervlm.tiny.clip_text import tiny_method_options

    return resolve_config(name, {**budget, **(tiny_method_options(name) if model in (None, demo.TINY) else {})})


def run_demo(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress

    from fastervlm import demo
    from fastervlm.terminal import print_table
    from fastervlm.viz import kept_grid_figure
    from fastervlm.viz.kept import bright_patches

    args.arch = demo.resolve_arch(args.model, args.arch)
    configs = [method_config(args.method, {"ratio": ratio}, args.model) for ratio in args.ratios]
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
    print_table(demo.table(runs))
    grid, size = family.view(model, processor, inputs)
    # Merged tokens are counted per image: only a one-view image can say that they came from its first view.
    kept = {
        demo.panel_title(r): bright_patches(
            r.first_kept, r.first_merged if r.first_views == 1 else 0, grid[0] * grid[1]
        )
        for r in runs[1:]
    }
    first, name = (samples[0], "image 1") if media == "images" else (samples[0][0], "video 1, frame 1")
    path = kept_grid_figure(family.first_view(first, size), kept, grid, args.out, size=size)
    print(f"kept patches of {name} written to {path}")
    return 0


def run_generate(args: argparse.Namespace) -> int:
    from fastervlm import demo

    budget = (
        {"tokens": args.tokens} if args.tokens is not None else {"ratio": 0.9 if args.ratio is None else args.ratio}
    )
    config = method_config(args.method, budget, args.model)
    device = pick_device(args.device)
    args.arch = demo.resolve_arch(args.model, args.arch)
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


def run_viz(args: argparse.Namespace) -> int:
    """One image (a synthetic video for video-llava): its view, the [CLS] heatmap, the kept patches per method x ratio.

    LLaVA-1.5 gets one row per method; LLaVA-NeXT one row per method x ratio (base view, then the crops in place on
    the padded grid-resolution image); Video-LLaVA one row per method x ratio holding its 8 frames.
    """
    from fastervlm import demo
    from fastervlm.viz import save_figure

    args.arch = demo.resolve_arch(args.model, args.arch)
    if (args.image is None) != (args.arch == "video-llava"):
        raise ValueError(
            f"--image is required for every --arch but video-llava, which takes none (it draws a "
            f"synthetic 8-frame video), got --arch {args.arch} with --image {args.image!r}"
        )
    args.prompt = args.prompt or DEMO_QUESTIONS[demo.ARCHS[args.arch].media]
    configs = [method_config(name, {"ratio": ratio}, args.model) for name in args.methods for ratio in args.ratios]
    device = pick_device(args.device)
    if args.model in (None, demo.TINY):
        print(random_note(args.arch))
    model, processor = demo.load_llava(args.model, arch=args.arch, device=device)
    draw = {"llava-1.5": viz_llava, "llava-next": viz_llava_next, "video-llava": viz_video_llava}.get(
        args.arch, viz_received
    )
    figure = draw(model, processor, args, configs)
    for path in save_figure(figure, args.out):
        print(f"written: {path}")
    return 0


def viz_llava(model: nn.Module, processor: ProcessorMixin, args: argparse.Namespace, configs: list) -> Figure:
    from PIL import Image
    from rich.console import Console
    from rich.progress import Progress

    from fastervlm import demo
    from fastervlm.models import adapter_for
    from fastervlm.viz import cls_attention, kept_figure, kept_reports, model_view, overlay
    from fastervlm.viz.kept import bright_patches, config_label, cut_layers, panel_title

    image = Image.open(args.image).convert("RGB")
    inputs = demo.batch(model, processor, [image], args.prompt)
    heat = cls_attention(model, inputs)[0]
    with Progress(console=Console(stderr=True), transient=True) as progress:
        reports = kept_reports(model, inputs, configs, progress)
    size = processor.image_processor.crop_size["height"]
    grid = adapter_for(model).patch_grid(model)
    rows: dict[str, list] = {}
    for config, report in zip(configs, reports, strict=True):
        kept, merged = report.kept_indices[0][0], report.merged_tokens  # one image: the batch is the view
        cuts = cut_layers(report)
        title = panel_title(config_label(config), len(kept), merged, cuts[-1] if cuts else None)
        drawn = bright_patches(kept, merged, grid[0] * grid[1])
        rows.setdefault(report.method, []).append((title, overlay(image, drawn, grid, size=size)))
    return kept_figure(model_view(image, size), heat.reshape(grid).numpy(), rows)


def viz_llava_next(model: nn.Module, processor: ProcessorMixin, args: argparse.Namespace, configs: list) -> Figure:
    """Base view (squashed, as the model sees it) and the crops in place; the heatmap covers the base view."""
    from PIL import Image
    from rich.console import Console
    from rich.progress import Progress

    from fastervlm import demo
    from fastervlm.models import adapter_for
    from fastervlm.viz import cls_attention, kept_figure, kept_reports, overlay
    from fastervlm.viz.anyres import crops_overlay, kept_views, stock_layouts
    from fastervlm.viz.kept import config_label

    image = Image.open(args.image).convert("RGB")
    inputs = demo.batch(model, processor, [image], args.prompt)
    heat = cls_attention(model, inputs)[0]  # views in order: the base view first
    with Progress(console=Console(stderr=True), transient=True) as progress:
        reports = kept_reports(model, inputs, configs, progress)
    size = processor.image_processor.crop_size["height"]
    pinpoints = processor.image_processor.image_grid_pinpoints
    grid = adapter_for(model).patch_grid(model)
    layout = stock_layouts(model, inputs["image_sizes"])[0]
    base = demo.squashed_view(image, size)
    rows = {}
    for config, report in zip(configs, reports, strict=True):
        views = kept_views(report.kept_indices[0], layout)
        crops = sum(len(kept) for kept in views[1:])
        rows[config_label(config)] = [
            (f"{config_label(config)}: base view ({len(views[0])} kept)", overlay(base, views[0], grid, size=size)),
            (f"{len(views) - 1} crops ({crops} kept)", crops_overlay(image, views, pinpoints, grid, size=size)),
        ]
    return kept_figure(base, heat.reshape(grid).numpy(), rows, "vision [CLS] attention, base view only")


def viz_received(model: nn.Module, processor: ProcessorMixin, args: argparse.Namespace, configs: list) -> Figure:
    """Towers without [CLS] (Qwen-VL, LLaVA-OneVision): the first view as drawn by the demo, the received-attention
    score fastervlm ranks by, and the kept patches (merged tokens for Qwen-VL, the base view for OneVision)."""
    from PIL import Image
    from rich.console import Console
    from rich.progress import Progress

    from fastervlm import demo
    from fastervlm.viz import kept_figure, kept_reports, overlay, received_attention
    from fastervlm.viz.kept import config_label

    family = demo.ARCHS[args.arch]
    image = Image.open(args.image).convert("RGB")
    inputs = demo.batch(model, processor, [image], args.prompt)
    grid, size = family.view(model, processor, inputs)
    heat = received_attention(model, inputs)[0].reshape(-1, grid[0] * grid[1])[0].reshape(grid)
    with Progress(console=Console(stderr=True), transient=True) as progress:
        reports = kept_reports(model, inputs, configs, progress)
    view = family.first_view(image, size)
    rows = {}
    for config, report in zip(configs, reports, strict=True):
        # In-LLM methods report one run of image tokens per image; its first rows are the first view's patches.
        kept = report.kept_indices[0][0]
        kept = kept[kept < grid[0] * grid[1]]
        title = f"{config_label(config)}: first view ({len(kept)} kept)"
        rows[config_label(config)] = [(title, overlay(view, kept, grid, size=size))]
    title, label = "received attention (score='received'), first view", "attention received (mean softmax share)"
    return kept_figure(view, heat.numpy(), rows, title, label)


def viz_video_llava(model: nn.Module, processor: ProcessorMixin, args: argparse.Namespace, configs: list) -> Figure:
    """The 8 frames of a synthetic video per method x ratio; the heatmap is frame 1's video-tower [CLS] row."""
    from rich.console import Console
    from rich.progress import Progress

    from fastervlm import demo
    from fastervlm.models import adapter_for
    from fastervlm.viz import cls_attention, kept_figure, kept_reports, model_view
    from fastervlm.viz.frames import frame_overlays, frame_views
    from fastervlm.viz.kept import config_label

    frames = demo.ARCHS["video-llava"].synthetic(1)[0]
    inputs = demo.batch(model, processor, [frames], args.prompt, "videos")
    heat = cls_attention(model, inputs, "video")[0]
    with Progress(console=Console(stderr=True), transient=True) as progress:
        reports = kept_reports(model, inputs, configs, progress)
    size = model.config.vision_config.image_size  # the frame side the video tower takes (224)
    grid = adapter_for(model).patch_grid(model)
    patches = grid[0] * grid[1]
    rows_per_frame = int((inputs["input_ids"] == model.config.video_token_id).sum()) // len(frames)
    rows = {}
    for config, report in zip(configs, reports, strict=True):
        views = frame_views(report.kept_indices[0], len(frames), rows_per_frame, patches)
        pictures = frame_overlays(frames, views, grid, size=size)
        rows[config_label(config)] = [
            (
                f"{config_label(config)}: frame {f + 1} ({len(kept)} kept)"
                if f == 0
                else f"frame {f + 1} ({len(kept)} kept)",
                picture,
            )
            for f, (kept, picture) in enumerate(zip(views, pictures, strict=True))
        ]
    return kept_figure(model_view(frames[0], size), heat.reshape(grid).numpy(), rows, "video [CLS] attention, frame 1")


def run_agreement(args: argparse.Namespace) -> int:
    """IoU of two methods' kept patches on each of --n images of --data, one image per prefill."""
    from rich.console import Console
    from rich.progress import Progress

    from fastervlm import demo
    from fastervlm.viz import kept_reports
    from fastervlm.viz.agreement import agreement
    from fastervlm.viz.samples import sample_names
    from fastervlm.viz.samples import samples as data_samples

    if len(args.methods) != 2:
        raise ValueError(f"--methods must name exactly two methods to compare, got {','.join(args.methods)!r}")
    configs = [method_config(name, {"ratio": args.ratio}, args.model) for name in args.methods]
    device = pick_device(args.device)
    if args.model in (None, demo.TINY):
        print(random_note("llava-1.5"))
    samples = data_samples(args.data, args.n, args.prompt)
    model, processor = demo.load_llava(args.model, device=device)
    per_method: list[list] = [[], []]
    with Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("samples", total=len(samples))
        for image, prompt in samples:
            inputs = demo.batch(model, processor, [image], prompt)
            for kept, report in zip(per_method, kept_reports(model, inputs, configs), strict=True):
                kept.append(report)
            progress.advance(task)
    result = agreement(*per_method, names=sample_names(args.data, len(samples)))
    print(
        f"{result.method_a} vs {result.method_b} at ratio {args.ratio:g} over {len(result.iou)} images: "
        f"IoU mean {result.mean:.3f}, median {result.median:.3f}"
    )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**result.to_json(), "ratio": args.ratio}, indent=2) + "\n")
        print(f"written: {args.json}")
    return 0


def run_attention(args: argparse.Namespace) -> int:
    """`analyze shift` or `analyze dispersion` over --n images of --data, one unpruned prefill per image."""
    from rich.console import Console
    from rich.progress import Progress

    from fastervlm import demo
    from fastervlm.models import adapter_for
    from fastervlm.viz import cls_attention
    from fastervlm.viz.analysis_figure import dispersion_figure, png_path, save_png, shift_figure
    from fastervlm.viz.attention_stats import Dispersion, Shift
    from fastervlm.viz.llm_attention import last_token_image_attention
    from fastervlm.viz.samples import samples as data_samples

    if args.plot is not None:
        png_path(args.plot)
    device = pick_device(args.device)
    model_name = args.model or demo.TINY
    note = random_note("llava-1.5") if model_name == demo.TINY else None
    if note:
        print(note)
    samples = data_samples(args.data, args.n, args.prompt)
    model, processor = demo.load_llava(args.model, device=device)
    rows, cols = adapter_for(model).patch_grid(model)
    result = Shift(args.bins, rows) if args.analysis == "shift" else Dispersion()
    with Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(args.analysis, total=len(samples))
        for image, prompt in samples:
            inputs = demo.batch(model, processor, [image], prompt)
            llm = last_token_image_attention(model, inputs)[0]
            if llm.shape[1] != rows * cols:
                raise ValueError(f"expected {rows * cols} image tokens ({rows}x{cols} grid), got {llm.shape[1]}")
            if isinstance(result, Shift):
                result.add(llm)
            else:
                result.add(llm, cls_attention(model, inputs)[0])
            progress.advance(task)
    out = {"analysis": args.analysis, "model": model_name, "random_weights_note": note, **result.to_json()}
    where = f"over {out['samples']} images"
    if isinstance(result, Shift):
        print(
            f"LLM last-token attention to image tokens {where}: share in the first quarter "
            f"{out['first_quarter_share']['mean']:.3f}, last quarter {out['last_quarter_share']['mean']:.3f}; "
            f"centre of mass {out['centre_of_mass']['mean']:.3f} of the image-token span (0.5 = even)"
        )
        figure = shift_figure(result, f"LLM last-token attention by image-token position ({model_name}, {where})")
    else:
        print(
            f"attention entropy / log N {where} (1 = uniform): LLM last token mean "
            f"{out['llm_entropy_normalised']['mean']:.3f}, median {out['llm_entropy_normalised']['median']:.3f}; "
            f"vision [CLS] mean {out['cls_entropy_normalised']['mean']:.3f}, "
            f"median {out['cls_entropy_normalised']['median']:.3f}"
        )
        figure = dispersion_figure(result, f"attention dispersion ({model_name}, {where})")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")
        print(f"written: {args.json}")
    if args.plot is not None:
        print(f"written: {save_png(figure, args.plot)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastervlm", description="Training-free visual token pruning for VLMs.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {fastervlm.__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    d = commands.add_parser("demo", help="time a model unpruned and pruned at several ratios; draw the kept patches")
    d.add_argument("--model", help="hub id or local directory; default: the embedded tiny model (random weights)")
    d.add_argument("--ratios", type=ratio_list, default=[0.5, 0.75, 0.9, 0.95], help="comma-separated, e.g. 0.5,0.9")
    d.add_argument("--arch", choices=DEMO_ARCHS, metavar="ARCH", help=ARCH_HELP)
    d.add_argument(
        "--images", type=positive_int, default=2, help="synthetic images (videos for video-llava) without --image"
    )
    d.add_argument("--image", action="append", help="image file (repeatable); replaces the synthetic images")
    d.add_argument("--max-new-tokens", type=positive_int, default=16)
    d.add_argument("--repeats", type=positive_int, default=3, help="timed runs per row (median, after a warm-up)")
    d.add_argument("--out", default="fastervlm_demo.png", help="PNG of the first image's (or frame's) kept patches")
    d.add_argument("--method", default="fastervlm", choices=METHOD_NAMES, metavar="METHOD", help=METHOD_HELP)
    d.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    d.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    add_threads(d)
    d.set_defaults(func=run_demo)

    g = commands.add_parser("generate", help="answer one question about each image with a pruned model")
    g.add_argument("--model", required=True, help="hub id or local directory; 'tiny' is the embedded random model")
    g.add_argument("--arch", choices=DEMO_ARCHS, metavar="ARCH", help=ARCH_HELP)
    g.add_argument("--image", action="append", required=True, help="image file (repeatable)")
    g.add_argument(
        "--prompt", required=True, help="question; wrapped as 'USER: <image>\\n... ASSISTANT:' unless it has <image>"
    )
    g.add_argument("--method", default="fastervlm", choices=METHOD_NAMES, metavar="METHOD", help=METHOD_HELP)
    budget = g.add_mutually_exclusive_group()
    budget.add_argument("--ratio", type=float, help="fraction of visual tokens removed per view (default 0.9)")
    budget.add_argument("--tokens", type=int, help="visual tokens kept per view instead of a ratio")
    g.add_argument("--max-new-tokens", type=positive_int, default=64)
    g.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    g.add_argument("--attn", default="sdpa", choices=["sdpa", "eager", "flash_attention_2"])
    add_threads(g)
    g.set_defaults(func=run_generate)

    v = commands.add_parser("viz", help="draw the [CLS] attention and each method's kept patches on one image")
    v.add_argument("--arch", choices=DEMO_ARCHS, metavar="ARCH", help=ARCH_HELP)
    v.add_argument("--image", help="image file; required except for video-llava, which draws a synthetic video")
    v.add_argument("--model", help="hub id or local directory; default: the embedded tiny model (random weights)")
    v.add_argument("--prompt", help="question (in-LLM methods score from it); default: a generic one")
    v.add_argument(
        "--methods", type=method_list, default=["fastervlm", "fastv"], help="comma-separated, e.g. fastervlm,fastv"
    )
    v.add_argument("--ratios", type=ratio_list, default=[0.75, 0.9, 0.95], help="comma-separated, e.g. 0.75,0.9")
    v.add_argument("--out", default="fastervlm_viz.png", help="PNG to write; a PDF of the same name goes beside it")
    v.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    add_threads(v)
    v.set_defaults(func=run_viz)

    analyze = commands.add_parser("analyze", help="analyses over a folder of images")
    kinds = analyze.add_subparsers(dest="analysis", required=True)
    a = kinds.add_parser("agreement", help="IoU of two methods' kept patches per image, with mean and median")
    a.add_argument(
        "--data",
        required=True,
        help="folder of images (sorted by name, optional prompts.txt) or a datasets save_to_disk folder",
    )
    a.add_argument("--n", type=positive_int, default=1000, help="images to use (the first n)")
    a.add_argument("--methods", type=method_list, default=["fastervlm", "fastv"], help="two, comma-separated")
    a.add_argument("--ratio", type=float, default=0.9, help="fraction of visual tokens removed (default 0.9)")
    a.add_argument("--model", help="hub id or local directory; default: the embedded tiny model (random weights)")
    a.add_argument("--prompt", default=DEMO_QUESTIONS["images"], help="prompt for images prompts.txt does not cover")
    a.add_argument("--json", type=Path, help="write the per-image IoU and the summary as JSON")
    a.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    add_threads(a)
    a.set_defaults(func=run_agreement)
    helps = {
        "shift": "where the LLM's last token attends among the image tokens, by raster position",
        "dispersion": "entropy of the LLM's last-token image attention vs the vision [CLS] attention",
    }
    for name, text in helps.items():
        k = kinds.add_parser(name, help=text)
        k.add_argument(
            "--data",
            required=True,
            help="folder of images (sorted by name, optional prompts.txt) or a datasets save_to_disk folder",
        )
        k.add_argument("--n", type=positive_int, default=1000, help="images to use (the first n)")
        if name == "shift":
            k.add_argument("--bins", type=positive_int, default=8, help="position bins over the image tokens")
        k.add_argument("--model", help="hub id or local directory; default: the embedded tiny model (random weights)")
        k.add_argument(
            "--prompt", default=DEMO_QUESTIONS["images"], help="prompt for images prompts.txt does not cover"
        )
        k.add_argument("--json", type=Path, help="write the per-image numbers and the summary as JSON")
        k.add_argument("--plot", type=Path, help="write a PNG plot of the summary")
        k.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
        add_threads(k)
        k.set_defaults(func=run_attention)

    bench_cli.add_parser(commands)
    eval_cli.add_parser(commands)
    report_cli.add_parsers(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done; 2 bad arguments (argparse's or the library's ValueError); 1 a model/image not loadable."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        apply_threads(args)
        return args.func(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (OSError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
