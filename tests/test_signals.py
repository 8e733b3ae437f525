"""The daemon's signal handling (`pipelined.signals`): a wait that signals cut short
and that a signal can never deadlock.

The deadlock this guards against: a handler calling `threading.Event.set()` that
interrupted the main thread inside its own `Event.wait()`, while the wait held
the event's lock; the daemon then never stopped on SIGTERM (seen once in CI). The
flood test below hung within about a thousand signals with that handler.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from conftest import DEADLINE_S, DaemonProcess, Stories

from pipelined.signals import DaemonSignals

CHILD = textwrap.dedent("""
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
    print(f"stopped by {signals.name} after {wakes} reload wakes", flush=True)
""")


def test_a_flood_of_signals_never_wedges_the_wait() -> None:
    """Thousands of SIGHUPs land at every point of the waiting loop; a SIGTERM after
    them still ends it, and it says which signal did."""
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        os.kill(int(child.stdout.readline()), 0)  # its handlers are installed
        sent, deadline = 0, time.monotonic() + 4
        while sent < 20_000 and time.monotonic() < deadline and child.poll() is None:
            os.kill(child.pid, signal.SIGHUP)
            sent += 1
            # The pace of the flood, not a wait for anything: a signal every 0.1 ms
            # lands all over the loop; back to back, handlers nest in handlers
            # until Python's recursion limit, which no real sender does.
            time.sleep(0.0001)
        child.send_signal(signal.SIGTERM)
        out, _ = child.communicate(timeout=DEADLINE_S)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, f"the child ended with {child.returncode} after {sent} signals"
    assert out.startswith("stopped by SIGTERM after ")
    assert int(out.split()[4]) > 0  # the SIGHUPs did wake it


def test_a_signal_before_the_wait_still_ends_it() -> None:
    """A signal handled just before the main thread starts to wait is not lost: the
    byte its handler wrote ends the next wait at once."""
    signals = DaemonSignals()
    signals._on_reload(signal.SIGHUP, None)
    started = time.monotonic()
    assert signals.wait(DEADLINE_S) is False  # woken, not stopping
    assert time.monotonic() - started < DEADLINE_S / 2
    assert signals.reload_requested

    signals._on_stop(signal.SIGTERM, None)
    assert signals.wait(DEADLINE_S) is True
    assert (signals.count, signals.name) == (1, "SIGTERM")
    signals._on_stop(signal.SIGINT, None)
    assert (signals.count, signals.name) == (2, "SIGINT")


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


def test_a_stop_during_the_start_ends_it_before_syncing(
        stories: Stories, daemon: DaemonProcess, tmp_path: Path) -> None:
    """A SIGTERM that comes while the daemon surveys the folders stops it there, exit 0,
    without starting the writer and the apply thread; the next start syncs what the
    stopped one saw."""
    stories.write("1_backlog", "1_first")
    stories.write("2_current", "2_second")
    log_path = tmp_path / "stopped-start.log"
    with log_path.open("wb") as log:
        run = subprocess.run(
            [sys.executable, "-c", SURVEY_THEN_SIGTERM, "run", "--root", str(stories.root),
             "--db", str(daemon.db), "--log-format", "json"],
            stdout=log, stderr=log, timeout=DEADLINE_S, check=False,
            env={k: v for k, v in os.environ.items() if not k.startswith("PIPELINED_")})
    lines = log_path.read_text().splitlines()
    events = [json.loads(line) for line in lines if line.startswith("{")]
    assert run.returncode == 0, lines
    names = [event["event"] for event in events]
    assert names[-2:] == ["daemon.stopping", "daemon.stopped"], names
    assert events[-2]["signal"] == "SIGTERM"
    assert "stopped before syncing" in events[-2]["action"]
    assert not {"daemon.startup", "daemon.ready", "story.created"} & set(names)
    assert daemon.query("SELECT count(*) FROM pipeline_items") == [(0,)]

    daemon.start()
    assert daemon.wait_row("1_first")["stage"] == "1_backlog"
    assert daemon.wait_row("2_second")["stage"] == "2_current"
    assert daemon.stop() == 0
