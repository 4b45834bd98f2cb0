"""``cairn_doctor``'s report where Django is not installed (the accelerator machine), for issue 16.

    python benchmarks/gpu/doctor.py --json doctor.json
    python benchmarks/gpu/doctor.py --model /models/DeepSeek-R1-Distill-Qwen-7B

The same functions ``manage.py cairn_doctor`` calls (``inference.doctor``),
with the transformers backend and no settings: the card, its memory and
compute capability, the dtype the backend would choose, the fit table of the
reference models (7B, 32B, 671B at bf16 / 8-bit / 4-bit), and the
recommendation for a model. Without ``--model`` that model is
DeepSeek-R1-Distill-Qwen-7B, sized from its published configuration
(written to ``--config-dir``, a temporary directory by default; no weights).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from inference.doctor import REFERENCE_MODELS, diagnose, format_report, report_json  # noqa: E402

DEFAULT_MODEL = "DeepSeek-R1-Distill-Qwen-7B"


def write_reference_config(name: str, directory: Path) -> Path:
    """``directory/name/config.json`` for a reference model: enough for the doctor, which reads no weights."""
    from transformers import AutoConfig

    model_type, dims = REFERENCE_MODELS[name]
    path = directory / name
    AutoConfig.for_model(model_type, **dims).save_pretrained(path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help=f"a model directory or .gguf (default: {DEFAULT_MODEL}'s config)")
    parser.add_argument("--config-dir", help="where the default model's config.json is written")
    parser.add_argument("--json", help="also write the report as JSON here")
    args = parser.parse_args(argv)
    model = args.model or str(write_reference_config(
        DEFAULT_MODEL, Path(args.config_dir or tempfile.mkdtemp(prefix="cairn-doctor-"))))
    report = diagnose("transformers", model, {})
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(report_json(report))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
