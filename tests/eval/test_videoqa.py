"""Video QA tasks: frame loading, both scorers, annotation conversion, and loading through a real lmms-eval."""

from __future__ import annotations

import argparse
import importlib.util
import json
from importlib import resources
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from fastervlm.eval.video import load_frames, uniform_indices
from fastervlm.eval.videoqa import materialize, prepare, write_tiny
from fastervlm.eval.videoqa_cli import add_parser

TASKS = ("fvlm_msvd_qa", "fvlm_msrvtt_qa", "fvlm_tgif_qa", "fvlm_activitynet_qa", "fvlm_tiny_video_qa")


def solid_frames(n: int) -> list[Image.Image]:
    """Frame i is uniformly grey level 20 * i, so a loaded frame tells which index it came from."""
    return [Image.new("RGB", (32, 24), (20 * i,) * 3) for i in range(n)]


def levels(frames: list[Image.Image]) -> list[int]:
    return [round(float(np.asarray(frame).mean()) / 20) for frame in frames]


# --- frames -------------------------------------------------------------------------------------------------


def test_uniform_indices_span_first_to_last_and_repeat_short_clips():
    assert uniform_indices(10, 4) == [0, 3, 6, 9]
    assert uniform_indices(3, 8) == [0, 0, 0, 0, 1, 1, 1, 2]
    with pytest.raises(ValueError, match="num_frames"):
        uniform_indices(10, 0)


def test_load_frames_gif(tmp_path):
    first, *rest = solid_frames(10)
    first.save(tmp_path / "clip.gif", save_all=True, append_images=rest, duration=100)
    frames = load_frames(str(tmp_path / "clip.gif"), 4)
    assert [f.mode for f in frames] == ["RGB"] * 4
    assert levels(frames) == [0, 3, 6, 9]


def test_load_frames_mp4(tmp_path):
    av = pytest.importorskip("av")
    path = tmp_path / "clip.mp4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        for frame in solid_frames(10):
            container.mux(stream.encode(av.VideoFrame.from_image(frame)))
        container.mux(stream.encode())
    assert levels(load_frames(path, 4)) == [0, 3, 6, 9]


def test_load_frames_image_folder_sorted_by_name(tmp_path):
    for i in (3, 0, 2, 1):  # written out of order: the file names give the order
        solid_frames(4)[i].save(tmp_path / f"{i:03d}.png")
    (tmp_path / "notes.txt").write_text("not a frame")
    assert levels(load_frames(tmp_path, 4)) == [0, 1, 2, 3]


