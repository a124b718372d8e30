"""Every kernels/cuda/*.cu compiles with nvcc for sm_90 and sm_80, warnings as errors,
as the self-contained text NVRTC gets (the common header pasted in), and ptxas reports
every kernel the Python side expects, without spills.

nvcc is on CI's machine; elsewhere these tests skip, saying so. No GPU is needed.
"""

import pytest

from tinylm.kernels.cuda import resource_usage
from tinylm.kernels.cuda.resource_usage import ARCHES, compile_report, main, nvcc, sources
from tinylm.kernels.cuda.source import SourceFile

needs_nvcc = pytest.mark.skipif(nvcc() is None, reason="nvcc is not on PATH (the CUDA toolkit is not installed here)")


def test_there_are_sources():
    assert {s.name for s in sources()} >= {"embedding.cu", "adam.cu", "layer_norm.cu", "attention_softmax.cu",
                                           "cross_entropy.cu", "lstm.cu", "dropout.cu", "causal_attention.cu",
                                           "gelu.cu"}


@needs_nvcc
@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("source", sources(), ids=lambda p: p.name)
def test_compiles_for_arch_and_reports_every_kernel_without_spills(source, arch):
    report = compile_report(source, arch)
    expected = set(SourceFile(source.name).kernels)
    assert expected, f"{source.name} declares no extern \"C\" __global__ kernel"
    assert {u.kernel for u in report} == expected
    for usage in report:
        assert 0 < usage.registers <= 255, usage
        assert usage.spill_stores == 0 and usage.spill_loads == 0, f"{usage.kernel} spills on {arch}: {usage}"


@needs_nvcc
def test_resource_usage_script_prints_a_row_per_kernel(capsys, monkeypatch):
    source = next(s for s in sources() if s.name == "attention_softmax.cu")
    monkeypatch.setattr(resource_usage, "sources", lambda: [source])  # one file is enough (the rest: above)
    assert main(["--arch", "sm_90"]) == 0
    table = capsys.readouterr().out
    for kernel in SourceFile(source.name).kernels:
        assert f"| attention_softmax.cu | {kernel} | sm_90 |" in table
