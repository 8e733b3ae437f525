"""The daemon's signal handling (`pipelined.signals`): a wait that signals cut short
and that a signal can never deadlock.

The deadlock this guards against: a SIGTERM handler calling `threading.Event.set()`
that interrupted the main thread inside its own `Event.wait()`, while the wait held
the event's lock; the daemon then never stopped (seen once in CI). Only the first
SIGTERM could hit that window, once; the flood test below sends thousands of
SIGHUPs, which now wake the wait the same way, so a handler that takes a lock is
caught: a wake through an Event wedged the loop in 7 runs of 10 (then crashed, as
each later signal nested one more blocked handler, up to Python's recursion limit).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from conftest import DEADLINE_S, DaemonProcess, Stories

from pipelined.signals import DaemonSignals

FLOODED = textwrap.dedent("""
    import os
    from pipelined.signals import DaemonSignals

    signals = DaemonSignals()
    signals.install()
    print(os.getpid(), flush=True)
    wakes = 0
    while not signals.wait(0.0001):  # the tightest loop: a signal lands anywhere in it
        if signals.reload_requested:
            signals.reload_requested = False
            wakes += 1
    print(f"{wakes} {signals.name}", flush=True)
""")


def run_child(script: str, *, flood: int = 0) -> str:
    """Run `script` (it prints its pid first), with `flood` SIGHUPs then a SIGTERM sent
    to it when asked; its output after the pid."""
    # Unbuffered: the pid's line is read byte by byte, so nothing after it is left in a
    # buffer that communicate() (which reads the pipe itself) would never see.
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, bufsize=0)
    try:
        assert child.stdout is not None
        assert int(child.stdout.readline()) == child.pid  # its handlers are installed
        if flood:
            sent, deadline = 0, time.monotonic() + 4
            while sent < flood and time.monotonic() < deadline and child.poll() is None:
                os.kill(child.pid, signal.SIGHUP)
                sent += 1
                # The pace of the flood, not a wait for anything: a signal every 0.1 ms
                # lands all over the loop; back to back, handlers nest in handlers
                # until Python's recursion limit, which no real sender does.
                time.sleep(0.0001)
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        out, _ = child.communicate(timeout=DEADLINE_S)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, f"the child ended with {child.returncode}: {out!r}"
    return out.decode()


def test_a_flood_of_signals_never_wedges_the_wait() -> None:
    """Thousands of SIGHUPs land at every point of the waiting loop and wake it; a SIGTERM
    after them still ends it, and it says which signal did."""
    wakes, name = run_child(FLOODED, flood=20_000).split()
    assert int(wakes) > 0
    assert name == "SIGTERM"


WOKEN = textwrap.dedent("""
    import os, signal, threading, time
    from pipelined.signals import DaemonSignals

    signals = DaemonSignals()
    signals.install()
    print(os.getpid(), flush=True)

    # A signal handled before the wait starts: its byte ends the wait at once.
    os.kill(os.getpid(), signal.SIGHUP)
    started = time.monotonic()
    stopping = signals.wait(20)
    print("before", stopping, signals.reload_requested, round(time.monotonic() - started))
    signals.reload_requested = False

    # A signal the kernel gives to another thread (as it does when the main thread
    # has one pending already): that thread runs the C-level handler, and the main
    # thread, asleep in poll, wakes on the byte that handler writes.
    main = threading.get_native_id()

    def in_poll():
        with open(f"/proc/self/task/{main}/syscall") as syscall:
            number = syscall.read().split()[0]
        with open(f"/proc/self/task/{main}/wchan") as wchan:
            return number in ("7", "271") or "poll" in wchan.read()  # x86-64 poll, ppoll

    def other():
        deadline = time.monotonic() + 10
        while not in_poll() and time.monotonic() < deadline:
            time.sleep(0.01)
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)

    threading.Thread(target=other).start()
    started = time.monotonic()
    signals.wait(20)
    waited = round(time.monotonic() - started)
    print("thread", signals.wait(0), signals.name, waited, flush=True)
