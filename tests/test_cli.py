"""The command line: demo end to end on the tiny model, generate through the real from_pretrained path."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import fastervlm
from fastervlm.cli import DEMO_QUESTIONS, main
from fastervlm.demo import llava_prompt
from fastervlm.methods import METHODS
from fastervlm.tiny import synthetic_images, tiny_llava, tiny_llava_next, tiny_llava_next_processor, tiny_processor
from fastervlm.viz.overlay import DPI, PANEL_INCHES, TITLE_INCHES


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory as a user has one: config, safetensors weights, processor and tokenizer files."""
    path = tmp_path_factory.mktemp("tiny_llava")
    tiny_llava().save_pretrained(path)
    tiny_processor().save_pretrained(path)
    return path


@pytest.fixture
def image_file(tmp_path: Path) -> Path:
    path = tmp_path / "picture.png"
    synthetic_images(1)[0].save(path)
    return path


def table_rows(stdout: str, method: str = "fastervlm") -> dict[str, list[str]]:
    """ratio -> (cut before, visual tokens per sample into LLM layer 0, into the last layer) from the demo table."""
    rows = (line.split() for line in stdout.splitlines())
    return {
        cells[1]: [" ".join(cells[2:-6]), *cells[-6:-4]] for cells in rows if cells and cells[0] in ("unpruned", method)
    }


