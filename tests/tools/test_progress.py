"""processor.tools.progress: a bar on a terminal, nothing on a pipe or a file."""

from __future__ import annotations

import fcntl
import io
import os
import select
import struct
import subprocess
import termios
from pathlib import Path

import pytest

from processor.tools.progress import Progress, each
from tests.test_cli import faulttrace


def test_nothing_is_drawn_off_a_terminal_and_lines_still_print() -> None:
    stream, out = io.StringIO(), io.StringIO()
    with Progress(3, "bench", "run", stream) as bar:
        assert not bar.shown
        bar.now("run 1/1: full")
        bar.step()
        bar.write("run 1 full: 10,000 spans/s", out)
    assert stream.getvalue() == ""
    assert out.getvalue() == "run 1 full: 10,000 spans/s\n"
    assert list(each([1, 2], 2, "eval", "case", stream)) == [1, 2] and stream.getvalue() == ""


def _drain(fd: int) -> str:
    chunks = []
    while select.select([fd], [], [], 0.2)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def test_a_terminal_gets_a_bar_with_what_runs() -> None:
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal has a size
    try:
        with os.fdopen(slave, "w", closefd=False) as tty:
            with Progress(4, "eval", "case", tty) as bar:
                assert bar.shown
                bar.step("case-3")
                bar.step()
                tty.flush()
                drawn = _drain(master)
        assert "eval" in drawn and "2/4" in drawn and "case-3" in drawn, drawn
    finally:
        os.close(master)
        os.close(slave)


@pytest.mark.slow
def test_eval_piped_writes_no_progress(tmp_path: Path) -> None:
    dataset = tmp_path / "ds"
    made = subprocess.run(faulttrace("demo", "--write-dataset", str(dataset), "--fault", "exception",
                                     "--cases-per-kind", "1", "--traces-per-case", "6", "--baseline-traces", "60"),
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    run = subprocess.run(faulttrace("eval", str(dataset)), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stderr == "" and "\r" not in run.stdout
    assert "exception-1" in run.stdout
