"""The lmms-eval model: answers and likelihoods equal the pruned model's own, batching changes nothing, errors raise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("lmms_eval")

from lmms_eval.api.instance import Instance

from fastervlm import last_report
from fastervlm.api import config_of
from fastervlm.eval import standin, videoqa
from fastervlm.eval.lmms_model import FasterVLMLmms, model_class_for
from fastervlm.methods import resolve_config
from fastervlm.tiny.llava import synthetic_images, tiny_processor

TASK, SPLIT = "probe", "test"
QUESTIONS = ["What is shown?", "Which colour is at the top?", "How many shapes?", "Is it bright?"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return standin.tiny_checkpoint(tmp_path_factory.mktemp("ckpt"), text_layers=3)


def model(checkpoint: Path, **kwargs) -> FasterVLMLmms:
    lm = FasterVLMLmms(pretrained=str(checkpoint), device="cpu", dtype="float32", **kwargs)
    docs = [{"image": image, "question": q} for image, q in zip(synthetic_images(4), QUESTIONS, strict=True)]
    lm.task_dict = {TASK: {SPLIT: docs}}
    return lm


def visual(doc: dict) -> list:
    return [doc["image"]]


def meta(doc_id: int) -> dict:
    return {"task": TASK, "doc_id": doc_id, "repeats": 1}


def generate_requests(gen_kwargs: dict) -> list[Instance]:
    return [
        Instance("generate_until", (q, dict(gen_kwargs), visual, i, TASK, SPLIT), idx=0, metadata=meta(i))
        for i, q in enumerate(QUESTIONS)
    ]


def loglikelihood_requests(continuations: list[str]) -> list[Instance]:
    return [
        Instance("loglikelihood", (QUESTIONS[i], c, visual, i, TASK, SPLIT), idx=0, metadata=meta(i))
        for i, c in enumerate(continuations)
    ]


def direct_answer(lm: FasterVLMLmms, doc: dict, max_new_tokens: int) -> str:
    prompt = lm._messages(doc["question"], [doc["image"]])
    inputs = lm.processor(text=[prompt], images=[doc["image"]], return_tensors="pt")
    out = lm.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return lm.processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)[0].strip()


def test_generate_equals_the_pruned_model_and_batching_changes_nothing(checkpoint: Path) -> None:
    kwargs = {"max_new_tokens": 5, "temperature": 0, "until": ["\n\n"]}
    one = model(checkpoint, method="fastervlm", ratio=0.9, batch_size=1)
    answers = one.generate_until(generate_requests(kwargs))
    assert last_report(one.model).applied
    assert answers == [direct_answer(one, doc, 5) for doc in one.task_dict[TASK][SPLIT]]
    batched = model(checkpoint, method="fastervlm", ratio=0.9, batch_size=3)
    assert batched.generate_until(generate_requests(kwargs)) == answers
    assert one.tally.as_dict() == {"samples": 4, "total_mean": 576.0, "kept_mean": 58.0}


def test_until_cuts_the_answer(checkpoint: Path) -> None:
    lm = model(checkpoint, method="fastervlm", ratio=0.5)
    full = lm.generate_until(generate_requests({"max_new_tokens": 6}))
    stop = full[0][2]
    cut = lm.generate_until(generate_requests({"max_new_tokens": 6, "until": [stop]}))
    assert cut[0] == full[0].split(stop)[0].strip()


def test_loglikelihood_is_the_summed_nll_of_the_continuation(checkpoint: Path) -> None:
    lm = model(checkpoint, method="fastv", ratio=0.75, batch_size=2)
    continuations = [" red", " a long answer", " no", " three shapes"]
    results = lm.loglikelihood(loglikelihood_requests(continuations))
    tokenizer = lm.processor.tokenizer
    for i, (result, cont) in enumerate(zip(results, continuations, strict=True)):
        nll, greedy = result.text
        doc = lm.task_dict[TASK][SPLIT][i]
        prompt = lm._messages(doc["question"], [doc["image"]])
        inputs = lm.processor(text=[prompt + cont], images=[doc["image"]], return_tensors="pt")
        n = len(tokenizer(prompt + cont, add_special_tokens=False).input_ids) - len(
            tokenizer(prompt, add_special_tokens=False).input_ids
        )
        labels = torch.full_like(inputs["input_ids"], -100)
        labels[:, -n:] = inputs["input_ids"][:, -n:]
        with torch.no_grad():
            loss = lm.model(**inputs, labels=labels).loss
        assert nll == pytest.approx(loss.item() * n, rel=1e-4)
        assert isinstance(greedy, bool)


def test_unpruned_counts_every_visual_token_and_switching_methods_in_place(checkpoint: Path) -> None:
    lm = model(checkpoint)
    lm.generate_until(generate_requests({"max_new_tokens": 2}))
    assert lm.tally.as_dict()["kept_mean"] == 576.0
    lm.set_pruning("random", ratio=0.5, seed=1)
    lm.generate_until(generate_requests({"max_new_tokens": 2}))
    assert lm.tally.as_dict()["kept_mean"] == 288.0
    lm.set_pruning()
    assert lm.method == "none"
    assert not hasattr(lm.model, "_fastervlm")


def test_errors_name_the_argument(checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"dtype='float8'.*auto"):
        FasterVLMLmms(pretrained=str(checkpoint), dtype="float8")
    with pytest.raises(ValueError, match="device_map='balanced'"):
        FasterVLMLmms(pretrained=str(checkpoint), device_map="balanced")
    with pytest.raises(ValueError, match="takes no ratio"):
        FasterVLMLmms(pretrained=str(checkpoint), method="none", ratio=0.5)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match=r"'bert' model; fastervlm supports: llava, llava_next, .*video_llava"):
        model_class_for(str(tmp_path))


def test_a_generation_error_fails_loudly(checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lm = model(checkpoint, method="fastervlm", ratio=0.9)

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(lm.model, "generate", broken)
    with pytest.raises(RuntimeError, match="simulated"):
        lm.generate_until(generate_requests({"max_new_tokens": 2}))


def test_a_pruned_batch_that_was_not_pruned_raises(checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lm = model(checkpoint, method="fastervlm", ratio=0.9)
    monkeypatch.setattr("fastervlm.eval.lmms_model.fastervlm.last_report", lambda _model: None)
    with pytest.raises(RuntimeError, match="did not prune a batch with 576 visual tokens"):
        lm.generate_until(generate_requests({"max_new_tokens": 2})[:1])


def test_lmms_eval_resolves_the_entry_point() -> None:
    from lmms_eval.models import get_model

    assert get_model("fastervlm") is FasterVLMLmms


def run_lmms_eval(prefix: list[str], checkpoint: Path, tasks: Path, out: Path) -> dict[str, list[dict]]:
    model_args = f"pretrained={checkpoint},method=fastervlm,ratio=0.9,device=cpu,dtype=float32"
    command = [*prefix, "-m", "lmms_eval", "--model", "fastervlm", "--model_args", model_args]
    command += [
        "--tasks",
        "fvlm_tiny_vqa,fvlm_tiny_mc",
        "--include_path",
        str(tasks),
        "--batch_size",
        "2",
        "--output_path",
        str(out),
        "--log_samples",
    ]
    # DEBUG: lmms-eval exits 0 on a failed evaluation otherwise.
    done = subprocess.run([*command, "--verbosity", "DEBUG"], capture_output=True, text=True, env=os.environ.copy())
    assert done.returncode == 0, done.stderr[-3000:]
    samples = {}
    for path in out.rglob("*_samples_*.jsonl"):
        task = path.stem.split("_samples_")[1]
        samples[task] = sorted((json.loads(line) for line in path.open()), key=lambda s: s["doc_id"])
    return samples


@pytest.mark.slow
def test_lmms_eval_cli_with_two_data_parallel_processes_matches_one(checkpoint: Path, tmp_path: Path) -> None:
    tasks = videoqa.materialize(tmp_path / "tasks")
    standin.write(tasks)
    single = run_lmms_eval([sys.executable], checkpoint, tasks, tmp_path / "one")
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--cpu"]
    parallel = run_lmms_eval(launcher, checkpoint, tasks, tmp_path / "two")
    assert set(single) == set(parallel) == {"fvlm_tiny_vqa", "fvlm_tiny_mc"}
    for task in single:
        assert [s["doc_id"] for s in parallel[task]] == list(range(8))
        assert [s["filtered_resps"] for s in parallel[task]] == [s["filtered_resps"] for s in single[task]]


def test_budget_follows_prunes_one_rule(checkpoint: Path) -> None:
    """model_args ratio / tokens as prune() takes them: both is an error, neither is the method's default."""
    with pytest.raises(ValueError, match="give exactly one of ratio or tokens"):
        model(checkpoint, method="fastervlm", ratio=0.5, tokens=58)
    lm = model(checkpoint, method="fastervlm")

    def budget(config: object) -> tuple:  # prune() resolves the other fields per model (fastervlm's score)
        return config.ratio, config.tokens

    assert budget(config_of(lm.model)) == budget(resolve_config("fastervlm", {}))
    lm.set_pruning("fastervlm", tokens=58)
    assert budget(config_of(lm.model)) == budget(resolve_config("fastervlm", {"tokens": 58}))


