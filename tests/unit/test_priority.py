"""msgctl.supervisor.priority: a program's scheduling group and main thread get its nice;
its threads get its timer slack."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from msgctl.supervisor import priority


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    """A process in a session of its own, as the supervisor starts its programs."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                            start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


def test_the_group_file_and_the_thread_both_get_the_value(
        tmp_path: Path, child: subprocess.Popen[bytes]) -> None:
    (tmp_path / str(child.pid)).mkdir()
    (tmp_path / str(child.pid) / "autogroup").write_text("/autogroup-1 nice 0\n")
    assert priority.apply(child.pid, 3, proc=tmp_path) is None
    assert (tmp_path / str(child.pid) / "autogroup").read_text() == "3\n"
    assert os.getpriority(os.PRIO_PROCESS, child.pid) == 3


def test_a_kernel_without_autogroup_still_sets_the_thread(
        tmp_path: Path, child: subprocess.Popen[bytes]) -> None:
    assert priority.apply(child.pid, 2, proc=tmp_path) is None  # no /proc/<pid>/...
    assert priority.read(child.pid, proc=tmp_path) == (None, 2)


def test_what_cannot_be_set_is_said_not_raised(
        tmp_path: Path, child: subprocess.Popen[bytes]) -> None:
    (tmp_path / str(child.pid) / "autogroup").mkdir(parents=True)  # not writable as a file
    problem = priority.apply(child.pid, 1, proc=tmp_path)
    assert problem is not None and problem.startswith("its scheduling group:")
    assert os.getpriority(os.PRIO_PROCESS, child.pid) == 1  # the thread's still set


def test_a_program_already_gone_is_no_error(child: subprocess.Popen[bytes]) -> None:
    child.kill()
    child.wait()
    assert priority.apply(child.pid, 1) is None
    assert priority.read(child.pid) == (None, None)


SLACK_OF_A_THREAD = """
import ctypes, threading
gettid = ctypes.CDLL(None).gettid
def show():
    print(open(f"/proc/{gettid()}/timerslack_ns").read().strip())
show()
t = threading.Thread(target=show)
t.start()
t.join()
"""


def test_the_program_and_the_threads_it_starts_get_the_timer_slack() -> None:
    argv = priority.with_timer_slack([sys.executable, "-c", SLACK_OF_A_THREAD], 321)
    out = subprocess.run(argv, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["321000", "321000"]
    # without the wrapper the kernel's default (or whatever this test inherited)
    plain = subprocess.run([sys.executable, "-c", SLACK_OF_A_THREAD], capture_output=True,
                           text=True, check=True)
    assert plain.stdout.split() == [Path("/proc/self/timerslack_ns").read_text().strip()] * 2


def test_the_wrapped_program_keeps_its_arguments_and_exit_status() -> None:
    argv = priority.with_timer_slack(
        [sys.executable, "-c", "import sys; print(sys.argv[1:]); sys.exit(3)", "a b", "$x"],
        200)
    out = subprocess.run(argv, capture_output=True, text=True)
    assert out.returncode == 3 and out.stdout.strip() == "['a b', '$x']" and not out.stderr
