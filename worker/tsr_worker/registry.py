"""The command registry: how a request's ``cmd`` becomes a function call.

A command is a plain function registered with a decorator. Tensor commands receive the
tensors their request names and return a tensor (answered as tag ``r``) or a sequence of
tensors (answered ``r0,r1,...``), or reply text (a ``str``, as ``compare`` does); text
commands receive the params string and return the
reply text. The built-in commands (:mod:`tsr_worker.commands`) use this same registry.
Adding one takes a few lines, in any module given to ``tsr-worker --commands MODULE``::

    from tsr_worker import command

    @command("scale2", inputs=1)          # {"cmd": "scale2", "params": "x"} -> r.tsr
    def scale2(x):
        return x * 2

    @command("echo")                      # a text command: params in, reply text out
    def echo(params: str) -> str:
        return params

Names are matched case-insensitively. Torch is not imported here: a command function
imports what it needs (the worker has already imported torch in the background).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from .protocol import check_name, check_tag

__all__ = ["DEFAULT", "Command", "Registry", "command"]

F = TypeVar("F", bound=Callable[..., Any])

Answer = Literal["response", "status"]


@dataclass(frozen=True)
class Command:
    """A registered command.

    ``inputs`` is ``None`` for a text command, the number of tags its params must name,
    or a tuple of fixed tags (params are then ignored). ``outputs`` are the result tags
    (``None``: ``r`` for one result, ``r0, r1, ...`` for several). ``answer`` is
    ``"response"`` (a ``response.json``) or ``"status"`` (no response: ``status.txt``
    becomes ``done``, or ``error:<code>: <message>``, as for the V1.20 ``tensor_square``,
    whose clients read no responses).
    """

    name: str
    func: Callable[..., Any]
    inputs: int | tuple[str, ...] | None = None
    outputs: tuple[str, ...] | None = None
    answer: Answer = "response"

    @property
    def is_text(self) -> bool:
        """True for a text command (params in, reply text out)."""
        return self.inputs is None


class Registry:
    """Commands by canonical (lower-case) name."""

    def __init__(self) -> None:
        self._commands: dict[str, Command] = {}

    def command(
        self,
        name: str,
        *,
        inputs: int | Sequence[str] | None = None,
        outputs: Sequence[str] | None = None,
        answer: Answer = "response",
        replace: bool = False,
    ) -> Callable[[F], F]:
        """Decorator registering a function as command ``name`` (see :class:`Command`).

        Raises ``ValueError`` for a bad name, tag or count, or a name already taken
        (unless ``replace=True``).
        """

        def register(func: F) -> F:
            self.add(
                Command(
                    check_name(name),
                    func,
                    _check_inputs(inputs),
                    None if outputs is None else tuple(_tags(outputs, "outputs")),
                    _check_answer(answer),
                ),
                replace=replace,
            )
            return func

        return register

    def add(self, cmd: Command, *, replace: bool = False) -> None:
        """Register ``cmd``; ``ValueError`` if its name is taken and not ``replace``."""
        if cmd.name in self._commands and not replace:
            raise ValueError(f"command {cmd.name!r} is already registered")
        self._commands[cmd.name] = cmd

    def get(self, name: str) -> Command | None:
        """The command called ``name`` (any case), or ``None``."""
        return self._commands.get(name.lower())

    def names(self) -> list[str]:
        """All command names, sorted."""
        return sorted(self._commands)

    def copy(self) -> Registry:
        """An independent registry with the same commands."""
        other = Registry()
        other._commands = dict(self._commands)
        return other

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._commands

    def __iter__(self) -> Iterator[Command]:
        return iter(self._commands[n] for n in self.names())

    def __len__(self) -> int:
        return len(self._commands)


def _tags(tags: Sequence[str], what: str) -> list[str]:
    if isinstance(tags, str) or not tags:
        raise ValueError(f"{what} must be a non-empty sequence of tags, got {tags!r}")
    try:
        return [check_tag(t) for t in tags]
    except Exception as exc:
        raise ValueError(f"{what}: {exc}") from None


def _check_inputs(inputs: int | Sequence[str] | None) -> int | tuple[str, ...] | None:
    if inputs is None:
        return None
    if isinstance(inputs, int):
        if isinstance(inputs, bool) or inputs < 0:
            raise ValueError(f"inputs must be a count >= 0, got {inputs!r}")
        return inputs
    return tuple(_tags(inputs, "inputs"))


def _check_answer(answer: str) -> Answer:
    if answer == "response":
        return "response"
    if answer == "status":
        return "status"
    raise ValueError(f"answer must be 'response' or 'status', got {answer!r}")


DEFAULT = Registry()
"""The registry the worker serves; the built-ins are registered here."""

command = DEFAULT.command
"""Register a command in :data:`DEFAULT` (see :meth:`Registry.command`)."""