@pytest.fixture(scope="module")
def next_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random LLaVA-NeXT saved with its processor, as a user's local checkpoint."""
    from fastervlm.tiny import tiny_llava_next, tiny_llava_next_processor

    dest = tmp_path_factory.mktemp("next")
    tiny_llava_next(text_layers=2).save_pretrained(dest)
    processor = tiny_llava_next_processor()
    processor.chat_template = standin.CHAT_TEMPLATE
    processor.save_pretrained(dest)
    return dest


def test_next_paper_mode_feeds_five_views_of_k_tokens_per_image(next_checkpoint: Path) -> None:
    """mode=paper through the harness: the paper processor's 2880 placeholders per (non-square) image, base + 4
    crops of 576, and 5 x k of them into the LLM; the unpruned cell keeps all 2880 in the same layout."""
    lm = FasterVLMLmms(pretrained=str(next_checkpoint), device="cpu", dtype="float32", mode="paper")
    docs = [
        {"image": image.resize((400, 300)), "question": q}
        for image, q in zip(synthetic_images(2), QUESTIONS[:2], strict=True)
    ]
    lm.task_dict = {TASK: {SPLIT: docs}}
    requests = [
        Instance("generate_until", (d["question"], {"max_new_tokens": 2}, visual, i, TASK, SPLIT), 0, meta(i))
        for i, d in enumerate(docs)
    ]
    lm.generate_until(requests)
    assert lm.tally.as_dict() == {"samples": 2, "total_mean": 2880.0, "kept_mean": 2880.0}
    lm.set_pruning("fastervlm", ratio=0.9)
    lm.generate_until(requests)
    report = last_report(lm.model)
    assert [[len(view) for view in views] for views in report.kept_indices] == [[58] * 5]
    assert report.visual_tokens_in == 2880 and report.visual_tokens_out == 5 * 58
    assert lm.tally.as_dict() == {"samples": 2, "total_mean": 2880.0, "kept_mean": 290.0}
    assert config_of(lm.model).ratio == 0.9
    with pytest.raises(ValueError, match="mode must be one of 'stock', 'paper'"):
        FasterVLMLmms(pretrained=str(next_checkpoint), device="cpu", dtype="float32", mode="papers")


