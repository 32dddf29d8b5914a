"""The LLaVA adapter finds the right modules and refuses what it cannot prune."""

from __future__ import annotations

import pytest

from fastervlm.models import adapter_for
from fastervlm.models.llava import encoder_layer_for_feature


@pytest.mark.parametrize(("feature", "layers", "index"), [(-2, 24, 22), (-1, 24, 23), (1, 24, 0), (24, 24, 23)])
def test_feature_layer_to_encoder_layer(feature, layers, index):
    """hidden_states[-2] is the output of layer 22 of 24, the layer attentions[-2] comes from."""
    assert encoder_layer_for_feature(feature, layers) == index


@pytest.mark.parametrize("feature", [0, 25, -25])
def test_feature_layer_out_of_range(feature):
    with pytest.raises(ValueError, match="score_layer must select an encoder layer's output"):
        encoder_layer_for_feature(feature, 24)


def test_adapter_locates_modules(tiny):
    adapter = adapter_for(tiny)
    attention = adapter.vision_attention(tiny, "image", None)
    layer = tiny.model.vision_tower.encoder.layers[1]  # 3 layers, feature layer -2
    assert attention.q_proj is layer.self_attn.q_proj and attention.k_proj is layer.self_attn.k_proj
    assert attention.num_heads == 4 and attention.scale == pytest.approx((32 // 4) ** -0.5)
    assert adapter.projector(tiny) is tiny.model.multi_modal_projector
    assert adapter.base(tiny) is tiny.model
    assert adapter.patch_grid(tiny) == (24, 24) and adapter.patches_per_view(tiny) == 576
    assert [(m.name, m.token_id) for m in adapter.modalities(tiny)] == [("image", tiny.config.image_token_id)]


def test_vision_tower_without_cls_is_refused(tiny):
    """A class named like SigLIP's tower stands in for an encoder whose patches have no [CLS] token."""
    tiny.model.vision_tower.__class__ = type("SiglipVisionModel", (type(tiny.model.vision_tower),), {})
    with pytest.raises(ValueError, match=r"the vision_tower \(SiglipVisionModel\) has no \[CLS\] token"):
        adapter_for(tiny).check(tiny, frozenset({"vision_cls_row"}), None)
