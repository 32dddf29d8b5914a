"""Prompt and visual hooks of the stand-in tasks (lmms-eval loads this file next to their YAMLs)."""

from __future__ import annotations

from typing import Any


def doc_to_visual(doc: dict[str, Any]) -> list[Any]:
    return [doc["image"].convert("RGB")]


def doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, str] | None = None) -> str:
    kwargs = lmms_eval_specific_kwargs or {}
    options = doc.get("choices")
    listed = "" if not options else "\n" + "\n".join(f"- {option}" for option in options)
    return f"{kwargs.get('pre_prompt', '')}{doc['question']}{listed}{kwargs.get('post_prompt', '')}"
