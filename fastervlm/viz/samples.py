"""Image + prompt pairs from a folder, for the analyses that run over many samples."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
PROMPTS_FILE = "prompts.txt"  # optional: one prompt per line, for the images in sorted file-name order


def folder_samples(folder: str | Path, n: int, default_prompt: str) -> list[tuple[Image.Image, str]]:
    """The first n images of `folder` by file name, each with its line of prompts.txt or `default_prompt`.

    Sorted names make a run repeatable; a prompts.txt with fewer lines than images is refused rather than
    silently pairing the rest with the default.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"--data {str(folder)!r} is not a directory of images")
    if n < 1:
        raise ValueError(f"n must be >= 1 (samples to analyse), got {n!r}")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(f"--data {str(folder)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    prompts = [default_prompt] * len(paths)
    listed = folder / PROMPTS_FILE
    if listed.is_file():
        lines = [line.strip() for line in listed.read_text().splitlines() if line.strip()]
        if len(lines) < len(paths):
            raise ValueError(f"{listed} has {len(lines)} prompts for {len(paths)} images; give one line per image")
        prompts = lines
    return [(Image.open(p).convert("RGB"), prompt) for p, prompt in zip(paths[:n], prompts, strict=False)]
