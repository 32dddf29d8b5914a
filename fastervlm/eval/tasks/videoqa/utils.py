"""lmms-eval hooks for the fvlm_*_qa tasks: prompt, visual, and scoring by exact match or by a GPT judge.

lmms-eval imports this file by path from the YAML folder (`!function utils.x`), once per hook and outside
any package, so it imports nothing from fastervlm and keeps no module-level state.

The judge is chosen explicitly with FASTERVLM_VIDEOQA_JUDGE:
- `exact` (default): `accuracy` only. A prediction is correct when, after normalization (lowercase; punctuation
  and the articles a/an/the dropped; number words zero-ten as digits), it equals the answer or contains the
  answer as a whole-word sequence ("a man is cooking" is correct for "cooking", "cookings" is not). No `score`
  is reported: a 0-5 score without a judge would be made up.
- `gpt`: the Video-ChatGPT judge the paper's Video-LLaVA table uses (GPT-3.5 compares question, answer and
  prediction, replying {'pred': 'yes'|'no', 'score': 0-5}); `accuracy` is the percentage of 'yes', `score` the
  mean score. Model from FASTERVLM_VIDEOQA_JUDGE_MODEL; key and base URL from OPENAI_API_KEY / OPENAI_BASE_URL.
"""

from __future__ import annotations

import os
import re
import string
from typing import Any

JUDGE_ENV = "FASTERVLM_VIDEOQA_JUDGE"
JUDGE_MODES = ("exact", "gpt")
JUDGE_MODEL_ENV = "FASTERVLM_VIDEOQA_JUDGE_MODEL"
DEFAULT_JUDGE_MODEL = "gpt-3.5-turbo-0125"  # the paper's era; Video-ChatGPT's script asked for "gpt-3.5-turbo"
JUDGE_ATTEMPTS = 3  # per question, on top of the openai client's own retries of transport errors

_ARTICLES = {"a", "an", "the"}
_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_NUMBERS = {word: str(value) for value, word in enumerate(_NUMBER_WORDS)}
_PUNCTUATION = str.maketrans(dict.fromkeys(string.punctuation, " "))

# Video-ChatGPT's judge instructions (its eval_video_qa.py, reused by Video-LLaVA): the published accuracy and
# score depend on this wording, so it is kept rather than improved.
JUDGE_SYSTEM = (
    "You are an intelligent chatbot designed for evaluating the correctness of generative outputs for "
    "question-answer pairs. Your task is to compare the predicted answer with the correct answer and determine "
    "if they match meaningfully. Here's how you can accomplish the task:\n"
    "------\n"
    "##INSTRUCTIONS:\n"
    "- Focus on the meaningful match between the predicted answer and the correct answer.\n"
    "- Consider synonyms or paraphrases as valid matches.\n"
    "- Evaluate the correctness of the prediction compared to the answer."
)
JUDGE_USER = (
    "Please evaluate the following video-based question-answer pair:\n\n"
    "Question: {question}\n"
    "Correct Answer: {answer}\n"
    "Predicted Answer: {prediction}\n\n"
    "Provide your evaluation only as a yes/no and score where the score is an integer value between 0 and 5, "
    "with 5 indicating the highest meaningful match. Please generate the response in the form of a Python "
    "dictionary string with keys 'pred' and 'score', where value of 'pred' is a string of 'yes' or 'no' and value "
    "of 'score' is in INTEGER, not STRING. DO NOT PROVIDE ANY OTHER OUTPUT TEXT OR EXPLANATION. Only provide the "
    "Python dictionary string. For example, your response should look like this: {{'pred': 'yes', 'score': 4.8}}."
)  # 4.8 contradicts "INTEGER" but is what the judge saw for the published numbers, so it stays.
_PRED = re.compile(r"""['"]?pred['"]?\s*:\s*['"]?\s*(yes|no)\b""", re.IGNORECASE)
_SCORE = re.compile(r"""['"]?score['"]?\s*:\s*['"]?\s*(\d+(?:\.\d+)?)""", re.IGNORECASE)


class JudgeError(RuntimeError):
    """The GPT judge gave no usable verdict: the run must stop rather than count the question as wrong."""


