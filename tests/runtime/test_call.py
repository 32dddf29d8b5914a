"""Per-call state: concurrent generations on one pruned model are each what they are alone (issue 15)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

import fastervlm
from fastervlm.tiny import synthetic_images, tiny_llava_next, tiny_llava_next_processor
from tests.test_matrix import CASES, text_layers_for

THREADS = 3
NEW = 3
QUESTIONS = ["What is it?", "Describe the picture in detail.", "Colour?"]


def lockstep(model, modules) -> threading.Barrier:
    """Every thread waits for the others at each listed module's forward, so their calls overlap step by step."""
    barrier = threading.Barrier(THREADS, timeout=60)

    def wait(module: torch.nn.Module, args: tuple) -> None:
        barrier.wait()

    for module in modules:
        module.register_forward_pre_hook(wait)
    return barrier


def concurrent_equals_sequential(model, inputs: list[dict], modules) -> None:
    options = {"max_new_tokens": NEW, "min_new_tokens": NEW, "do_sample": False}
    expected = []
    with torch.no_grad():
        for x in inputs:
            expected.append((model.generate(**x, **options), fastervlm.last_report(model).kept_indices))
    lockstep(model, modules)

    def run(x: dict) -> tuple[torch.Tensor, list]:
        with torch.no_grad():
            out = model.generate(**x, **options)
        return out, fastervlm.last_report(model).kept_indices

    with ThreadPoolExecutor(THREADS) as pool:
        got = list(pool.map(run, inputs))
    for (out, kept), (want, want_kept) in zip(got, expected, strict=True):
        assert torch.equal(out, want)
        assert [[v.tolist() for v in s] for s in kept] == [[v.tolist() for v in s] for s in want_kept]


@pytest.mark.parametrize(("method", "options"), CASES)
def test_threads_generating_on_one_model(make_llava, processor, method, options):
    """Every method: the vision encode, the projector's selection and each in-LLM stage overlap across threads."""
    model = fastervlm.prune(make_llava(text_layers=text_layers_for(method, options)), method=method, **options)
    images = synthetic_images(THREADS, seed=3)
    inputs = [
        processor(images=[image], text=[f"USER: <image>\n{q} ASSISTANT:"], return_tensors="pt")
        for image, q in zip(images, QUESTIONS, strict=True)
    ]
    text = model.model.language_model.layers
    concurrent_equals_sequential(model, inputs, [model.model.vision_tower.encoder.layers[0], text[0], text[-1]])


def test_threads_generating_on_one_llava_next():
    """LLaVA-NeXT's adapter records each encode's layout: per call too."""
    model = fastervlm.prune(tiny_llava_next(text_layers=1), method="fastervlm", ratio=0.9)
    processor = tiny_llava_next_processor()
    images = synthetic_images(THREADS, seed=4)
    inputs = [
        processor(images=[image], text=[f"USER: <image>\n{q} ASSISTANT:"], return_tensors="pt")
        for image, q in zip(images, QUESTIONS, strict=True)
    ]
    tower = model.model.vision_tower.encoder.layers
    concurrent_equals_sequential(model, inputs, [tower[0], model.model.multi_modal_projector])
