"""The GPU tests (issue 16), and the CPU tests of the scripts that run them on the accelerator machine.

Nothing here imports Django: that machine has PyTorch and transformers but
not Cairn's web stack, so ``benchmarks/gpu/run.sh`` runs this folder alone,

    python -m pytest -p no:django --confcutdir tests/gpu -m gpu tests/gpu

(``--confcutdir`` keeps the suite's top ``conftest.py``, which needs Django,
out). Tests marked ``gpu`` are skipped where torch sees no CUDA device
(``config/pytest_plugin.py``); the rest run on any CPU.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
