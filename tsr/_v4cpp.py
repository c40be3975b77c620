"""What the C++ importer of TSR-V4.20 (``tr::Tensor::load_tensors``) does with a file.

A model written from ``../shared/brief/tsr-v4-format.md`` and checked against every verdict
of the real code in ``vectors4/malformed/index.json``: its checks in its order, its int64
arithmetic (the numel product wraps), its allocations before reading (a directory vector of
``64·tensor_count`` bytes, a zeroed tensor buffer of ``numel·itemsize``, a payload vector of
``payload_size`` bytes for ZLIB), zlib's ``uncompress`` into ``nbytes``, and what it never
checks (row_stride, the header's data_offset, order, overlap, gaps, junk after a stream).

An allocation fails when the process would need more than ``memory_limit`` bytes of address
space (:data:`CPP_BASELINE` is what the process already holds). A failed ``std::vector``
allocation aborts the process as upstream links it (mimalloc interposes ``operator new``):
``crashed``; a failed tensor buffer is the framework's own ``MemoryError``: ``rejected``.
The model reads at most what the file holds, and inflates no more than ``nbytes`` bytes,
in bounded steps, into nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from . import _zlib, v4

CPP_BASELINE = 64 << 20
"""Address space the importer's process holds before it allocates (approximate)."""
DEFAULT_MEMORY_LIMIT = 1 << 30
"""The address-space limit of the runs in ``malformed/index.json``; pass a machine's own."""

_U64 = 1 << 64


def _i64(value: int) -> int:
    value %= _U64
    return value - _U64 if value >= 1 << 63 else value


Verdict = Literal["accepted", "rejected", "crashed"]


@dataclass(frozen=True)
class CppTensor:
    """A tensor the importer builds."""

    dtype: str
    shape: tuple[int, int, int, int]
    numel: int
    nbytes: int
    beyond_buffer: bool
    """True when the shape holds more elements than the buffer (the numel product wrapped):
    code indexing it by its shape reads and writes past the buffer."""


@dataclass(frozen=True)
class CppVerdict:
    """The importer's outcome; ``check`` uses the names of ``malformed/index.json``."""

    verdict: Verdict
    check: str
    """``accepted``, or the failing check: ``file_too_small``, ``magic``, ``version``,
    ``header_size``, ``tensor_count_zero``, ``file_mode``, ``entry_size``, ``dir_offset``,
    ``header_reserved``, ``header_crc``, ``directory_read``, ``entry_reserved``,
    ``shape_dim``, ``numel``, ``raw_alignment``, ``raw_payload_size``, ``dtype``,
    ``tensor_shape``, ``allocation``, ``nbytes``, ``seek``, ``raw_read``, ``zlib_read``,
    ``zlib_params``, ``zlib_4gb``, ``zlib_inflate``, ``zlib_size``, ``data_crc``,
    ``file_size``; ``abort`` when it crashes."""
    message: str
    """The importer's message (or what happens, for a crash)."""
    error: str | None = None
    """The C++ exception type: ``ValueError``, ``TypeError``, ``MemoryError``, or None."""
    tensor: int | None = None
    """The index of the tensor the check failed on."""
    allocated: int = 0
    """The most bytes the importer had allocated (zeroed) before its verdict."""
    tensors: tuple[CppTensor, ...] = field(default=())
    """What it returns, when it accepts."""

    @property
    def accepts(self) -> bool:
        return self.verdict == "accepted"

    @property
    def beyond_buffer(self) -> bool:
        """Accepted with a tensor whose shape is larger than its buffer."""
        return any(t.beyond_buffer for t in self.tensors)

    def neutral(self) -> Any:
        """As the generation-neutral :class:`tsr.validate.CppVerdict` of reports."""
        from .validate import CppVerdict as Neutral

        one = self.tensors[0].shape if len(self.tensors) == 1 else None
        hazard = (
            "a shape larger than its buffer (the int64 numel product wraps): code indexing "
            "it by its shape overruns the buffer"
            if self.beyond_buffer
            else None
        )
        error = "SIGABRT" if self.verdict == "crashed" else self.error
        return Neutral(self.accepts, None if self.accepts else self.check, self.message, one,
                       self.beyond_buffer, "default", error, self.allocated, hazard)  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "check": self.check,
            "message": self.message,
            "error": self.error,
            "tensor": self.tensor,
            "allocated": self.allocated,
            "beyond_buffer": self.beyond_buffer,
            "tensors": [
                {"dtype": t.dtype, "shape": list(t.shape), "numel": t.numel, "nbytes": t.nbytes}
                for t in self.tensors
            ],
        }


