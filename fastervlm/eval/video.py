"""Read a video, a GIF or a folder of frame images as a fixed number of uniformly sampled RGB frames.

Video-LLaVA sees 8 frames per clip whatever the clip's length, so every source goes through the same
index choice (`uniform_indices`) and only the decoding differs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
GIF_EXTENSION = ".gif"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
SUPPORTED = (*VIDEO_EXTENSIONS, GIF_EXTENSION, "a folder of " + "/".join(IMAGE_EXTENSIONS) + " frames")


def uniform_indices(total: int, num_frames: int) -> list[int]:
    """Indices of `num_frames` frames spread evenly from the first to the last one.

    Same rule as Video-LLaVA's processor (np.linspace(0, total - 1, n) cast to int), so a clip shorter than
    `num_frames` repeats frames rather than handing the model fewer than it was trained on.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames!r}")
    if total < 1:
        raise ValueError(f"cannot sample frames from a clip with {total} frames")
    return np.linspace(0, total - 1, num_frames).astype(int).tolist()


def load_frames(path: str | Path, num_frames: int) -> list[Image.Image]:
    """`num_frames` RGB frames of the clip at `path` (a video file, a GIF or a folder of images sorted by name)."""
    source = Path(path)
    if not source.exists():
        raise FileNotFoundError(f"video not found: {source}")
    if source.is_dir():
        return _folder_frames(source, num_frames)
    if source.suffix.lower() == GIF_EXTENSION:
        return _gif_frames(source, num_frames)
    if source.suffix.lower() in VIDEO_EXTENSIONS:
        return _video_frames(source, num_frames)
    raise ValueError(f"unsupported video {source.name!r}; supported: {', '.join(SUPPORTED)}")


def _folder_frames(folder: Path, num_frames: int) -> list[Image.Image]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(f"frame folder {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return [Image.open(files[i]).convert("RGB") for i in uniform_indices(len(files), num_frames)]


def _gif_frames(gif: Path, num_frames: int) -> list[Image.Image]:
    with Image.open(gif) as image:
        # convert() per frame: GIF frames are palette images that may only store the region that changed.
        frames = [frame.convert("RGB") for frame in ImageSequence.Iterator(image)]
    return [frames[i] for i in uniform_indices(len(frames), num_frames)]


def _video_frames(video: Path, num_frames: int) -> list[Image.Image]:
    try:
        import av
    except ImportError as error:
        raise ImportError(f"reading {video.suffix} videos needs PyAV: pip install 'av<16'") from error
    # Decode every frame: container frame counts are often missing or wrong (AVI, variable frame rate), so the
    # decoded count is the only reliable total. Clips in these benchmarks are seconds long.
    try:
        with av.open(str(video)) as container:
            if not container.streams.video:
                raise ValueError(f"{video} has no video stream (0 frames)")
            decoded = list(container.decode(video=0))
    except av.FFmpegError as error:  # corrupt or truncated files: name the file, keep FFmpeg's reason
        raise ValueError(f"cannot decode video {video}: {error}") from error
    if not decoded:
        raise ValueError(f"{video} decodes to 0 frames")
    return [decoded[i].to_image() for i in uniform_indices(len(decoded), num_frames)]
