"""What every local-model backend takes besides the model and where it runs: prompt style and sampling.

``TransformersGenerator`` and ``VLLMGenerator`` accept these as keyword
options (``load_generator("vllm", path, do_sample=True)``) and resolve them
here, the same way: the defaults, DeepSeek-R1 detection, the manifest check.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from inference.backends import ModelLoadError
from inference.manifest import ManifestError, ManifestPolicy, verify_manifest
from inference.reasoning import CLOSE_TAG, OPEN_TAG


class ChatOptions(TypedDict, total=False):
    context_window: int | None     # tokens; default: the model's own
    manifest: ManifestPolicy       # model files vs cairn-manifest.json: "verify" (default), "require", "off"
    system_in_user: bool | None    # default: detected (DeepSeek advises no system prompt for R1)
    expect_reasoning: bool | None  # default: detected (R1, or a chat template that opens <think>)
    do_sample: bool                # default: greedy, reproducible
    temperature: float             # when sampling; default 0.6 (DeepSeek's advice for R1)
    top_p: float                   # when sampling; default 0.95
    max_passages: int | None       # passages shown at most; default: 3 for small models (prompting.passages_for_model)
    prompt: str | None             # "cited", "plain"; default ("auto"): plain for small models (prompting.prompt_for_model)


@dataclass(frozen=True)
class Sampling:
    do_sample: bool = False
    temperature: float = 0.6
    top_p: float = 0.95

    @classmethod
    def of(cls, options: ChatOptions) -> Sampling:
        default = cls()
        return cls(options.get("do_sample", default.do_sample), options.get("temperature", default.temperature),
                   options.get("top_p", default.top_p))


def looks_like_deepseek_r1(model_dir: Path) -> bool:
    """Whether the model's name says DeepSeek-R1 (or an R1 distill).

    A heuristic on names, because neither config.json nor the tokenizer of
    the R1 distills marks them as such (they are plain ``qwen2``/``llama``
    configs): "deepseek" and "r1" both occur (case-insensitively) in the
    directory name, in the repository name of a Hugging Face cache snapshot
    (``models--deepseek-ai--DeepSeek-R1-…/snapshots/<hash>``), or in the
    ``_name_or_path`` that some exports leave in config.json. It can be wrong
    both ways; ``system_in_user=`` and ``expect_reasoning=`` override it.
    """
    names = [model_dir.name]
    if model_dir.parent.name == "snapshots":
        names.append(model_dir.parent.parent.name)
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        names.append(str(config.get("_name_or_path", "")))
    except (OSError, ValueError):
        pass
    return any("deepseek" in n.lower() and "r1" in n.lower() for n in names)


def prompt_opens_think(prompt: str) -> bool:
    """Whether a rendered prompt ends inside an opened ``<think>`` block (DeepSeek-R1's templates do)."""
    return prompt.rfind(OPEN_TAG) > prompt.rfind(CLOSE_TAG)


def prompt_style(model_dir: Path, options: ChatOptions, opens_think: Callable[[], bool]) -> tuple[bool, bool]:
    """``(system_in_user, expect_reasoning)``: as the options say, else detected from the model.

    ``opens_think`` is asked only when it matters: whether the model's chat
    template leaves the prompt inside an open ``<think>`` block.
    """
    is_r1 = looks_like_deepseek_r1(model_dir)
    system_in_user, expect_reasoning = options.get("system_in_user"), options.get("expect_reasoning")
    return (is_r1 if system_in_user is None else system_in_user,
            (is_r1 or opens_think()) if expect_reasoning is None else expect_reasoning)


def manifest_check(model_dir: Path, options: ChatOptions) -> bool:
    """Verify the model files against their manifest as the options ask; ``ModelLoadError`` if they differ."""
    try:
        return verify_manifest(model_dir, options.get("manifest", "verify"))
    except (ManifestError, ValueError) as exc:
        raise ModelLoadError(str(exc)) from exc