def test_load_frames_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.mp4"):
        load_frames(tmp_path / "missing.mp4", 8)
    (tmp_path / "clip.txt").write_text("")
    with pytest.raises(ValueError, match=r"unsupported video 'clip.txt'; supported: .mp4, .avi"):
        load_frames(tmp_path / "clip.txt", 8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        load_frames(tmp_path / "empty", 8)
    av = pytest.importorskip("av")
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    with pytest.raises(ValueError, match="cannot decode video"):
        load_frames(tmp_path / "broken.mp4", 8)
    with av.open(str(tmp_path / "empty.mp4"), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        container.start_encoding()  # a header and no frame
    with pytest.raises(ValueError, match=r"no video stream \(0 frames\)"):
        load_frames(tmp_path / "empty.mp4", 8)


# --- task hooks (utils.py, loaded by path as lmms-eval does) -------------------------------------------------


@pytest.fixture
def utils(monkeypatch) -> ModuleType:
    monkeypatch.delenv("FASTERVLM_VIDEOQA_JUDGE", raising=False)
    monkeypatch.delenv("FASTERVLM_VIDEOQA_JUDGE_MODEL", raising=False)
    path = resources.files("fastervlm.eval") / "tasks" / "videoqa" / "utils.py"
    spec = importlib.util.spec_from_file_location("videoqa_utils", str(path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


DOC = {"question_id": "7", "video": "/v/clip.avi", "question": "What is the man doing?", "answer": "cooking"}


def test_prompt_and_visual(utils):
    assert utils.doc_to_visual(DOC) == ["/v/clip.avi"]
    assert utils.doc_to_text(DOC) == "What is the man doing?"
    kwargs = {"pre_prompt": "Q: ", "post_prompt": "\nShort answer."}
    assert utils.doc_to_text(DOC, kwargs) == "Q: What is the man doing?\nShort answer."


@pytest.mark.parametrize(
    "prediction, answer, correct",
    [
        ("Cooking.", "cooking", True),
        ("A man is cooking food", "cooking", True),  # the answer as a whole-word sequence
        ("cookings", "cooking", False),  # ...but not inside a longer word
        ("The dog", "dog", True),
        ("two", "2", True),
        ("3 dogs", "three", True),
        ("in the kitchen", "kitchen table", False),
        ("not sure", "no", False),
        ("", "dog", False),
        ("dog", "the", False),  # nothing left of the answer after normalization matches only nothing
    ],
)
def test_exact_match(utils, prediction, answer, correct):
    assert utils.exact_match(prediction, answer) is correct


def test_exact_mode_is_the_default_and_reports_no_score(utils):
    assert utils.normalize("Two dogs, a cat!") == ["2", "dogs", "cat"]
    assert utils.process_results(DOC, [" he is cooking "]) == {"accuracy": 100.0}
    assert utils.process_results(DOC, ["eating"]) == {"accuracy": 0.0}


def test_unknown_judge_mode_is_refused(utils, monkeypatch):
    monkeypatch.setenv("FASTERVLM_VIDEOQA_JUDGE", "gpt4")
    with pytest.raises(ValueError, match="FASTERVLM_VIDEOQA_JUDGE must be one of: exact, gpt; got 'gpt4'"):
        utils.process_results(DOC, ["cooking"])


class FakeJudge:
    """Stands in for openai.OpenAI: replays `replies` (an Exception is raised) and records each request."""

    def __init__(self, replies: list[str | Exception]):
        self.replies, self.requests = list(replies), []
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self.create))

    def create(self, **request):
        self.requests.append(request)
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return SimpleNamespace(choices=[SimpleNamespace(message=SimpleNamespace(content=reply))])


@pytest.fixture
def judge(utils, monkeypatch):
    def install(*replies: str | Exception) -> FakeJudge:
        fake = FakeJudge(list(replies))
        monkeypatch.setattr(utils, "make_judge_client", lambda: fake)
        monkeypatch.setenv("FASTERVLM_VIDEOQA_JUDGE", "gpt")
        return fake

    return install


@pytest.mark.parametrize(
    "reply, verdict",
    [
        ("{'pred': 'yes', 'score': 4}", (True, 4)),
        ('```json\n{"pred": "No", "score": 1}\n```', (False, 1)),
        ("{'pred': 'yes', 'score': 4.8}", (True, 4)),  # truncated, as Video-ChatGPT's int(score)
    ],
)
def test_parse_verdict(utils, reply, verdict):
    assert utils.parse_verdict(reply) == verdict


def test_gpt_mode_scores_with_the_judge(utils, judge, monkeypatch):
    monkeypatch.setenv("FASTERVLM_VIDEOQA_JUDGE_MODEL", "judge-model")
    fake = judge("{'pred': 'yes', 'score': 5}", "{'pred': 'no', 'score': 2}")
    assert utils.process_results(DOC, ["cooking"]) == {"accuracy": 100.0, "score": 5.0}
    assert utils.process_results(DOC, ["sleeping"]) == {"accuracy": 0.0, "score": 2.0}
    request = fake.requests[1]
    user_message = request["messages"][1]["content"]
    assert request["model"] == "judge-model"
    assert "Question: What is the man doing?\nCorrect Answer: cooking\nPredicted Answer: sleeping" in user_message


def test_gpt_judge_retries_malformed_replies_then_fails_loudly(utils, judge):
    fake = judge("Yes, it matches.", "{'pred': 'yes', 'score': 3}")
    assert utils.gpt_verdict("q", "a", "p") == (True, 3)
    assert len(fake.requests) == 2

    fake = judge("Yes.", ConnectionError("down"), "{'pred': 'maybe', 'score': 9}")
    with pytest.raises(utils.JudgeError, match="failed 3 times") as caught:
        utils.process_results(DOC, ["cooking"])
    assert len(fake.requests) == utils.JUDGE_ATTEMPTS == 3
    assert isinstance(caught.value.__cause__, ValueError)
    with pytest.raises(ValueError, match=r"score must be in \[0, 5\]"):
        utils.parse_verdict("{'pred': 'yes', 'score': 7}")


def test_aggregation(utils):
    assert utils.aggregate_accuracy([100.0, 0.0, 100.0, 100.0]) == 75.0
    assert utils.aggregate_score([4.0, 2.0, 3.0]) == 3.0
    with pytest.raises(ValueError, match="score"):
        utils.aggregate_score([])


# --- annotation conversion and CLI ---------------------------------------------------------------------------


@pytest.fixture
def annotations(tmp_path) -> tuple[Path, Path]:
    """Video-ChatGPT layout: test_q/test_a paired by position; clips as .avi, .mp4, .gif and a frame folder."""
    folder, videos = tmp_path / "ann", tmp_path / "videos"
    folder.mkdir()
    videos.mkdir()
    names = ["clip1", "video2", "tumblr3", "frames4"]
    questions = [{"video_name": n, "question_id": i, "question": f"what is in {n}?"} for i, n in enumerate(names)]
    answers = [{"answer": f"answer {i}", "type": "what", "question_id": i} for i in range(len(names))]
    (folder / "test_q.json").write_text(json.dumps(questions))
    (folder / "test_a.json").write_text(json.dumps(answers))
    for file in ("clip1.avi", "video2.mp4", "tumblr3.gif"):
        (videos / file).write_bytes(b"")
    (videos / "frames4").mkdir()
    return folder, videos


def test_prepare_writes_the_first_limit_rows(annotations, tmp_path):
    folder, videos = annotations
    path = prepare("msvd", folder, videos, tmp_path / "tasks", limit=3)
    assert path == tmp_path / "tasks" / "videoqa" / "data" / "msvd_qa.parquet"
    rows = pq.read_table(path).to_pylist()
    assert [r["question_id"] for r in rows] == ["0", "1", "2"]
    assert [Path(r["video"]).name for r in rows] == ["clip1.avi", "video2.mp4", "tumblr3.gif"]
    assert all(Path(r["video"]).is_absolute() and Path(r["video"]).exists() for r in rows)
    assert (rows[1]["question"], rows[1]["answer"]) == ("what is in video2?", "answer 1")
    all_rows = pq.read_table(prepare("tgif", folder, videos, tmp_path / "tasks", limit=None)).to_pylist()
    assert Path(all_rows[-1]["video"]).name == "frames4"


def test_prepare_errors(annotations, tmp_path):
    folder, videos = annotations
    (videos / "video2.mp4").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of 4 videos not found .* e\.g\. video2"):
        prepare("msrvtt", folder, videos, tmp_path / "tasks", limit=None)
    with pytest.raises(ValueError, match="choose one of: msvd, msrvtt, tgif, activitynet"):
        prepare("nextqa", folder, videos, tmp_path / "tasks")
    with pytest.raises(ValueError, match="limit"):
        prepare("msvd", folder, videos, tmp_path / "tasks", limit=0)
    answers = json.loads((folder / "test_a.json").read_text())
    answers[0]["question_id"] = 99
    (folder / "test_a.json").write_text(json.dumps(answers))
    with pytest.raises(ValueError, match=r"question_id 0 .* paired .* 99"):
        prepare("msvd", folder, videos, tmp_path / "tasks")


def test_prepare_activitynet_finds_clips_by_their_v_prefix(tmp_path):
    """ActivityNet-QA's test_q.json names YouTube ids; the clips on disk are v_<id>.mp4/.mkv/... (as the reference's
    run_inference_video_qa_act.py looks them up)."""
    folder, videos = tmp_path / "ann", tmp_path / "videos"
    folder.mkdir()
    videos.mkdir()
    ids = ["abc", "def"]
    questions = [{"video_name": n, "question_id": f"v_{n}_0", "question": "what happens?"} for n in ids]
    answers = [{"answer": "dancing", "type": 0, "question_id": f"v_{n}_0"} for n in ids]
    (folder / "test_q.json").write_text(json.dumps(questions))
    (folder / "test_a.json").write_text(json.dumps(answers))
    (videos / "v_abc.mp4").write_bytes(b"")
    (videos / "v_def.mkv").write_bytes(b"")
    (videos / "abc.mp4").write_bytes(b"")  # a same-named file without the prefix is not the clip
    rows = pq.read_table(prepare("activitynet", folder, videos, tmp_path / "tasks")).to_pylist()
    assert [Path(r["video"]).name for r in rows] == ["v_abc.mp4", "v_def.mkv"]
    assert Path(rows[0]["video"]) == (videos / "v_abc.mp4").resolve()


def test_cli_prepare_videoqa(annotations, tmp_path, capsys):
    folder, videos = annotations
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    argv = ["prepare-videoqa", "msvd", "--annotations", str(folder), "--videos", str(videos)]
    args = parser.parse_args([*argv, "--tasks-dir", str(tmp_path / "tasks"), "--limit", "2"])
    assert args.func(args) == 0
    assert pq.read_table(tmp_path / "tasks" / "videoqa" / "data" / "msvd_qa.parquet").num_rows == 2
    assert "msvd_qa.parquet" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        parser.parse_args(["prepare-videoqa", "nextqa", "--annotations", "a", "--videos", "v", "--tasks-dir", "t"])


def test_materialize_overwrites_code_and_keeps_data(tmp_path):
    dest = materialize(tmp_path / "run")
    assert {p.name for p in (dest / "videoqa").iterdir()} >= {f"{task}.yaml" for task in TASKS}
    tiny = write_tiny(dest, n=2, frames=3)
    (dest / "videoqa" / "fvlm_msvd_qa.yaml").write_text("stale")
    materialize(dest)
    assert "task: fvlm_msvd_qa" in (dest / "videoqa" / "fvlm_msvd_qa.yaml").read_text()
    assert pq.read_table(tiny).num_rows == 2


# --- through lmms-eval ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lmms_tasks(tmp_path_factory):
    """A materialized task folder with the tiny data, indexed once: TaskManager walks all of lmms-eval's tasks."""
    from lmms_eval.tasks import TaskManager, get_task_dict

    dest = materialize(tmp_path_factory.mktemp("tasks"))
    clips = pq.read_table(write_tiny(dest, n=6, frames=8)).to_pylist()
    # An ActivityNet-QA stand-in in the dataset's own layout: test_q/test_a.json and v_<id> clips.
    folder, videos = dest.parent / "activitynet_ann", dest.parent / "activitynet_videos"
    folder.mkdir()
    videos.mkdir()
    questions = [
        {"video_name": f"id{i}", "question_id": f"v_id{i}_0", "question": r["question"]} for i, r in enumerate(clips)
    ]
    (folder / "test_q.json").write_text(json.dumps(questions))
    (folder / "test_a.json").write_text(
        json.dumps(
            [{"answer": r["answer"], "question_id": q["question_id"]} for r, q in zip(clips, questions, strict=True)]
        )
    )
    for i, row in enumerate(clips):
        (videos / f"v_id{i}.gif").write_bytes(Path(row["video"]).read_bytes())
    prepare("activitynet", folder, videos, dest, limit=4)
    manager = TaskManager(include_path=str(dest))
    return manager, get_task_dict(["fvlm_tiny_video_qa", "fvlm_activitynet_qa"], manager)


@pytest.mark.slow  # lmms-eval's TaskManager indexes all its tasks (~15 s)
def test_task_manager_finds_the_tasks_in_the_subfolder(lmms_tasks):
    manager, task_dict = lmms_tasks
    assert set(TASKS) <= set(manager.all_tasks)
    task = task_dict["fvlm_tiny_video_qa"]
    docs = task.test_docs()
    assert len(docs) == 6
    assert task.config.generation_kwargs["max_new_tokens"] == 8
    for doc in docs:
        (video,) = task.doc_to_visual(doc)
        assert len(load_frames(video, 8)) == 8
    assert task.doc_to_text(docs[0]).endswith("?\nAnswer the question using a single word or phrase.")


def evaluate_with(task_dict, answers: list[str], task: str = "fvlm_tiny_video_qa") -> dict[str, object]:
    """lmms-eval's evaluator over the tiny task, with a model that answers doc i with answers[i]."""
    from lmms_eval.api.model import lmms
    from lmms_eval.evaluator import evaluate

    class Scripted(lmms):
        def generate_until(self, requests):
            return [answers[request.args[3]] for request in requests]  # args: ctx, gen_kwargs, visual, doc_id, ...

        def loglikelihood(self, requests):
            raise NotImplementedError

        def generate_until_multi_round(self, requests):
            raise NotImplementedError

    tasks = {task: task_dict[task]}
    results = evaluate(Scripted(), tasks, bootstrap_iters=0, log_samples=False, process_docs_parallel=1)
    return results["results"][task]


@pytest.mark.slow  # lmms-eval's TaskManager indexes all its tasks (~15 s)
def test_lmms_eval_reports_accuracy_only_in_exact_mode(lmms_tasks, monkeypatch):
    monkeypatch.delenv("FASTERVLM_VIDEOQA_JUDGE", raising=False)
    row = evaluate_with(lmms_tasks[1], ["It is a circle.", "yes", "3", "no", "the sky", "yes"])
    assert row["accuracy,none"] == pytest.approx(100 * 4 / 6)
    assert not any(key.startswith("score") for key in row)


@pytest.mark.slow  # lmms-eval's TaskManager indexes all its tasks (~15 s)
def test_lmms_eval_reports_accuracy_and_score_in_gpt_mode(lmms_tasks, monkeypatch):
    import openai

    # utils.py is re-imported by lmms-eval for each hook, so the fake goes where make_judge_client looks.
    replies = ["{'pred': 'yes', 'score': 5}"] * 3 + ["{'pred': 'no', 'score': 1}"] * 3
    fake = FakeJudge(replies)
    monkeypatch.setattr(openai, "OpenAI", lambda: fake)
    monkeypatch.setenv("FASTERVLM_VIDEOQA_JUDGE", "gpt")
    row = evaluate_with(lmms_tasks[1], ["x"] * 6)
    assert row["accuracy,none"] == pytest.approx(50.0)
    assert row["score,none"] == pytest.approx(3.0)


@pytest.mark.slow  # lmms-eval's TaskManager indexes all its tasks (~15 s)
def test_activitynet_runs_through_lmms_eval_on_its_first_questions(lmms_tasks, monkeypatch):
    """The stand-in kept the first 4 questions (limit=4), its clips load as 8 frames, and lmms-eval scores them."""
    monkeypatch.delenv("FASTERVLM_VIDEOQA_JUDGE", raising=False)
    task = lmms_tasks[1]["fvlm_activitynet_qa"]
    docs = task.test_docs()
    assert [doc["question_id"] for doc in docs] == [f"v_id{i}_0" for i in range(4)]
    assert all(len(load_frames(task.doc_to_visual(doc)[0], 8)) == 8 for doc in docs)
    row = evaluate_with(lmms_tasks[1], ["circle", "yes", "two", "no"], "fvlm_activitynet_qa")
    assert row["accuracy,none"] == pytest.approx(100 * 3 / 4)