def _reject(check: str, message: str, error: str = "ValueError", **kw: Any) -> CppVerdict:
    return CppVerdict("rejected", check, message, error, **kw)


_CRASH = (
    "the process aborts (SIGABRT, no message): std::vector of {n} bytes fails inside "
    "operator new (mimalloc); with libstdc++'s operator new it throws std::bad_alloc"
)


def cpp_verdict(
    file_size: int,
    pread: Callable[[int, int], bytes],
    *,
    name: str = "F",
    memory_limit: int = DEFAULT_MEMORY_LIMIT,
) -> CppVerdict:
    """The importer's verdict on a file of ``file_size`` bytes; ``pread(offset, n)`` returns
    its bytes (never asked for more than the file holds). ``name`` stands for the path in
    the messages."""
    budget = memory_limit - CPP_BASELINE
    if file_size < v4.HEADER_SIZE:
        return _reject("file_too_small", f"File too small to be valid TSR: {name}")
    head = pread(0, v4.HEADER_SIZE)
    h = v4.decode_header(head)
    if h.magic != v4.MAGIC:
        return _reject("magic", f"Invalid TSR magic number (expected 'TSR4'): {name}")
    if (h.version_major, h.version_minor) != v4.VERSION:
        return _reject(
            "version",
            f"Unsupported TSR version: {h.version_major}.{h.version_minor} (expected 4.20)",
        )
    if h.header_size != v4.HEADER_SIZE:
        return _reject("header_size", f"Invalid header size: {h.header_size} (expected 128)")
    if h.tensor_count == 0:
        return _reject("tensor_count_zero", f"TSR file contains zero tensors: {name}")
    if h.file_mode not in v4.MODES:
        return _reject("file_mode", f"Invalid file mode: {h.file_mode} (expected 0=RAW or 1=ZLIB)")
    if h.entry_size != v4.ENTRY_SIZE:
        return _reject("entry_size", f"Invalid entry size: {h.entry_size} (expected 64)")
    if h.dir_offset != v4.HEADER_SIZE:
        return _reject("dir_offset", f"Invalid dir_offset: {h.dir_offset} (expected 128)")
    if h.reserved_0:
        return _reject("header_reserved", f"Header reserved_0 field must be 0, got {h.reserved_0}")
    for i, b in enumerate(h.reserved_1):
        if b:
            return _reject("header_reserved", f"Header reserved_1[{i}] must be 0, got {b}")
    crc = v4.header_crc(head)
    if crc != h.header_crc32:
        return _reject(
            "header_crc", f"Header CRC32 mismatch: expected={h.header_crc32}, computed={crc}"
        )
    count = h.tensor_count
    dir_bytes = v4.ENTRY_SIZE * count
    if dir_bytes > budget:
        return CppVerdict("crashed", "abort", _CRASH.format(n=dir_bytes), allocated=0)
    allocated = dir_bytes
    if v4.directory_end(count) > file_size:
        first_short = (file_size - v4.HEADER_SIZE) // v4.ENTRY_SIZE
        return _reject(
            "directory_read",
            f"Failed to read tensor entry at index {first_short}",
            tensor=first_short,
            allocated=allocated,
        )
    entries = v4.decode_directory(pread(v4.HEADER_SIZE, dir_bytes), count)
    live = dir_bytes
    out: list[CppTensor] = []
    for e in entries:
        verdict = _tensor(e, h.file_mode, file_size, pread, budget - live)
        if isinstance(verdict, CppVerdict):
            return CppVerdict(
                verdict.verdict, verdict.check, verdict.message, verdict.error, e.index,
                max(allocated, live + verdict.allocated),
            )  # fmt: skip
        out.append(verdict)
        live += verdict.nbytes
        allocated = max(allocated, live)
    last = entries[-1]
    expected = (last.data_offset + last.payload_size) % _U64
    if expected != file_size:
        return _reject(
            "file_size",
            f"File size mismatch: expected {expected} bytes based on last tensor entry, but "
            f"file is {file_size} bytes (file may be truncated or have extra data)",
            allocated=allocated,
        )
    return CppVerdict("accepted", "accepted", f"accepted: {len(out)} tensor(s)", None,
                      None, allocated, tuple(out))  # fmt: skip


