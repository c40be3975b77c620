"""Usage errors of ``tsr-worker`` (exit 2, one line naming the option), the same whether
the worker would run now or from a launcher written with ``--write-launcher``."""

from __future__ import annotations

from pathlib import Path

import pytest
from tsr_worker import WorkerConfig
from tsr_worker.cli import main
from tsr_worker.config import MAX_IDLE_TIMEOUT_S

BAD_IDLE = ["inf", "-inf", "nan", "1e300", "-1", "604801", "soon"]


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(argv, exit_process=False)
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("value", BAD_IDLE)
def test_bad_idle_timeout_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    d = tmp_path / "s"
    d.mkdir()
    (d / "exit.flag").touch()  # a worker that did start would leave at once (status 0)
    code, err = run_main(["--session-dir", str(d), f"--idle-timeout={value}"], capsys)
    assert code == 2, err
    assert "--idle-timeout" in err and value in err
    assert sorted(p.name for p in d.iterdir()) == ["exit.flag"], "nothing written"


@pytest.mark.parametrize("value", BAD_IDLE)
def test_bad_idle_timeout_writes_no_launcher(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    launcher = tmp_path / "launcher.py"
    code, err = run_main(["--write-launcher", str(launcher), f"--idle-timeout={value}"], capsys)
    assert code == 2 and "--idle-timeout" in err, err
    assert not launcher.exists()


@pytest.mark.parametrize(
    ("option", "value", "named"),
    [("--max-inputs", "0", "max_inputs"), ("--max-input-bytes", "-5", "max_input_bytes"),
     ("--threads", "-1", "threads")],
)  # fmt: skip
def test_other_bad_values_write_no_launcher(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str, named: str
) -> None:
    launcher = tmp_path / "launcher.py"
    code, err = run_main(["--write-launcher", str(launcher), f"{option}={value}"], capsys)
    last = err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("tsr-worker: error:") and named in last, err
    assert not launcher.exists()


@pytest.mark.parametrize("value", ["0", "0.25", "43200", str(MAX_IDLE_TIMEOUT_S)])
def test_good_idle_timeouts_are_accepted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    launcher = tmp_path / "launcher.py"
    code, err = run_main(["--write-launcher", str(launcher), f"--idle-timeout={value}"], capsys)
    assert code == 0, err
    assert f"'--idle-timeout', '{float(value)!r}'" in launcher.read_text()


@pytest.mark.parametrize("value", [float("inf"), float("nan"), 1e300, -0.5, MAX_IDLE_TIMEOUT_S * 2])
def test_config_refuses_non_finite_and_absurd_idle_timeouts(value: float) -> None:
    with pytest.raises(ValueError, match="idle time-out"):
        WorkerConfig("/nonexistent", idle_timeout_s=value)
