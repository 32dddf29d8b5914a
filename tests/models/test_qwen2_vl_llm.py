"""FastV and SparseVLM inside Qwen2.5-VL's language model: M-RoPE in the q/k scoring, original (t, h, w) ids kept.

The FastV reference runs the stock decoder layers one by one (tests/reference.run_layers) on the stock model's
merged embeddings and its own get_rope_index ids, scores from the eager map at layer K-1, and re-runs the pruned
prefix at every step without a cache, as tests/methods/test_fastv.py does for LLaVA.
"""

from __future__ import annotations

import importlib

import pytest
import torch

import fastervlm
from fastervlm.budget import kept_count
from fastervlm.runtime.sequence import gather_through
from fastervlm.tiny import synthetic_images
from fastervlm.tiny.qwen2_vl import IMAGE_PROMPT, tiny_qwen2_5_vl, tiny_qwen2_vl_processor
from tests.reference import merged_embeddings, run_layers

LAYERS = 4
STEPS = 4
PROMPTS = [IMAGE_PROMPT + "What is it?", "Hi " + IMAGE_PROMPT + "Describe this one."]


@pytest.fixture(scope="module")
def processor():
    return tiny_qwen2_vl_processor()


@pytest.fixture(scope="module")
def batch(processor):
    return processor(images=synthetic_images(2), text=PROMPTS, padding=True, return_tensors="pt")


def fastv_reference(model, inputs, ratio: float, k_layer: int = 2):
    """Greedy tokens, per-step logits and kept sets of FastV with the last token's attention and original ids."""
    lm = model.model.language_model
    embeds = merged_embeddings(model, inputs)
    real = inputs["attention_mask"].bool()
    image = inputs["input_ids"] == model.config.image_token_id
    positions, _ = model.model.get_rope_index(
        inputs["input_ids"], inputs["mm_token_type_ids"], image_grid_thw=inputs["image_grid_thw"], attention_mask=real
    )
    kept_image, tokens, logits_per_step = None, [], []
    with torch.no_grad():
        for _ in range(STEPS):
            low, weights = run_layers(lm, embeds, positions, real, range(k_layer), keep_weights_of=k_layer - 1)
            if kept_image is None:
                scores = [weights[b, :, -1].mean(dim=0)[: image.shape[1]][image[b]] for b in range(len(embeds))]
                kept_image = [s.topk(kept_count(len(s), ratio)).indices.sort().values for s in scores]
            keep = ~torch.nn.functional.pad(image, (0, embeds.shape[1] - image.shape[1]))
            for b, kept in enumerate(kept_image):
                keep[b, image[b].nonzero().squeeze(1)[kept]] = True
            rows = [keep[b].nonzero().squeeze(1) for b in range(len(keep))]
            width = max(len(r) for r in rows)
            gather = torch.stack([torch.cat([r.new_zeros(width - len(r)), r]) for r in rows])
            short_real = torch.stack(
                [torch.cat([torch.zeros(width - len(r), dtype=torch.bool), real[b][r]]) for b, r in enumerate(rows)]
            )
            short = low.gather(1, gather[..., None].expand(-1, -1, low.shape[-1]))
            short_positions = positions.gather(2, gather.expand(3, -1, -1))
            high, _ = run_layers(lm, short, short_positions, short_real, range(k_layer, len(lm.layers)))
            logits = model.lm_head(lm.norm(high[:, -1]))
            tokens.append(logits.argmax(-1))
            logits_per_step.append(logits)
            embeds = torch.cat([embeds, lm.embed_tokens(tokens[-1])[:, None]], dim=1)
            real = torch.cat([real, torch.ones(len(real), 1, dtype=torch.bool)], dim=1)
            positions = torch.cat([positions, positions[..., -1:] + 1], dim=-1)
    return torch.stack(tokens, dim=1), logits_per_step, kept_image


