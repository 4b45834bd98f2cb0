"""The doctor's report on the real card (the command itself: tests/inference/test_doctor.py, with Django)."""

from __future__ import annotations

import pytest

from inference.doctor import GIB, diagnose, format_report


@pytest.mark.gpu
def test_the_report_names_the_card_its_capability_the_dtype_and_the_fits() -> None:
    import torch

    report = diagnose("transformers", None, {})
    props = torch.cuda.get_device_properties(0)
    gpu = report.gpus[0]
    assert report.cuda_available and gpu.name == props.name
    assert gpu.capability == f"{props.major}.{props.minor}" and gpu.bf16 == (props.major >= 8)
    assert gpu.total_bytes == torch.cuda.mem_get_info(0)[1]
    assert report.dtype == ("bfloat16" if props.major >= 8 else "float16")
    fits = {(f.model, f.precision): f.verdict for f in report.reference_fits}
    assert len(fits) == 9
    if gpu.free_bytes > 20 * GIB:  # any data-centre card: the 7B at every precision
        assert {fits[("DeepSeek-R1-Distill-Qwen-7B", p)] for p in ("bf16", "8bit", "4bit")} == {"fits on one GPU"}
    if gpu.free_bytes > 70 * GIB:  # an 80 GB H100 or larger: the 32B in bf16 too
        assert fits[("DeepSeek-R1-Distill-Qwen-32B", "bf16")] == "fits on one GPU"
    if len(report.gpus) == 1:  # no single card holds the 671B, even in 4-bit (~346 GiB)
        assert {fits[("DeepSeek-R1", p)] for p in ("bf16", "8bit", "4bit")} == {"does not fit"}
    text = format_report(report)
    assert props.name in text and "compute capability" in text and f"dtype: {report.dtype}" in text
