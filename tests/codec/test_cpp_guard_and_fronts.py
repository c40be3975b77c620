"""The C++ Shape guard in the verdict model, masked arrays, and tsr.torch.save of what is
not a tensor (issue 14, points 11, 12, 18)."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np
import pytest

import tsr

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from fuzz import cpp_model  # noqa: E402


def _file(ndim: int, dims: tuple[int, int, int, int], total: int, payload: int) -> bytes:
    head = struct.pack("<4s5i4iqqq", b"TSR!", 1, 64, 0, 1, ndim, *dims, total, 0, 0)
    return head + bytes(payload)


ISSUE_EXAMPLE = _file(4, (2147418113, 429509837, 5, 1), 2**62 + 1, 4)


def test_dims_too_large_for_the_cpp_shape_are_rejected() -> None:
    """The issue's file: counts wrap to 2**62+1 and the size to 68, so every header
    check passes; the C++ Shape then throws 'Shape dimensions are too large'."""
    from tsr.validate import validate_bytes

    verdict = validate_bytes(ISSUE_EXAMPLE).cpp
    assert not verdict.accepts and verdict.check == "allocation"
    assert verdict.message.startswith("Shape dimensions are too large")
    assert cpp_model.import_tensor(ISSUE_EXAMPLE[:64], len(ISSUE_EXAMPLE)).check == "allocation"


def test_the_shape_guard_is_checked_after_each_dim_with_int64_wrap() -> None:
    """2**26 * 2**27 = 2**53 is under the limit; times 2048 it wraps to 0, which passes
    the guard: C++ then fails on a zero-byte allocation instead."""
    from tsr.validate import validate_bytes

    data = _file(4, (1 << 26, 1 << 27, 2048, 1), 0, 0)
    verdict = validate_bytes(data).cpp
    assert not verdict.accepts and verdict.message.startswith("Cannot allocate zero bytes")
    assert cpp_model.import_tensor(data[:64], len(data)).check == "allocation"


def test_the_first_negative_dim_is_named_as_cpp_names_it() -> None:
    from tsr.validate import validate_bytes

    verdict = validate_bytes(_file(4, (1, 1, -2, -5), 10, 40)).cpp
    assert verdict.check == "dimension"
    assert verdict.message == "Invalid dimension value at index 2: -2"


@pytest.mark.parametrize("format", ["v1", "v3"])
def test_a_masked_array_is_refused_not_stripped_of_its_mask(tmp_path: Path, format: str) -> None:
    masked = np.ma.masked_array(np.arange(3, dtype=np.float32), mask=[False, True, False])
    with pytest.raises(tsr.BadArgumentError, match="masked array") as info:
        tsr.save(tmp_path / "m.tsr", masked, format=format)
    assert "filled" in str(info.value) and not (tmp_path / "m.tsr").exists()
    with pytest.raises(tsr.BadArgumentError, match="masked array"):
        tsr.to_bytes(masked)
    tsr.save(tmp_path / "m.tsr", masked.filled(0), format=format)  # the fix works


def test_torch_save_of_a_numpy_array_or_a_list_says_a_tensor_was_expected(
    tmp_path: Path,
) -> None:
    tt = pytest.importorskip("tsr.torch")
    for value in (np.zeros(3, np.float32), [1.0, 2.0]):
        with pytest.raises(tsr.BadArgumentError, match=r"expected a torch\.Tensor") as info:
            tt.save(tmp_path / "x.tsr", value)
        assert "use tsr.save" in str(info.value)
    with pytest.raises(tsr.BadArgumentError, match=r"expected a torch\.Tensor"):
        tt.save_all(tmp_path / "x.tsr", [np.zeros(2)])
    assert not (tmp_path / "x.tsr").exists()