def tower_pixels(lm: FasterVLMLmms, image) -> torch.Tensor:
    """The pixel_values the vision tower receives when the lmms-eval model answers about `image`."""
    lm.task_dict = {TASK: {SPLIT: [{"image": image, "question": "What is shown?"}]}}
    seen: list[torch.Tensor] = []

    def record(_: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        seen.append(args[0] if args else kwargs["pixel_values"])

    hook = lm.model.model.vision_tower.register_forward_pre_hook(record, with_kwargs=True)
    request = Instance("generate_until", ("What?", {"max_new_tokens": 1}, visual, 0, TASK, SPLIT), 0, meta(0))
    try:
        lm.generate_until([request])
    finally:
        hook.remove()
    return seen[0].float()


def test_pad_reaches_the_tower_as_a_square_with_the_mean_colour(checkpoint: Path) -> None:
    """image_aspect_ratio=pad: a 400 x 300 image is centred on a 400 x 400 square of the mean colour, then
    preprocessed, so the tower sees the whole image with mean-colour bands above and below (0 after
    normalisation); stock centre-crops it. The padding agrees with transformers' own LlavaImageProcessor do_pad."""
    from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

    wide = synthetic_images(1)[0].resize((400, 300))
    padded = tower_pixels(model(checkpoint, method="fastervlm", ratio=0.5, image_aspect_ratio="pad"), wide)
    cropped = tower_pixels(model(checkpoint, method="fastervlm", ratio=0.5), wide)
    band = round(336 * 50 / 400) - 1  # 50 of 400 rows above the image, at 336 px
    assert padded.shape == cropped.shape == (1, 3, 336, 336)
    assert padded[..., :band, :].abs().max() < 0.02 and padded[..., -band:, :].abs().max() < 0.02
    assert cropped[..., :band, :].abs().max() > 0.5  # the crop fills the view with the image
    processor = tiny_processor()
    native = LlavaImageProcessorPil(
        **{k: getattr(processor.image_processor, k) for k in ("size", "crop_size", "image_mean", "image_std")}
    )
    reference = native(images=[wide], do_pad=True, return_tensors="pt")["pixel_values"]
    assert torch.allclose(padded, reference, atol=0.05)
    with pytest.raises(ValueError, match="image_aspect_ratio='square' is not one of: stock, pad"):
        FasterVLMLmms(pretrained=str(checkpoint), image_aspect_ratio="square")