def doc_to_visual(doc: dict[str, Any]) -> list[str]:
    """lmms-eval's video convention: a list holding the clip's path; the model wrapper decodes the frames."""
    return [doc["video"]]


def doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, str] | None = None) -> str:
    kwargs = lmms_eval_specific_kwargs or {}
    return f"{kwargs.get('pre_prompt', '')}{doc['question']}{kwargs.get('post_prompt', '')}"


def judge_mode() -> str:
    mode = os.environ.get(JUDGE_ENV, "exact").strip().lower()
    if mode not in JUDGE_MODES:
        raise ValueError(f"{JUDGE_ENV} must be one of: {', '.join(JUDGE_MODES)}; got {mode!r}")
    return mode


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    prediction = results[0].strip()
    if judge_mode() == "gpt":
        correct, score = gpt_verdict(doc["question"], doc["answer"], prediction)
        return {"accuracy": 100.0 * correct, "score": float(score)}
    return {"accuracy": 100.0 * exact_match(prediction, doc["answer"])}


def normalize(text: str) -> list[str]:
    """Lowercased words without punctuation or articles, number words as digits ("Two dogs." -> ["2", "dogs"])."""
    words = text.lower().translate(_PUNCTUATION).split()
    return [_NUMBERS.get(word, word) for word in words if word not in _ARTICLES]


def exact_match(prediction: str, answer: str) -> bool:
    """Equal after normalization, or the answer's words appear consecutively in the prediction's."""
    predicted, expected = normalize(prediction), normalize(answer)
    if predicted == expected:
        return True
    span = len(expected)
    return span > 0 and any(predicted[i : i + span] == expected for i in range(len(predicted) - span + 1))


def make_judge_client() -> Any:
    """The OpenAI client; it reads OPENAI_API_KEY and OPENAI_BASE_URL itself. Tests replace this function."""
    from openai import OpenAI

    return OpenAI()


def parse_verdict(reply: str) -> tuple[bool, int]:
    """(correct, score) from the judge's dict-like reply; ValueError when either is missing or out of range.

    Read with patterns rather than ast.literal_eval: replies come wrapped in code fences, with JSON quotes
    or trailing text. A fractional score is truncated, as Video-ChatGPT's int(score) does.
    """
    pred, score = _PRED.search(reply), _SCORE.search(reply)
    if pred is None or score is None:
        raise ValueError(f"judge reply has no 'pred' yes/no and 'score' number: {reply!r}")
    value = int(float(score.group(1)))
    if not 0 <= value <= 5:
        raise ValueError(f"judge score must be in [0, 5], got {value} in {reply!r}")
    return pred.group(1).lower() == "yes", value


def gpt_verdict(question: str, answer: str, prediction: str) -> tuple[bool, int]:
    """Ask the judge up to JUDGE_ATTEMPTS times; raise JudgeError rather than score a question silently.

    No temperature is set, as in Video-ChatGPT's script, so a retry after a malformed reply can differ.
    """
    client = make_judge_client()
    model = os.environ.get(JUDGE_MODEL_ENV, DEFAULT_JUDGE_MODEL)
    messages = [
        {"role": "system", "content": JUDGE_SYSTEM},
        {"role": "user", "content": JUDGE_USER.format(question=question, answer=answer, prediction=prediction)},
    ]
    failures = []
    for _ in range(JUDGE_ATTEMPTS):
        try:
            completion = client.chat.completions.create(model=model, messages=messages)
            return parse_verdict(completion.choices[0].message.content or "")
        except Exception as error:  # API errors and malformed replies alike: retry, then fail loudly
            failures.append(error)
    raise JudgeError(
        f"video QA judge ({model}) failed {JUDGE_ATTEMPTS} times for question {question!r}: {failures[-1]}"
    ) from failures[-1]


def _mean(metric: str, values: list[float]) -> float:
    if not values:
        raise ValueError(f"no per-question {metric} values to aggregate")
    return sum(values) / len(values)


def aggregate_accuracy(values: list[float]) -> float:
    """Percent correct (exact mode) or percent judged 'yes' (gpt mode): per-question values are 0 or 100."""
    return _mean("accuracy", values)


def aggregate_score(values: list[float]) -> float:
    """Mean judge score on Video-ChatGPT's 0-5 scale; only gpt mode produces these values."""
    return _mean("score", values)