def _tensor(
    e: v4.Entry, mode: int, file_size: int, pread: Callable[[int, int], bytes], budget: int
) -> CppTensor | CppVerdict:
    """One tensor's checks, allocation and read; a :class:`CppTensor` when it passes."""
    i = e.index
    for j, b in enumerate(e.reserved_0):
        if b:
            return _reject("entry_reserved", f"Entry reserved_0[{j}] must be 0 at index {i}")
    for d, v in enumerate(e.shape):
        if v < 1:
            return _reject(
                "shape_dim",
                f"Invalid TSR shape at index {i}, dim[{d}]={v} (all dimensions must be >= 1)",
            )
    product = 1
    for v in e.shape:
        product = _i64(product * v)
    if product != e.numel:
        return _reject(
            "numel", f"TSR numel mismatch at index {i}: expected={product}, got={e.numel}"
        )
    if mode == v4.RAW:
        if e.data_offset % v4.RAW_ALIGN:
            return _reject(
                "raw_alignment",
                f"RAW mode data_offset not 256-byte aligned at index {i}, "
                f"data_offset={e.data_offset}",
            )
        if e.payload_size != e.nbytes:
            return _reject(
                "raw_payload_size",
                f"RAW mode payload_size != nbytes at index {i}: payload_size="
                f"{e.payload_size}, nbytes={e.nbytes}",
            )
    dt = v4.DTYPES.get(e.dtype_code)
    if dt is None:
        return _reject("dtype", f"Invalid TSR dtype value: {e.dtype_code}", "TypeError")
    if product <= 0:
        return _reject("tensor_shape", "Tensor shape must have at least one element")
    size = (product * dt.itemsize) % _U64
    if size > budget:
        return _reject(
            "allocation",
            f"Tensor: mi_malloc_aligned failed for {size} bytes\n"
            f"  shape: [{','.join(map(str, e.shape))}]\n"
            f"  dtype={e.dtype_code}\n"
            "  Required base alignment: 256",
            "MemoryError",
        )
    if e.nbytes != size:
        return _reject(
            "nbytes", f"nbytes mismatch at index {i}: expected={e.nbytes}, got={size}",
            allocated=size,
        )  # fmt: skip
    if e.data_offset >= 1 << 63:  # a negative std::streamoff
        return _reject("seek", f"Failed to seek to data offset for tensor {i}", allocated=size)
    tensor = CppTensor(dt.name, e.shape, product, size, product != _exact(e.shape))
    if mode == v4.RAW:
        if e.data_offset + size > file_size:
            return _reject("raw_read", f"Failed to read tensor data at index {i}", allocated=size)
        crc = _crc_at(pread, e.data_offset, size)
    else:
        if e.payload_size > budget - size:
            return CppVerdict("crashed", "abort", _CRASH.format(n=e.payload_size), allocated=size)
        if e.data_offset + e.payload_size > file_size:
            return _reject(
                "zlib_read", f"Failed to read compressed data at index {i}",
                allocated=size + e.payload_size,
            )  # fmt: skip
        if e.payload_size == 0:
            return _reject("zlib_params", "Invalid decompression parameters", allocated=size)
        if size >= v4.ZLIB_CPP_MAX:
            return _reject(
                "zlib_4gb", f"Cannot decompress tensor larger than 4GB: {size} bytes",
                allocated=size + e.payload_size,
            )  # fmt: skip
        got = _zlib.scan(pread(e.data_offset, e.payload_size), size)
        if got.outcome == "corrupt" or (got.outcome == "truncated" and got.produced < size):
            return _reject(
                "zlib_inflate", "zlib decompression failed: compressed data corrupted (code=-3)",
                allocated=size + e.payload_size,
            )  # fmt: skip
        if got.outcome != "end":
            return _reject(
                "zlib_inflate", "zlib decompression failed: output buffer too small (code=-5)",
                allocated=size + e.payload_size,
            )  # fmt: skip
        if got.produced != size:
            return _reject(
                "zlib_size",
                f"Decompressed size mismatch: expected={size}, actual={got.produced}",
                allocated=size + e.payload_size,
            )
        crc = got.crc32
    if crc != e.data_crc32:
        return _reject(
            "data_crc", f"Data CRC32 mismatch at index {i}: expected={e.data_crc32}, got={crc}",
            allocated=size,
        )  # fmt: skip
    return tensor


def _exact(shape: tuple[int, ...]) -> int:
    out = 1
    for v in shape:
        out *= v
    return out


_READ_STEP = 16 << 20


def _crc_at(pread: Callable[[int, int], bytes], offset: int, size: int) -> int:
    crc = 0
    for start in range(offset, offset + size, _READ_STEP):
        crc = _zlib.crc32(pread(start, min(_READ_STEP, offset + size - start)), crc)
    return crc