""")


def test_a_signal_always_cuts_the_wait_short() -> None:
    """Neither a signal handled just before the wait nor one delivered to another
    thread leaves the main thread asleep for its whole timeout (20 s here)."""
    before, thread = run_child(WOKEN).splitlines()
    assert before == "before False True 0"  # woken, a reload asked for, not stopping
    assert thread == "thread True SIGTERM 0"


def test_a_wait_without_a_signal_sleeps_its_timeout() -> None:
    signals = DaemonSignals()
    started = time.monotonic()
    assert signals.wait(0.05) is False
    assert time.monotonic() - started >= 0.05
    assert not signals.reload_requested and not signals.stopping


SURVEY_THEN_SIGTERM = textwrap.dedent("""
    import os, signal, sys
    import pipelined.daemon as daemon

    take_survey = daemon.take_survey

    def survey_then_sigterm(*args, **kwargs):
        survey = take_survey(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)  # as if systemd stopped the unit right then
        return survey

    daemon.take_survey = survey_then_sigterm
    sys.argv = ["pipelined", *sys.argv[1:]]
    from pipelined.entry import main
    main()
""")


def start_stopped_at_the_survey(stories: Stories, db: Path,
                                workdir: Path) -> tuple[list[str], list[str]]:
    """The daemon started on `stories`, sent SIGTERM right after its survey: the names
    of its log events (it must exit 0 and say why it stopped) and what it told the
    notify socket."""
    notify_path = workdir / "notify-stopped.sock"
    notify_path.unlink(missing_ok=True)
    log_path = workdir / "stopped-start.log"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify, \
            log_path.open("wb") as log:
        notify.bind(str(notify_path))
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINED_")}
        run = subprocess.run(
            [sys.executable, "-c", SURVEY_THEN_SIGTERM, "run", "--root", str(stories.root),
             "--db", str(db), "--log-format", "json"],
            stdout=log, stderr=log, timeout=DEADLINE_S, check=False,
            env={**env, "NOTIFY_SOCKET": str(notify_path)})
        notify.setblocking(False)
        messages = []
        with contextlib.suppress(BlockingIOError):
            while True:
                messages.append(notify.recv(4096).decode())
    lines = log_path.read_text().splitlines()
    events = [json.loads(line) for line in lines if line.startswith("{")]
    assert run.returncode == 0, lines
    names = [event["event"] for event in events]
    assert names[-2:] == ["daemon.stopping", "daemon.stopped"], names
    assert events[-2]["signal"] == "SIGTERM"
    assert "stopped before syncing" in events[-2]["action"]
    return names, messages


def test_a_stop_during_the_start_ends_it_before_syncing(
        stories: Stories, daemon: DaemonProcess, tmp_path: Path) -> None:
    """A SIGTERM that comes while the daemon surveys the folders stops it there, exit 0,
    without starting the writer and the apply thread, and without READY even when
    nothing changed; the next start syncs what the stopped one saw."""
    stories.write("1_backlog", "1_first")
    stories.write("2_current", "2_second")
    names, messages = start_stopped_at_the_survey(stories, daemon.db, tmp_path)
    assert not {"daemon.startup", "daemon.ready", "story.created"} & set(names)
    assert messages == ["STOPPING=1"]
    assert daemon.query("SELECT count(*) FROM pipeline_items") == [(0,)]

    daemon.start()
    assert daemon.wait_row("1_first")["stage"] == "1_backlog"
    assert daemon.wait_row("2_second")["stage"] == "2_current"
    assert daemon.stop() == 0

    names, messages = start_stopped_at_the_survey(stories, daemon.db, tmp_path)
    assert messages == ["STOPPING=1"]  # nothing changed, and still no READY
    assert not {"daemon.startup", "daemon.ready"} & set(names)
