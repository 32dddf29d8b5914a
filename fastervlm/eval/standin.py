"""The embedded default grid's inputs, made on the fly: a tiny checkpoint and small stand-in tasks.

Nothing is downloaded. The checkpoint is the tiny random LLaVA-1.5 saved with `save_pretrained`, so the grid
loads it through the same `from_pretrained` path a real checkpoint takes. The stand-in tasks are real lmms-eval
task YAMLs (fastervlm/eval/tasks/standin) over parquet files of synthetic images written here.

Random weights answer nothing correctly, so the gold answers are the unpruned tiny model's own: `label` runs the
unpruned model through lmms-eval on the tasks and writes its answers back as the targets. A cell's score is then
its agreement with the unpruned model (the unpruned cell scores 100), which is what pruning can change.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from datasets import Dataset, Features, Image, Sequence, Value

from fastervlm.tiny.llava import synthetic_images, tiny_llava, tiny_processor

TASKS = ("fvlm_tiny_vqa", "fvlm_tiny_mc")
QUESTIONS = (
    "What colour is the largest shape?",
    "What is in the top left corner?",
    "How many shapes are there?",
    "What shape is in the middle?",
    "Which side is brighter?",
)
# Equal byte lengths: the tiny byte-level tokenizer gives each the same token count, so no choice wins by length.
CHOICES = ("red", "tan", "sky", "ink")
LABELLED = ".labelled"

# LLaVA-1.5's conversation ("USER: <image>\n... ASSISTANT:"), as the tiny processor's chat template.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'].upper() + ': ' }}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}{{ '<image>\n' }}"
    "{% elif item['type'] == 'video' %}{{ '<video>\n' }}{% endif %}{% endfor %}"
    "{% for item in message['content'] %}{% if item['type'] == 'text' %}{{ item['text'] + ' ' }}{% endif %}"
    "{% endfor %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def tiny_checkpoint(dest: Path, text_layers: int = 4, seed: int = 0) -> Path:
    """A tiny random LLaVA-1.5 (the real 336/14 vision geometry) saved as a local checkpoint with its processor."""
    dest = Path(dest)
    if (dest / "config.json").is_file():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    tiny_llava(seed=seed, text_layers=text_layers).save_pretrained(dest)
    processor = tiny_processor()
    processor.chat_template = CHAT_TEMPLATE
    processor.save_pretrained(dest)
    return dest


def write(tasks_dir: Path, n: int = 8, seed: int = 0) -> Path:
    """Unlabelled stand-in data under `tasks_dir/standin/data`; `label` fills in the answers."""
    data = Path(tasks_dir) / "standin" / "data"
    data.mkdir(parents=True, exist_ok=True)
    images = synthetic_images(n, seed=seed)
    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(n)]
    vqa = {"question_id": list(range(n)), "image": images, "question": questions, "answer": [""] * n}
    vqa_features = Features(question_id=Value("int64"), image=Image(), question=Value("string"), answer=Value("string"))
    Dataset.from_dict(vqa, features=vqa_features).to_parquet(str(data / "fvlm_tiny_vqa.parquet"))
    mc = {
        "question_id": list(range(n)),
        "image": images,
        "question": [f"Which colour appears most? ({i})" for i in range(n)],
        "choices": [list(CHOICES)] * n,
        "label": [0] * n,
    }
    mc_features = Features(
        question_id=Value("int64"),
        image=Image(),
        question=Value("string"),
        choices=Sequence(Value("string")),
        label=Value("int64"),
    )
    Dataset.from_dict(mc, features=mc_features).to_parquet(str(data / "fvlm_tiny_mc.parquet"))
    (data / LABELLED).unlink(missing_ok=True)
    return data


def is_labelled(tasks_dir: Path) -> bool:
    return (Path(tasks_dir) / "standin" / "data" / LABELLED).is_file()


def apply_labels(tasks_dir: Path, samples: dict[str, list[dict[str, Any]]]) -> None:
    """Write the unpruned model's answers (lmms-eval's logged samples) back into the stand-in data as gold."""
    data = Path(tasks_dir) / "standin" / "data"
    # doc_id is the row's index in the split, which is the parquet's row order.
    answers = {s["doc_id"]: s["filtered_resps"][0] for s in samples["fvlm_tiny_vqa"]}
    choices = {s["doc_id"]: _argmin([r[0] for r in s["filtered_resps"]]) for s in samples["fvlm_tiny_mc"]}
    for task, column, values in (("fvlm_tiny_vqa", "answer", answers), ("fvlm_tiny_mc", "label", choices)):
        path = data / f"{task}.parquet"
        dataset = Dataset.from_parquet(str(path))
        if set(values) != set(range(len(dataset))):
            raise RuntimeError(f"labelling {task}: the logged samples do not cover every question")
        labelled = dataset.map(lambda row, i, c=column, v=values: {c: v[i]}, with_indices=True)
        tmp = path.with_suffix(".tmp")
        labelled.to_parquet(str(tmp))
        tmp.replace(path)
    (data / LABELLED).write_text(json.dumps({"source": "unpruned model", "tasks": list(TASKS)}))


def _argmin(values: list[float]) -> int:
    return min(range(len(values)), key=values.__getitem__)
