"""demo / generate / viz and the lmms-eval model's class lookup on Qwen2-VL, Qwen2.5-VL, Qwen3-VL, LLaVA-OneVision."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from fastervlm.cli import main
from fastervlm.demo import ARCHS, chatml_prompt
from fastervlm.tiny import synthetic_images
from fastervlm.tiny.qwen2_vl import IMAGE_PROMPT


@pytest.fixture
def image_file(tmp_path: Path) -> Path:
    path = tmp_path / "picture.png"
    synthetic_images(1)[0].save(path)
    return path


def test_demo_on_qwen2_5_vl_prunes_each_image_by_its_own_size(tmp_path, capsys):
    """400 x 300 and 336 x 336 images: 3 x 5 and 4 x 4 merged tokens, half of each kept."""
    png = tmp_path / "kept.png"
    argv = ["demo", "--arch", "qwen2.5-vl", "--ratios", "0.5", "--images", "2", "--repeats", "1", "--out", str(png)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("unpruned", "fastervlm "))}
    assert rows["unpruned"][3:5] == ["15,", "16"] and rows["fastervlm"][3] == "8"
    with Image.open(png) as picture:
        assert picture.format == "PNG"


def test_generate_on_llava_onevision_with_an_in_llm_method(image_file, capsys):
    argv = ["generate", "--model", "tiny", "--arch", "llava-onevision", "--image", str(image_file), "--prompt", "What?"]
    assert main([*argv, "--method", "fastv", "--ratio", "0.5", "--max-new-tokens", "2"]) == 0
    out = capsys.readouterr().out
    assert "LLaVA-OneVision" in out.splitlines()[0] and "fastv: visual tokens into the LLM 302 -> 151" in out


def test_viz_on_qwen3_vl_draws_the_received_attention(image_file, tmp_path, capsys):
    out = tmp_path / "viz.png"
    assert main(["viz", "--arch", "qwen3-vl", "--image", str(image_file), "--ratios", "0.5", "--out", str(out)]) == 0
    assert f"written: {out}" in capsys.readouterr().out
    with Image.open(out) as picture:
        assert picture.format == "PNG" and picture.size[1] > 2 * 100


def test_prompts_follow_each_family_template():
    assert ARCHS["qwen2.5-vl"].prompt("Why?", "<image>") == chatml_prompt("Why?", IMAGE_PROMPT)
    assert ARCHS["llava-onevision"].prompt("Why?", "<image>").startswith("<|im_start|>user\n<image>\nWhy?")


@pytest.mark.parametrize("arch", ["qwen2-vl", "qwen2.5-vl", "qwen3-vl", "llava-onevision"])
def test_lmms_model_loads_these_classes(arch, tmp_path):
    from fastervlm.eval.lmms_model import model_class_for

    family = ARCHS[arch]
    family.tiny_processor()  # the family's tiny parts build offline
    family.model_class.config_class().save_pretrained(tmp_path)
    assert model_class_for(str(tmp_path)) is family.model_class
