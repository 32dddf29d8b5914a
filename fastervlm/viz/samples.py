"""Image + prompt pairs from a folder or a saved `datasets` dataset, for the analyses over many samples."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
PROMPTS_FILE = "prompts.txt"  # optional: one prompt per line, for the images in sorted file-name order
PROMPT_COLUMNS = ("prompt", "question", "text")  # a dataset's prompt column, the first of these it has
NAME_COLUMNS = ("image_id", "question_id", "id")  # a dataset's row name, the first of these it has


def is_dataset(data: str | Path) -> bool:
    return (Path(data) / "dataset_info.json").is_file() or (Path(data) / "state.json").is_file()


def samples(data: str | Path, n: int, default_prompt: str) -> list[tuple[Image.Image, str]]:
    """A folder written by `datasets.Dataset.save_to_disk` is read as a dataset; any other folder as images."""
    if is_dataset(data):
        return dataset_samples(data, n, default_prompt)
    return folder_samples(data, n, default_prompt)


def sample_names(data: str | Path, n: int) -> list[str]:
    """Names of the first n samples, in the order samples() gives them, so per-sample results can say which
    image each number belongs to: the file name, or a dataset's id column (else "row <i>")."""
    if not is_dataset(data):
        return [path.name for path in image_paths(Path(data))[:n]]
    import datasets

    table = datasets.load_from_disk(str(data))
    column = next((c for c in NAME_COLUMNS if c in table.column_names), None)
    count = min(n, len(table))
    return [str(v) for v in table.select(range(count))[column]] if column else [f"row {i}" for i in range(count)]


def image_paths(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def dataset_samples(path: str | Path, n: int, default_prompt: str) -> list[tuple[Image.Image, str]]:
    """The first n rows of a saved dataset: its "image" column, and its prompt column or `default_prompt`."""
    try:
        import datasets
    except ImportError:
        raise ImportError(
            "reading a saved dataset needs the `datasets` package: pip install 'fastervlm[eval]'"
        ) from None
    if n < 1:
        raise ValueError(f"n must be >= 1 (samples to analyse), got {n!r}")
    table = datasets.load_from_disk(str(path))
    if "image" not in table.column_names:
        raise ValueError(f"--data {str(path)!r}: the dataset needs an 'image' column, it has {table.column_names}")
    prompt = next((c for c in PROMPT_COLUMNS if c in table.column_names), None)
    rows = table.select(range(min(n, len(table))))
    return [(row["image"].convert("RGB"), row[prompt] if prompt else default_prompt) for row in rows]


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
    paths = image_paths(folder)
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