def test_fastv_matches_hand_built_layer_loop_with_mrope(batch):
    expected, expected_logits, expected_kept = fastv_reference(
        tiny_qwen2_5_vl(attn_implementation="eager", text_layers=LAYERS), batch, 0.5
    )
    model = fastervlm.prune(tiny_qwen2_5_vl(text_layers=LAYERS), "fastv", ratio=0.5)
    with torch.no_grad():
        out = model.generate(
            **batch, max_new_tokens=STEPS, do_sample=False, output_logits=True, return_dict_in_generate=True
        )
    report = fastervlm.last_report(model)
    assert [views[0].tolist() for views in report.kept_indices] == [k.tolist() for k in expected_kept]
    assert torch.equal(out.sequences[:, batch["input_ids"].shape[1] :], expected)
    for got, want in zip(out.logits, expected_logits, strict=True):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


@pytest.fixture
def no_eager_attention(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any call of Qwen2.5-VL's eager kernel (tower or LLM) fails the test: in-LLM methods keep the sdpa kernel."""
    qwen = importlib.import_module("transformers.models.qwen2_5_vl.modeling_qwen2_5_vl")

    def refuse(*args, **kwargs):
        raise AssertionError("the eager attention kernel ran")

    monkeypatch.setattr(qwen, "eager_attention_forward", refuse)


SPARSE = {"layers": (0, 2), "schedule": (10, 6)}


@pytest.mark.parametrize(("method", "options"), [("fastv", {"ratio": 0.5}), ("sparsevlm", SPARSE)])
def test_batched_equals_one_by_one_without_eager(method, options, processor, batch, no_eager_attention):
    model = fastervlm.prune(tiny_qwen2_5_vl(text_layers=LAYERS), method, **options)
    with torch.no_grad():
        together = model.generate(**batch, max_new_tokens=STEPS, do_sample=False)
        report = fastervlm.last_report(model)
        for b, (image, prompt) in enumerate(zip(synthetic_images(2), PROMPTS, strict=True)):
            alone = model.generate(
                **processor(images=[image], text=[prompt], return_tensors="pt"), max_new_tokens=STEPS, do_sample=False
            )
            assert torch.equal(alone[0, -STEPS:], together[b, -STEPS:])
    assert report.applied and report.visual_tokens_out < report.visual_tokens_in


def test_sparsevlm_keeps_original_ids_in_its_stages(batch):
    """Layers after a stage get the (t, h, w) ids of the kept tokens they see, gathered from the stock ids (the
    runtime's plans say which columns survived; the ids come from the stock get_rope_index)."""
    model = fastervlm.prune(tiny_qwen2_5_vl(text_layers=LAYERS), "sparsevlm", **SPARSE)
    seen = []
    layer = model.model.language_model.layers[3]
    handle = layer.register_forward_pre_hook(lambda m, a, k: seen.append(k["position_embeddings"]), with_kwargs=True)
    with torch.no_grad():
        model(**batch)
    handle.remove()
    stock, _ = model.model.get_rope_index(
        batch["input_ids"],
        batch["mm_token_type_ids"],
        image_grid_thw=batch["image_grid_thw"],
        attention_mask=batch["attention_mask"],
    )
    plans = fastervlm.api.installation(model).llm.plans
    ids = gather_through(plans, stock.permute(1, 2, 0), fill=-1).permute(2, 0, 1)  # made tokens: -1
    source = ids[0] >= 0
    cos, _ = model.model.language_model.rotary_emb(seen[0][0], position_ids=ids.clamp(min=0))
    assert int(source.sum()) > 0 and torch.equal(seen[0][0][source], cos[source])


def test_ratio_zero_is_stock_and_contiguous_positions_are_refused(batch):
    stock = tiny_qwen2_5_vl(text_layers=LAYERS)
    model = fastervlm.prune(tiny_qwen2_5_vl(text_layers=LAYERS), "fastv", ratio=0.0)
    with torch.no_grad():
        assert torch.equal(
            model.generate(**batch, max_new_tokens=STEPS, do_sample=False),
            stock.generate(**batch, max_new_tokens=STEPS, do_sample=False),
        )
    with pytest.raises(ValueError, match="positions='contiguous' would renumber"):
        fastervlm.prune(stock, "fastv", ratio=0.5, positions="contiguous")