def test_demo_without_model_runs_end_to_end(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")  # rich sizes and styles the table from the environment
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE"):
        monkeypatch.delenv(name, raising=False)
    png = tmp_path / "kept.png"
    code = main(["demo", "--repeats", "1", "--max-new-tokens", "2", "--images", "1", "--out", str(png)])
    stdout = capsys.readouterr().out
    assert code == 0
    assert "RANDOM weights" in stdout.splitlines()[0]
    assert table_rows(stdout) == {
        "0": ["-", "576", "576"],
        "0.5": ["LLM", "288", "288"],
        "0.75": ["LLM", "144", "144"],
        "0.9": ["LLM", "58", "58"],
        "0.95": ["LLM", "29", "29"],
    }
    assert f"written to {png}" in stdout
    with Image.open(png) as picture:  # the model's view plus one panel per ratio
        assert picture.size == (round(5 * PANEL_INCHES * DPI), round((PANEL_INCHES + TITLE_INCHES) * DPI))


def test_demo_video_llava_runs_on_the_tiny_model(tmp_path, capsys, monkeypatch):
    """8 frames x 257 tokens; at 90 % each frame keeps 26 patches plus its [CLS] row (stock mode)."""
    monkeypatch.setenv("COLUMNS", "100")
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE"):
        monkeypatch.delenv(name, raising=False)
    png = tmp_path / "frame.png"
    argv = ["demo", "--arch", "video-llava", "--ratios", "0.9", "--images", "1", "--out", str(png)]
    code = main([*argv, "--repeats", "1", "--max-new-tokens", "2"])
    stdout = capsys.readouterr().out
    assert code == 0
    assert "RANDOM weights (Video-LLaVA-shaped" in stdout.splitlines()[0]
    assert table_rows(stdout) == {"0": ["-", "2056", "2056"], "0.9": ["LLM", "216", "216"]}
    assert f"kept patches of video 1, frame 1 written to {png}" in stdout
    with Image.open(png) as picture:  # the first frame as the model saw it, plus the one ratio's panel
        assert picture.size == (round(2 * PANEL_INCHES * DPI), round((PANEL_INCHES + TITLE_INCHES) * DPI))


def test_demo_runs_llava_next_on_its_tiny_model(tmp_path, capsys, monkeypatch):
    """One 400 x 300 image: 1368 visual tokens stock (base + unpadded crops + newlines); the pruned row counts
    every token the LLM got, newlines included, as the report of the same run says."""
    monkeypatch.setenv("COLUMNS", "100")
    png = tmp_path / "kept.png"
    argv = ["demo", "--arch", "llava-next", "--ratios", "0.9", "--images", "1", "--repeats", "1"]
    code = main([*argv, "--max-new-tokens", "2", "--out", str(png)])
    stdout = capsys.readouterr().out
    assert code == 0
    assert "RANDOM" in stdout.splitlines()[0] and "LLaVA-NeXT" in stdout.splitlines()[0]
    model = fastervlm.prune(tiny_llava_next(), method="fastervlm", ratio=0.9)
    processor = tiny_llava_next_processor()
    inputs = processor(images=synthetic_images(1), text=[llava_prompt(DEMO_QUESTIONS["images"])], return_tensors="pt")
    with torch.no_grad():
        model(**inputs)
    pruned = str(fastervlm.last_report(model).visual_tokens_out)
    assert table_rows(stdout) == {"0": ["-", "1368", "1368"], "0.9": ["LLM", pruned, pruned]}
    assert int(pruned) < 1368 and f"written to {png}" in stdout
    with Image.open(png) as picture:  # the base view plus one panel
        assert picture.size == (round(2 * PANEL_INCHES * DPI), round((PANEL_INCHES + TITLE_INCHES) * DPI))


def demo_png_titles(png: Path) -> list[str]:
    with Image.open(png) as picture:
        return picture.text["Description"].split("\n")


def test_demo_fastv_says_what_each_layer_sees_in_a_full_width_table(tmp_path, capsys, monkeypatch):
    """FastV keeps all 576 tokens in LLM layers 0-1 and 58 from layer 2: the table shows both counts and where
    the cut is, at full width although $COLUMNS is narrow (stdout is a pipe here); --threads is applied."""
    monkeypatch.setenv("COLUMNS", "40")
    png = tmp_path / "fastv.png"
    threads: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", threads.append)  # recorded, so the test's own count stays
    argv = ["demo", "--method", "fastv", "--ratios", "0.9", "--images", "1", "--repeats", "1", "--threads", "3"]
    assert main([*argv, "--max-new-tokens", "2", "--out", str(png)]) == 0
    assert threads == [3]
    stdout = capsys.readouterr().out
    assert table_rows(stdout, "fastv") == {"0": ["-", "576", "576"], "0.9": ["layer 2", "576", "58"]}
    assert all("\N{HORIZONTAL ELLIPSIS}" not in line for line in stdout.splitlines())
    assert "visual tokens per sample entering LLM layer 0 and the last layer" in " ".join(stdout.split())
    assert demo_png_titles(png) == ["model view", "ratio 0.9: 58 kept", "what LLM layers 2+ see"]


def test_demo_pool_png_shows_merged_tokens_undimmed(tmp_path, capsys):
    """2-D pooling keeps no patch as is and feeds every patch into its 7 x 8 merged tokens: the panel says so and
    is the model view itself, not a fully dimmed "(0 kept)" one."""
    png = tmp_path / "pool.png"
    argv = ["demo", "--method", "pool", "--ratios", "0.9", "--images", "1", "--repeats", "1", "--max-new-tokens", "1"]
    assert main([*argv, "--out", str(png)]) == 0
    assert table_rows(capsys.readouterr().out, "pool")["0.9"] == ["LLM", "56", "56"]
    assert demo_png_titles(png) == ["model view", "ratio 0.9: 56 merged, none as is"]
    with Image.open(png) as picture:
        pixels = np.asarray(picture.convert("RGB")).astype(int)
    panel, title = round(PANEL_INCHES * DPI), round(TITLE_INCHES * DPI)
    assert np.array_equal(pixels[title:, :panel], pixels[title:, panel : 2 * panel])  # the model view, twice


def test_help_version_and_argument_errors_import_neither_torch_nor_transformers():
    """The registries behind the choices load only when a subcommand's help or a choice needs them."""
    probe = (
        "import sys; from fastervlm.cli import main; code = main(sys.argv[1:]); "
        "print(code, [m for m in ('torch', 'transformers', 'matplotlib') if m in sys.modules], file=sys.stderr)"
    )
    for argv, code in ([["--version"], 0], [["--help"], 0], [["demo", "--ratios", "x"], 2], [["nope"], 2]):
        done = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, check=True)
        assert done.stderr.splitlines()[-1] == f"{code} []", (argv, done.stderr)
    version = subprocess.run([sys.executable, "-c", probe, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout == f"fastervlm {fastervlm.__version__}\n"


def test_generate_loads_a_saved_model_directory(saved_tiny, image_file, capsys):
    argv = ["generate", "--model", str(saved_tiny), "--image", str(image_file), "--prompt", "What is this?"]
    code = main([*argv, "--max-new-tokens", "4"])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    model, processor = fastervlm.prune(tiny_llava(), method="fastervlm", ratio=0.9), tiny_processor()
    inputs = processor(
        images=[Image.open(image_file)], text=["USER: <image>\nWhat is this? ASSISTANT:"], return_tensors="pt"
    )
    with torch.no_grad():
        new = model.generate(**inputs, max_new_tokens=4, do_sample=False)[:, inputs["input_ids"].shape[1] :]
    expected = processor.batch_decode(new, skip_special_tokens=True)[0].strip()
    assert lines == [  # the loaded weights and processor answer exactly as the in-memory ones; no random-model note
        f"{image_file}: {expected}",
        "fastervlm: visual tokens into the LLM 576 -> 58 (kept per image: 58)",
    ]


def test_generate_with_token_budget_on_tiny_says_weights_are_random(image_file, capsys):
    argv = ["generate", "--model", "tiny", "--image", str(image_file), "--image", str(image_file)]
    code = main([*argv, "--prompt", "USER: <image>\nHi ASSISTANT:", "--tokens", "10", "--max-new-tokens", "2"])
    stdout = capsys.readouterr().out
    assert code == 0
    assert "RANDOM weights" in stdout
    assert stdout.splitlines()[-1] == "fastervlm: visual tokens into the LLM 1152 -> 20 (kept per image: 10, 10)"


@pytest.mark.parametrize(
    "argv",
    [
        ["generate", "--model", "tiny", "--image", "unused.png", "--prompt", "x", "--ratio", "1.5"],
        ["demo", "--ratios", "0.5,1.5"],
    ],
)
def test_bad_ratio_is_a_clean_error(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert err == "error: ratio must be a number in [0, 1] (fraction of visual tokens removed), got 1.5\n"


def test_missing_model_directory_is_a_clean_error(image_file, tmp_path, capsys):
    missing = tmp_path / "no_such_model"
    code = main(["generate", "--model", str(missing), "--image", str(image_file), "--prompt", "x"])
    assert code == 1
    err = capsys.readouterr().err
    assert err == f"error: --model {str(missing)!r} looks like a path, but no such directory exists\n"


def test_argparse_errors_return_2_instead_of_exiting(capsys):
    assert main(["demo", "--ratios", "0.5,abc"]) == 2
    assert "expected comma-separated ratios" in capsys.readouterr().err
    assert main(["demo", "--arch", "llava-2"]) == 2
    assert "--arch: invalid choice: 'llava-2'" in capsys.readouterr().err


def test_prompt_is_wrapped_in_the_llava_template_unless_it_has_an_image_token():
    assert llava_prompt("What is this?") == "USER: <image>\nWhat is this? ASSISTANT:"
    assert llava_prompt("<image>\nCaption:") == "<image>\nCaption:"
    assert llava_prompt("Why?", "<video>") == "USER: <video>\nWhy? ASSISTANT:"


def test_generate_on_the_tiny_llava_next(image_file, capsys):
    argv = ["generate", "--model", "tiny", "--arch", "llava-next", "--image", str(image_file), "--prompt", "What?"]
    assert main([*argv, "--ratio", "0.9", "--max-new-tokens", "2"]) == 0
    out = capsys.readouterr().out
    assert "LLaVA-NeXT" in out.splitlines()[0] and "fastervlm: visual tokens into the LLM 1368 -> " in out


def test_viz_with_only_an_image_writes_png_and_pdf_in_the_current_folder(image_file, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["viz", "--image", str(image_file), "--methods", "fastervlm,fastv", "--ratios", "0.9"])
    stdout = capsys.readouterr().out
    assert code == 0 and "RANDOM weights" in stdout
    assert (tmp_path / "fastervlm_viz.pdf").read_bytes().startswith(b"%PDF")
    with Image.open(tmp_path / "fastervlm_viz.png") as picture:  # 3 rows (image + heatmap, two methods)
        assert picture.format == "PNG" and picture.size[1] > 3 * PANEL_INCHES * DPI


def test_viz_names_the_allowed_methods(image_file, capsys):
    assert main(["viz", "--image", str(image_file), "--methods", "fastervlm,nope"]) == 2
    assert f"--methods must be comma-separated names from: {', '.join(sorted(METHODS))};" in capsys.readouterr().err


def test_analyze_agreement_over_a_folder_writes_per_image_iou(tmp_path, capsys):
    data = tmp_path / "images"
    data.mkdir()
    for i, image in enumerate(synthetic_images(3)):
        image.save(data / f"{i}.png")
    out = tmp_path / "agreement.json"
    args = [
        "analyze",
        "agreement",
        "--data",
        str(data),
        "--n",
        "2",
        "--methods",
        "fastervlm,random",
        "--json",
        str(out),
    ]
    assert main(args) == 0
    result = json.loads(out.read_text())
    assert result["samples"] == 2 and len(result["iou"]) == 2 and result["ratio"] == 0.9
    assert [entry["image"] for entry in result["per_sample"]] == ["0.png", "1.png"]
    assert [entry["iou"] for entry in result["per_sample"]] == result["iou"]
    assert all(0.0 <= iou <= 1.0 for iou in result["iou"])
    assert result["mean_iou"] == pytest.approx(sum(result["iou"]) / 2)
    assert f"IoU mean {result['mean_iou']:.3f}" in capsys.readouterr().out
    assert main(["analyze", "agreement", "--data", str(data), "--methods", "fastervlm"]) == 2
    assert "exactly two methods" in capsys.readouterr().err


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    data = tmp_path / "images"
    data.mkdir()
    for i, image in enumerate(synthetic_images(3)):
        image.save(data / f"{i}.png")
    (data / "prompts.txt").write_text("What is here?\nDescribe it.\nAny shapes?\n")
    return data


def test_analyze_shift_writes_bin_shares_that_sum_to_one_and_a_png(image_folder, tmp_path, capsys):
    out, plot = tmp_path / "shift.json", tmp_path / "shift.png"
    args = ["analyze", "shift", "--data", str(image_folder), "--n", "2", "--bins", "24"]
    assert main([*args, "--json", str(out), "--plot", str(plot)]) == 0
    result = json.loads(out.read_text())
    assert result["model"] == "tiny" and "RANDOM weights" in result["random_weights_note"]
    assert result["samples"] == 2 and len(result["per_image"]) == 2
    assert sum(result["mean_share_per_bin"]) == pytest.approx(1.0)
    assert result["mean_share_per_bin"] == pytest.approx(result["mean_share_per_grid_row"])  # 24 bins = 24 rows
    assert len(result["mean_share_per_bin_per_layer"]) == 17
    for image in result["per_image"]:
        assert sum(image["share_per_bin"]) == pytest.approx(1.0) and 0.0 <= image["centre_of_mass"] <= 1.0
        assert image["first_quarter_share"] == pytest.approx(sum(image["share_per_bin"][:6]))
        assert image["last_quarter_share"] == pytest.approx(sum(image["share_per_bin"][-6:]))
    assert Image.open(plot).format == "PNG"
    assert f"centre of mass {result['centre_of_mass']['mean']:.3f}" in capsys.readouterr().out
    assert main([*args[:-2], "--bins", "577"]) == 2
    assert "bins must be between 1 and the 576 image tokens" in capsys.readouterr().err


def test_analyze_dispersion_writes_entropies_within_zero_and_log_n(image_folder, tmp_path, capsys):
    out, plot = tmp_path / "dispersion.json", tmp_path / "dispersion.png"
    args = ["analyze", "dispersion", "--data", str(image_folder), "--n", "2", "--json", str(out), "--plot", str(plot)]
    assert main(args) == 0
    result = json.loads(out.read_text())
    log_n = math.log(576)
    for image in result["per_image"]:
        assert all(0.0 <= e <= log_n + 1e-9 for e in [*image["llm_entropy_per_layer"], image["cls_entropy"]])
        assert image["llm_entropy_normalised"] == pytest.approx(image["llm_entropy"] / log_n)
        assert image["cls_entropy_normalised"] == pytest.approx(image["cls_entropy"] / log_n)
    assert result["cls_entropy"]["mean"] == pytest.approx(sum(i["cls_entropy"] for i in result["per_image"]) / 2)
    assert Image.open(plot).format == "PNG"
    assert "vision [CLS] mean" in capsys.readouterr().out
    assert main([*args[:-1], str(tmp_path / "dispersion.pdf")]) == 2
    assert "--plot must name a .png file" in capsys.readouterr().err


def test_viz_llava_next_draws_base_view_and_crops(image_file, tmp_path, capsys):
    out = tmp_path / "next.png"
    args = ["viz", "--arch", "llava-next", "--image", str(image_file), "--methods", "fastervlm,fastv"]
    assert main([*args, "--ratios", "0.9", "--out", str(out)]) == 0
    assert f"written: {out}" in capsys.readouterr().out and out.with_suffix(".pdf").exists()


def test_viz_video_llava_draws_a_synthetic_video_and_refuses_an_image(image_file, tmp_path, capsys):
    out = tmp_path / "video.png"
    assert (
        main(["viz", "--arch", "video-llava", "--methods", "fastervlm,fastv", "--ratios", "0.9", "--out", str(out)])
        == 0
    )
    with Image.open(out) as picture:  # 8 frames per method x ratio row
        assert picture.width == round(8 * PANEL_INCHES * DPI + 90)
    assert main(["viz", "--arch", "video-llava", "--image", str(image_file)]) == 2
    assert "--image" in capsys.readouterr().err


@pytest.fixture(scope="module")
def saved_tiny_next(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny_llava_next")
    tiny_llava_next(text_layers=2).save_pretrained(path)
    tiny_llava_next_processor().save_pretrained(path)
    return path


def test_generate_reads_the_family_from_the_checkpoint(saved_tiny_next, saved_tiny, image_file, capsys):
    """No --arch: the config says LLaVA-NeXT; a wrong --arch is named before any weight loads, either way round."""
    argv = ["generate", "--image", str(image_file), "--prompt", "What?", "--max-new-tokens", "2"]
    assert main([*argv, "--model", str(saved_tiny_next)]) == 0
    assert "fastervlm: visual tokens into the LLM 1368 -> " in capsys.readouterr().out
    assert main([*argv, "--model", str(saved_tiny_next), "--arch", "llava-1.5"]) == 2
    err = capsys.readouterr().err
    assert f"--arch llava-1.5 does not match --model {str(saved_tiny_next)!r}, a 'llava_next' checkpoint" in err
    assert main([*argv, "--model", str(saved_tiny), "--arch", "llava-next"]) == 2
    assert "--arch llava-next does not match" in capsys.readouterr().err
