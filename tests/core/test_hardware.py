"""polydiff.hardware: bf16 autocast only where the CPU multiplies bf16 natively (detection on stubbed flags)."""

import pytest

from polydiff import ConfigError
from polydiff.hardware import cpu_flags, cpu_summary, default_precision, native_bf16, use_bf16

AVX512_NO_BF16 = {"fpu", "sse2", "avx", "avx2", "avx512f", "avx512bw", "avx512_vnni"}  # e.g. Cascade Lake
SAPPHIRE_RAPIDS = AVX512_NO_BF16 | {"avx512_bf16", "amx_bf16", "amx_tile", "amx_int8"}
ZEN4 = AVX512_NO_BF16 | {"avx512_bf16"}


def test_bf16_is_not_enabled_by_default_on_a_cpu_without_native_bf16():
    assert not native_bf16(AVX512_NO_BF16)
    assert default_precision("cpu", AVX512_NO_BF16) == "32-true"
    assert use_bf16("auto", "cpu", AVX512_NO_BF16) is False
    assert use_bf16("auto", "cpu", set()) is False  # no /proc/cpuinfo (macOS, Windows): fp32


def test_bf16_by_default_only_with_amx_or_avx512_bf16():
    for flags in (SAPPHIRE_RAPIDS, ZEN4, {"amx_bf16"}):
        assert native_bf16(flags)
        assert default_precision("cpu", flags) == "bf16-mixed"
        assert use_bf16("auto", "cpu", flags) is True


def test_the_user_choice_wins_and_gpus_are_left_to_lightning():
    assert use_bf16("bf16", "cpu", AVX512_NO_BF16) is True
    assert use_bf16("fp32", "cpu", SAPPHIRE_RAPIDS) is False
    assert default_precision("cuda", SAPPHIRE_RAPIDS) is None
    assert default_precision("cuda:1", set()) is None
    assert use_bf16("auto", "cuda", SAPPHIRE_RAPIDS) is False
    with pytest.raises(ConfigError, match="precision must be one of"):
        use_bf16("fp16", "cpu", set())


def test_flags_and_summary_from_a_cpuinfo_file(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu avx2 avx512f amx_bf16 amx_tile\n\n"
                    "processor\t: 1\nmodel name\t: Test CPU 9000\nflags\t\t: fpu avx2 avx512f amx_bf16 amx_tile\n")
    assert cpu_flags(info) == {"fpu", "avx2", "avx512f", "amx_bf16", "amx_tile"}
    s = cpu_summary(info)
    assert s["cpu"] == "Test CPU 9000"
    assert s["flags"] == ["amx_bf16", "amx_tile", "avx512f", "avx2"]
    assert s["native_bf16"] is True
    assert s["torch_threads"] >= 1
    assert all(type(v) in (str, int, float, bool, list, type(None)) for v in s.values())  # weights_only-loadable
    assert cpu_flags(tmp_path / "absent") == frozenset()
