"""Data for the fvlm_*_qa lmms-eval tasks: convert the Video-ChatGPT QA annotations, write the tiny stand-in,
and copy the task YAMLs into a run folder.

The tasks read `<tasks dir>/videoqa/data/<name>.parquet` (the YAMLs' data_files, resolved by lmms-eval against
the YAML folder), with rows question_id, video (absolute path), question, answer.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from fastervlm.tiny.video_llava import synthetic_video

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable  # Python >= 3.11; only an annotation here

# Parquet file per dataset, as named in fvlm_<name>.yaml.
DATASETS = {"msvd": "msvd_qa", "msrvtt": "msrvtt_qa", "tgif": "tgif_qa", "activitynet": "activitynet_qa"}
# Video-LLaVA's run_inference_video_qa_act.py looks for ActivityNet clips as v_<video_name><suffix> (the dataset's
# YouTube ids carry a "v_" prefix on disk, not in test_q.json).
VIDEO_PREFIXES = {"activitynet": "v_"}
TINY = "tiny_video_qa"
# Video-LLaVA's run_inference_video_qa.py tries <video_name> + .mp4/.avi/.mov/.mkv (its TGIF folder holds mp4
# conversions); .webm and .gif cover other copies (original TGIF GIFs). A name that already exists as a file
# or a folder of frames is taken as is.
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif")
SCHEMA = pa.schema([(column, pa.string()) for column in ("question_id", "video", "question", "answer")])
# Questions about fastervlm.tiny.video_llava.synthetic_video clips (three circles drifting over a gradient):
# true answers of several kinds (word, yes/no, number) so both scorers see variety.
TINY_QA = (
    ("What shape moves across the video?", "circle"),
    ("Are the shapes moving?", "yes"),
    ("How many circles are there?", "three"),
    ("Is the video black and white?", "no"),
    ("What is behind the shapes?", "gradient"),
    ("Do the circles change size?", "no"),
)


def data_dir(tasks_dir: str | Path) -> Path:
    return Path(tasks_dir) / "videoqa" / "data"


def prepare(
    name: str, annotations: str | Path, videos_dir: str | Path, dest_tasks_dir: str | Path, limit: int | None = 1000
) -> Path:
    """Write the parquet of `name` from Video-ChatGPT's test_q.json / test_a.json; return its path.

    ActivityNet-QA ships the same two files; its clips are found as v_<video_name> (VIDEO_PREFIXES).

    test_q.json is a list of {"video_name", "question_id", "question"}, test_a.json a list of {"answer", "type",
    "question_id"} in the same order (Video-LLaVA pairs them by position; we also check the ids agree).
    `limit` keeps the first questions in file order: the paper evaluates the first 1K of each dataset.
    None keeps them all.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown video QA dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 or None (all questions), got {limit!r}")
    questions = _read_list(Path(annotations) / "test_q.json")
    answers = _read_list(Path(annotations) / "test_a.json")
    if len(questions) != len(answers):
        raise ValueError(f"{annotations}: test_q.json has {len(questions)} entries, test_a.json {len(answers)}")
    videos = Path(videos_dir)
    if not videos.is_dir():
        raise FileNotFoundError(f"videos_dir is not a folder: {videos}")
    rows, missing = [], []
    for question, answer in list(zip(questions, answers, strict=True))[:limit]:
        if str(question["question_id"]) != str(answer["question_id"]):
            raise ValueError(
                f"{annotations}: question_id {question['question_id']!r} in test_q.json is paired (by position) with "
                f"{answer['question_id']!r} in test_a.json"
            )
        video = _find_video(videos, VIDEO_PREFIXES.get(name, "") + str(question["video_name"]))
        if video is None:
            missing.append(str(question["video_name"]))
            continue
        rows.append(_row(question["question_id"], video, question["question"], answer["answer"]))
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of {len(rows) + len(missing)} videos not found in {videos} (tried the name as is and "
            f"with {', '.join(VIDEO_SUFFIXES)}), e.g. {', '.join(missing[:5])}"
        )
    return _write(rows, data_dir(dest_tasks_dir) / f"{DATASETS[name]}.parquet")


def write_tiny(dest_tasks_dir: str | Path, n: int = 6, frames: int = 8, seed: int = 0) -> Path:
    """Synthetic GIF clips and their QA rows for fvlm_tiny_video_qa; return the parquet path.

    GIF because PIL writes it, so the stand-in needs no video encoder.
    """
    if n < 1 or frames < 1:
        raise ValueError(f"n and frames must be >= 1, got n={n!r}, frames={frames!r}")
    clips = data_dir(dest_tasks_dir) / TINY
    clips.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        video = clips / f"clip_{i:03d}.gif"
        first, *rest = synthetic_video(frames, seed + i)
        first.save(video, save_all=True, append_images=rest, duration=125, loop=0)
        question, answer = TINY_QA[i % len(TINY_QA)]
        rows.append(_row(f"tiny_{i}", video, question, answer))
    return _write(rows, data_dir(dest_tasks_dir) / f"{TINY}.parquet")


def materialize(dest: str | Path) -> Path:
    """Copy the package's task tree (fastervlm/eval/tasks) into `dest`, the folder passed as --include_path.

    YAML and Python files are overwritten so a rerun picks up changes; data/ folders already there are kept.
    """
    target = Path(dest)
    _copy_tree(resources.files("fastervlm.eval") / "tasks", target)
    return target


def _copy_tree(source: Traversable, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        if entry.is_dir():
            if entry.name != "__pycache__":
                _copy_tree(entry, target / entry.name)
        else:
            (target / entry.name).write_bytes(entry.read_bytes())


def _read_list(path: Path) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    entries = json.loads(path.read_text())
    if not isinstance(entries, list):
        raise ValueError(f"{path} must hold a JSON list, got {type(entries).__name__}")
    return entries


def _find_video(videos: Path, video_name: str) -> Path | None:
    for candidate in (videos / video_name, *(videos / f"{video_name}{suffix}" for suffix in VIDEO_SUFFIXES)):
        if candidate.exists():
            return candidate
    return None


def _row(question_id: object, video: Path, question: str, answer: str) -> dict[str, str]:
    return {"question_id": str(question_id), "video": str(video.resolve()), "question": question, "answer": answer}


def _write(rows: list[dict[str, str]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), path)
    return path
