"""Paper benchmarks as lmms-eval tasks: which task(s), which metric, and the scale the paper reports it on.

A benchmark is one column of the paper's tables. Its score is the mean, over its lmms-eval tasks, of one
metric times a scale (lmms-eval reports exact match as a fraction, the paper as a percentage). Keys match the
columns of the paper's CSVs in `fastervlm.data`, so our tables and the published ones line up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Benchmark:
    key: str
    title: str
    tasks: tuple[str, ...]
    metric: str
    scale: float = 1.0

    def score(self, metrics: Mapping[str, Mapping[str, float]]) -> float:
        """The paper-scale score from lmms-eval's per-task results ({task: {"metric,filter": value}})."""
        values = [_metric_value(metrics, task, self.metric) for task in self.tasks]
        return sum(values) / len(values) * self.scale


def _metric_value(metrics: Mapping[str, Mapping[str, float]], task: str, metric: str) -> float:
    if task not in metrics:
        raise KeyError(f"lmms-eval results have no task {task!r}; they have: {', '.join(sorted(metrics))}")
    row = metrics[task]
    for name, value in row.items():
        if name.split(",")[0] == metric:
            return float(value)
    raise KeyError(f"lmms-eval results for {task!r} have no metric {metric!r}; they have: {', '.join(sorted(row))}")


def _b(key: str, title: str, tasks: str | tuple[str, ...], metric: str, scale: float = 1.0) -> Benchmark:
    return Benchmark(key, title, (tasks,) if isinstance(tasks, str) else tasks, metric, scale)


# The paper's image benchmarks (Tables 1-3). POPE is F1 averaged over its three splits, MME the perception score.
PAPER: tuple[Benchmark, ...] = (
    _b("vqav2", "VQAv2", "vqav2_val", "exact_match", 100),
    _b("gqa", "GQA", "gqa", "exact_match", 100),
    _b("vizwiz", "VizWiz", "vizwiz_vqa_val", "exact_match", 100),
    _b("sqa_img", "SQA-IMG", "scienceqa_img", "exact_match", 100),
    _b("textvqa", "TextVQA", "textvqa_val", "exact_match", 100),
    _b("pope", "POPE", ("pope_random", "pope_pop", "pope_adv"), "pope_f1_score", 100),
    _b("mme", "MME", "mme", "mme_perception_score"),
    _b("mmbench", "MMB", "mmbench_en_dev", "gpt_eval_score"),
    _b("mmbench_cn", "MMB-CN", "mmbench_cn_dev", "gpt_eval_score"),
    _b("mmvet", "MM-Vet", "mmvet", "gpt_eval_score"),
)

# Video QA (Table 4): the project's own tasks (fastervlm/eval/tasks/videoqa), ActivityNet-QA included: the
# paper scores its first 1K questions with the same judge as the other three (lmms-eval's activitynetqa task runs
# the whole test set with another prompt).
VIDEO: tuple[Benchmark, ...] = (
    _b("tgif_acc", "TGIF Acc", "fvlm_tgif_qa", "accuracy"),
    _b("tgif_score", "TGIF Score", "fvlm_tgif_qa", "score"),
    _b("msvd_acc", "MSVD Acc", "fvlm_msvd_qa", "accuracy"),
    _b("msvd_score", "MSVD Score", "fvlm_msvd_qa", "score"),
    _b("msrvtt_acc", "MSRVTT Acc", "fvlm_msrvtt_qa", "accuracy"),
    _b("msrvtt_score", "MSRVTT Score", "fvlm_msrvtt_qa", "score"),
    _b("actnet_acc", "ActNet Acc", "fvlm_activitynet_qa", "accuracy"),
    _b("actnet_score", "ActNet Score", "fvlm_activitynet_qa", "score"),
)

# The embedded default grid's stand-in tasks (fastervlm/eval/tasks/standin), generated on the fly; their gold
# answers are the unpruned tiny model's own, so a score is agreement with the unpruned model.
STANDIN: tuple[Benchmark, ...] = (
    _b("tiny_vqa", "Tiny VQA", "fvlm_tiny_vqa", "exact_match", 100),
    _b("tiny_mc", "Tiny MC", "fvlm_tiny_mc", "acc", 100),
    _b("tiny_video", "Tiny Video", "fvlm_tiny_video_qa", "accuracy"),
)

BENCHMARKS: dict[str, Benchmark] = {b.key: b for b in (*PAPER, *VIDEO, *STANDIN)}


def benchmark(key: str) -> Benchmark:
    if key not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {key!r}; choose from: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[key]
