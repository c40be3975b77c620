"""The command registry and the built-in commands' declarations."""

from __future__ import annotations

import sys

import pytest
from tsr_worker import DEFAULT, Command, Registry
from tsr_worker.commands import CONVOLUTIONS, TRANSPOSED_CONVOLUTIONS, UNARY

UPSTREAM = {
    "hello", "hi", "matmul", "add",
    "conv_k3_s1_p0", "conv_k3_s1_p1", "conv_k3_s2_p1", "conv_k1_s1_p0", "conv_k1_s2_p0",
    "conv_k7_s2_p3", "tconv_k3_s1_p1", "tconv_k3_s2_p1",
    "zeros_like", "ones_like", "relu", "sign", "square", "sqrt", "abs", "negative",
    "reciprocal", "round", "transpose", "tensor_square",
}  # fmt: skip


def test_every_upstream_command_is_built_in() -> None:
    assert set(DEFAULT.names()) >= UPSTREAM
    assert set(UNARY) | set(CONVOLUTIONS) | set(TRANSPOSED_CONVOLUTIONS) <= UPSTREAM


def test_builtin_shapes() -> None:
    assert DEFAULT.get("hello") is not None and DEFAULT.get("hello").is_text  # type: ignore[union-attr]
    matmul = DEFAULT.get("MatMul")
    assert matmul is not None and matmul.inputs == 2 and matmul.outputs is None
    assert DEFAULT.get("relu") == DEFAULT.get("RELU") and DEFAULT.get("relu").inputs == 1  # type: ignore[union-attr]
    square = DEFAULT.get("tensor_square")
    assert square is not None
    assert (square.inputs, square.outputs, square.answer) == (("input",), ("output",), "status")


def test_importing_the_package_imports_no_torch_or_numpy() -> None:
    import subprocess

    code = "import sys, tsr_worker; print('torch' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_decorator_registers_and_returns_the_function() -> None:
    reg = Registry()

    @reg.command("Double", inputs=1)
    def double(x: int) -> int:
        return 2 * x

    assert double(2) == 4
    cmd = reg.get("double")
    assert cmd == Command("double", double, 1, None, "response")
    assert "DOUBLE" in reg and "other" not in reg and len(reg) == 1
    assert [c.name for c in reg] == ["double"]


def test_text_and_fixed_tag_commands() -> None:
    reg = Registry()
    reg.command("echo")(lambda p: p)
    reg.command("sq", inputs=["input"], outputs=["output"], answer="status")(lambda x: x)
    echo, sq = reg.get("echo"), reg.get("sq")
    assert echo is not None and echo.is_text and echo.inputs is None
    assert sq is not None and sq.inputs == ("input",) and sq.outputs == ("output",)


def test_duplicates_are_refused_unless_replacing() -> None:
    reg = Registry()
    reg.command("a")(lambda p: p)
    with pytest.raises(ValueError, match="already registered"):
        reg.command("A")(lambda p: p + "!")

    def louder(p: str) -> str:
        return p + "!"

    reg.command("a", replace=True)(louder)
    assert reg.get("a").func is louder  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "1abc"},
        {"name": "has space"},
        {"name": "x" * 65},
        {"name": "ok", "inputs": -1},
        {"name": "ok", "inputs": True},
        {"name": "ok", "inputs": ["../x"]},
        {"name": "ok", "inputs": "ab"},
        {"name": "ok", "inputs": 1, "outputs": []},
        {"name": "ok", "inputs": 1, "outputs": [".hidden"]},
        {"name": "ok", "answer": "email"},
    ],
)
def test_bad_declarations_are_refused(kwargs: dict[str, object]) -> None:
    reg = Registry()
    name = str(kwargs.pop("name"))
    with pytest.raises(ValueError):
        reg.command(name, **kwargs)(lambda p: p)  # type: ignore[arg-type]
    assert len(reg) == 0


def test_copy_is_independent() -> None:
    reg = DEFAULT.copy()
    reg.command("only_in_copy")(lambda p: p)
    assert "only_in_copy" in reg and "only_in_copy" not in DEFAULT
    assert set(DEFAULT.names()) < set(reg.names())
