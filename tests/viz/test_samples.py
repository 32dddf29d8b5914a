"""Samples for the analyses: a folder of images, or a dataset saved with `datasets`."""

from __future__ import annotations

import datasets
import pytest

from fastervlm.tiny import synthetic_images
from fastervlm.viz.samples import sample_names, samples


def test_saved_dataset_gives_its_images_and_prompts(tmp_path):
    images = synthetic_images(3)
    table = datasets.Dataset.from_dict(
        {"image": images, "question": ["a?", "b?", "c?"]},
        features=datasets.Features({"image": datasets.Image(), "question": datasets.Value("string")}),
    )
    table.save_to_disk(str(tmp_path / "set"))
    got = samples(tmp_path / "set", 2, "default?")
    assert [prompt for _, prompt in got] == ["a?", "b?"]
    assert [image.size for image, _ in got] == [image.size for image in images[:2]]
    assert list(got[0][0].getdata())[:5] == list(images[0].convert("RGB").getdata())[:5]
    assert sample_names(tmp_path / "set", 2) == ["row 0", "row 1"]  # no id column: the row numbers


def test_dataset_without_prompts_uses_the_default_and_needs_images(tmp_path):
    datasets.Dataset.from_dict({"image": synthetic_images(1)}).save_to_disk(str(tmp_path / "plain"))
    assert samples(tmp_path / "plain", 5, "default?")[0][1] == "default?"
    datasets.Dataset.from_dict({"image": synthetic_images(2), "image_id": [7, 9]}).save_to_disk(str(tmp_path / "ids"))
    assert sample_names(tmp_path / "ids", 5) == ["7", "9"]
    datasets.Dataset.from_dict({"text": ["x"]}).save_to_disk(str(tmp_path / "textonly"))
    with pytest.raises(ValueError, match="needs an 'image' column"):
        samples(tmp_path / "textonly", 1, "default?")


def test_folder_of_images_still_works(tmp_path):
    for i, image in enumerate(synthetic_images(2)):
        image.save(tmp_path / f"{i}.png")
    assert [prompt for _, prompt in samples(tmp_path, 5, "p")] == ["p", "p"]


def test_analyze_reads_a_saved_dataset(tmp_path, capsys):
    import json

    from fastervlm.cli import main

    datasets.Dataset.from_dict(
        {"image": synthetic_images(2), "prompt": ["USER: <image>\nWhat? ASSISTANT:"] * 2}
    ).save_to_disk(str(tmp_path / "set"))
    out = tmp_path / "agreement.json"
    argv = ["analyze", "agreement", "--data", str(tmp_path / "set"), "--n", "2", "--methods", "fastervlm,random"]
    assert main([*argv, "--json", str(out)]) == 0
    assert json.loads(out.read_text())["samples"] == 2
