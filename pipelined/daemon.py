"""The daemon's lifecycle: lock, migrate, watch, survey (READY when nothing changed),
load, catch up, apply, stop.

The only module that wires the daemon's threads (but one: a big catch-up's
parse-ahead worker process has a reader thread, started and stopped by the
start-up, see `pipelined.parse_ahead`):

- main thread: signals (SIGHUP reloads the config), the watches (it alone
  schedules them), the survey (`pipelined.survey`), health checks, and all
  sd_notify but a READY that must wait for a catch-up (WATCHDOG=1 only while
  every thread makes progress, see `pipelined.health`);
- watchdog observer: `StoryEventHandler` hands ids to the `Coalescer`;
- apply thread (`ApplyLoop`, in `pipelined.apply`): the only owner of the pycrdt document and the
  content map's writes; one reconcile per settled burst, one batch each;
- writer thread (`Writer`): the only writer of the database.

Shutdown runs in a fixed order: stop the watcher, settle what is pending,
drain the writer (which checkpoints), release the lock. A second SIGTERM
skips the final flush.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from pipelined.config import Config, resolve
from pipelined.errors import DatabaseError, PipelinedError, RootError
from pipelined.health import (
    DEFAULT_STALL_S,
    Liveness,
    PathGuard,
    ProgressProbe,
    StatusReporter,
    WatchdogPinger,
)
from pipelined.layout import check_root, git_busy
from pipelined.logs import configure_logging, dropped_lines, get_logger
from pipelined.notify import Notifier, monotonic_usec, watchdog_usec
from pipelined.outcome import Outcome
from pipelined.signals import DaemonSignals
from pipelined.store.connection import (
    check_integrity,
    open_read_only,
    open_writer,
)
from pipelined.store.heartbeat import Heartbeat
from pipelined.store.lock import DaemonLock, lock_path
from pipelined.store.migrations import apply_migrations
from pipelined.store.preflight import check_before_writing
from pipelined.store.queries import counts_by_stage, meta
from pipelined.survey import Survey, take_survey
from pipelined.terminal import end_ctrl_c_line

if TYPE_CHECKING:  # imported once the survey is taken (READY may go out before)
    from concurrent.futures import Future

    import apsw

    from pipelined.apply import ApplyLoop
    from pipelined.store.writer import Writer
    from pipelined.watch import Coalescer, OverflowHook, StageWatcher

__all__ = ["Daemon"]

log = get_logger("pipelined.daemon")

HEALTH_EVERY_S = 0.5
WATCH_CHECK_S = 2.0  # stage folders created or replaced are watched within this
UNWATCHED_RESCAN_S = 5.0  # a stat pass this often while a stage folder cannot be watched
RELOADABLE = ("log_format", "log_level")  # settings a SIGHUP applies; the rest need a restart


class _Watching(NamedTuple):
    """The watches, started before the survey (`Daemon._start_watching`)."""

    watcher: StageWatcher
    coalescer: Coalescer
    overflow: OverflowHook


class _Parts(NamedTuple):
    """One run's threads and what joins them (started by `Daemon._start_parts`)."""

    watcher: StageWatcher
    coalescer: Coalescer
    writer: Writer
    apply: ApplyLoop
    overflow: OverflowHook


class Daemon:
    """`pipelined run`: everything from the lock to exit 0."""

    def __init__(self, config: Config, notifier: Notifier | None = None,
                 reload_config: Callable[[], Config] | None = None) -> None:
        self.config = config
        self.notifier = notifier or Notifier()
        self._signals = DaemonSignals()  # SIGTERM/SIGINT stop, SIGHUP reloads
        self._watches_dirty = threading.Event()
        self._started = time.monotonic()
        self._started_unix = time.time()
        self._heartbeat = Heartbeat(config.db_path)
        self._guard = PathGuard()
        self._outcome = Outcome()  # how this run ends: every thread reports here
        self._wal_remembered = False
        # What systemd hears (see _watch_health, _tick, _reload). SIGHUP reads the
        # settings again through reload_config (flags, environment, file).
        self._reload_config = reload_config or (lambda: resolve({}))
        self._liveness = Liveness([])
        self._pinger = WatchdogPinger(self.notifier, None)  # the real one: _watch_health()
        self._tick_in = HEALTH_EVERY_S
        self._status = StatusReporter(self.notifier, self._read_counts, self._started)
        self._last_watch_check = self._last_unwatched_rescan = 0.0
        self._ready_at: float | None = None  # when READY=1 went out (monotonic)
        self._stories_at_ready = 0

    def run(self) -> int:
        started = self._started
        root = check_root(self.config.root, self.config.stages)
        db_path = self.config.db_path
        # Before the folder, the lock file or a -wal is created: a refused start
        # (another application's database, a device, a newer schema) leaves the
        # database's folder exactly as it was.
        check_before_writing(db_path)
        # Startup builds tens of thousands of long-lived objects at once; the
        # cyclic GC would scan them again and again. Collect once after READY.
        gc.disable()
        lock = DaemonLock(db_path)
        lock.acquire()
        try:
            return self._run_locked(root, db_path, started)
        finally:
            lock.release()

    def _run_locked(self, root: Path, db_path: Path, started: float) -> int:
        """The main thread's whole life once the lock is held."""
        self._signals.install()
        conn = self._migrate(db_path)  # the writer's first connection
        watching: _Watching | None = None
        survey: Survey | None = None
        try:
            if not self._signals.stopping:
                self._remember_paths(root, db_path)
                watching = self._start_watching(root)  # before the survey's stat pass
                survey = take_survey(db_path, root, self.config.stages,
                                     self.config.max_file_bytes)
            if survey is not None and survey.unchanged and not self._signals.stopping:
                # READY before the sync, the writer and pycrdt are even imported
                self._ready_before_parts(survey.stored.story_count)
        except BaseException:
            conn.close()
            self._stop_before_parts(watching)
            raise
        if survey is None or watching is None or self._signals.stopping:
            return self._stop_before_syncing(conn, watching)
        try:
            parts = self._start_parts(root, db_path, survey, conn, watching)  # owns conn
        except BaseException:
            self._stop_before_parts(watching)
            raise
        del survey  # the apply thread's start-up frees its listings
        self._watch_health(parts)
        try:
            # The first log line here (which imports structlog) waits until the apply
            # thread has loaded the state (which imports pycrdt): the two threads
            # never import heavy modules at the same time.
            if self._wait_for(parts.apply.in_sync, parts) and \
                    self._wait_for(parts.apply.loaded, parts):
                gc.enable()
                gc.freeze()  # what startup built lives as long as the daemon
                ready_at = self._ready_at or parts.apply.in_sync.result()
                log.info("daemon.ready", root=str(root), db=str(db_path),
                         stories=parts.apply.stories, ms=int((ready_at - started) * 1000))
                self._health_loop(parts)
        finally:
            gc.enable()
            self.notifier.send("STOPPING=1")
            self._shutdown(parts)
            parts.overflow.detach()
            self._heartbeat.close()
        return self._verdict()

    def _start_watching(self, root: Path) -> _Watching:
        """The watches, before the survey's stat pass: nothing that happens during the
        start is missed (an event waits in the coalescer for the apply thread)."""
        from pipelined.watch import (  # noqa: PLC0415 - after the migrations
            Coalescer,
            OverflowHook,
            StageWatcher,
            StoryEventHandler,
        )

        coalescer = Coalescer(self.config.settle_ms / 1000, self.config.settle_cap_ms / 1000,
                              quick_s=self.config.settle_quick_ms / 1000,
                              quick_ok=lambda: not git_busy(root))
        handler = StoryEventHandler(root, self.config.stages, coalescer, self._watches_dirty.set)
        overflow = OverflowHook.attach(coalescer)
        watcher = StageWatcher(root, self.config.stages, handler)
        try:
            watcher.start()
        except BaseException:  # e.g. the inotify limits: one line, the hook gone
            overflow.detach()
            raise
        return _Watching(watcher, coalescer, overflow)

    def _stop_before_parts(self, watching: _Watching | None) -> None:
        """The start failed before the writer and apply threads ran: the watches stopped,
        the hook detached, STOPPING=1, the heartbeat closed (the caller raises)."""
        if watching is not None:
            try:
                watching.watcher.stop()
            except Exception:
                log.exception("watch.stop_failed")
            watching.overflow.detach()
        self.notifier.send("STOPPING=1")
        self._heartbeat.close()

    def _stop_before_syncing(self, conn: apsw.Connection, watching: _Watching | None) -> int:
        """A stop asked for during the migrations or the survey: the start ends there,
        exit 0, before the writer and the apply thread load and sync anything (the
        next start's survey finds what this one saw)."""
        try:
            conn.close()
        finally:
            if self._signals.name == "SIGINT":
                end_ctrl_c_line()
            log.info("daemon.stopping", signal=self._signals.name,
                     action="stopped before syncing; the next start catches up")
            self._stop_before_parts(watching)
        return self._verdict()

    def _start_parts(self, root: Path, db_path: Path, survey: Survey,
                     conn: apsw.Connection, watching: _Watching) -> _Parts:
        """The writer, then the apply thread (which waits on it), once the survey is
        taken (and READY maybe sent): their modules, with pycrdt and the parser the
        apply thread imports, are most of the daemon's imports.

        The writer takes `conn`, open since the migrations, as its first connection
        (and opens any later one itself); if the threads cannot start, `conn` is
        closed here.
        """
        from pipelined.apply import ApplyLoop  # noqa: PLC0415
        from pipelined.store.writer import Writer  # noqa: PLC0415

        watcher, coalescer, overflow = watching
        first = [conn]
        writer = Writer(lambda: first.pop() if first else open_writer(db_path),
                        self.config.writer_queue,
                        check=lambda conn: check_integrity(conn, db_path), path=db_path,
                        outcome=self._outcome, open_reader=lambda: open_read_only(db_path))
        try:
            # It runs PRAGMA quick_check once the apply thread has taken the survey over
            # (Writer.begin): before its first write, or beside it when the last writer
            # stopped cleanly on a checked file.
            writer.start()
            apply = ApplyLoop(self.config, root, db_path, coalescer, writer, self._send_ready,
                              self._outcome, survey,
                              paths_ok=lambda: self._guard.check() is None)
            apply.start()
        except BaseException:
            if writer.is_alive():  # it closes the connection it took
                writer.abandon()
                writer.join(HEALTH_EVERY_S)
            elif first:
                first.pop().close()
            raise
        return _Parts(watcher, coalescer, writer, apply, overflow)

    def _wait_for(self, future: Future[Any], parts: _Parts) -> bool:
        """Tick until the apply thread's `future` is done; False if the run ends first
        (a signal, a failure reported to the Outcome, a thread gone, a path replaced)."""
        from concurrent.futures import wait  # noqa: PLC0415 - after the survey

        while not self._signals.stopping:
            # `status` reads the heartbeat from the start: a writer failing during a
            # first import (a full disk) shows as degraded, not as starting for ever.
            self._beat(parts)
            if wait([future], self._tick(parts)).done:
                return not self._signals.stopping and not self._outcome.failed
            problem = self._problem(parts)  # a long first import is no time to lose the file
            if problem is not None:
                self._outcome.fail(problem)
                return False
        return False

    def _problem(self, parts: _Parts) -> BaseException | None:
        """Why the run cannot go on, if it cannot. A thread that failed has reported
        why to the Outcome before it stopped, and the first report wins."""
        moved = self._guard.check()
        if moved is not None:
            return moved
        stopped = [t.name for t in (parts.apply, parts.writer) if not t.is_alive()]
        if stopped:
            return RuntimeError(f"the thread {', '.join(stopped)} stopped")
        return None

    def _health_loop(self, parts: _Parts) -> None:
        """Until a signal or a problem: the heartbeat, WATCHDOG=1, STATUS=, SIGHUP, the
        watches."""
        self._beat(parts)
        self._last_watch_check = self._last_unwatched_rescan = time.monotonic()
        while not self._signals.wait(0.01 if self._watches_dirty.is_set() else self._tick_in):
            self._beat(parts)
            self._remember_wal(parts.writer)
            problem = self._problem(parts)
            if problem is not None:
                self._outcome.fail(problem)
                return
            if self._signals.reload_requested:
                self._reload()
            self._tick(parts)
            self._keep_watching(parts)

    @staticmethod
    def _migrate(db_path: Path) -> apsw.Connection:
        """The migrations applied on a write connection, which stays open for the
        writer: the database is held open for writing before READY, as it must be
        when its permissions change right after (the writer keeps committing)."""
        conn = open_writer(db_path)
        try:
            applied = apply_migrations(conn, db_path)
        except BaseException:
            conn.close()
            raise
        if applied:
            log.info("db.migrated", db=str(db_path), applied=applied)
        return conn

    def _verdict(self) -> int:
        """The exit status, once every thread has stopped: 0, or the run's first failure
        (a PipelinedError is raised for the CLI's one line; anything else is logged)."""
        error = self._outcome.error
        if isinstance(error, PipelinedError):
            raise error
        if error is not None:
            log.error("daemon.failed", error=f"{type(error).__name__}: {error}")
            return 1
        log.info("daemon.stopped")
        return 0

    def _remember_paths(self, root: Path, db_path: Path) -> None:
        """What the root, the database and its lock file are now (see PathGuard)."""
        self._guard.remember(root, lambda what: RootError(
            root, f"the root folder was {what} while the daemon ran; stopping "
            "(start pipelined again once the root is back)"))
        self._guard.remember(db_path, lambda what: DatabaseError(
            db_path, f"the database file was {what} while the daemon ran; stopping, "
            "as nothing committed to the old file would ever be read again (a restart "
            "brings the file at this path up to date with the folders)"))
        self._guard.remember(Path(lock_path(db_path)), lambda what: DatabaseError(
            db_path, f"its lock file {lock_path(db_path)} was {what} while the daemon ran, "
            "so a second daemon could start on this database; stopping"))

    def _remember_wal(self, writer: Writer) -> None:
        """The -wal file, once the writer's connection holds it: before that, SQLite
        deletes and re-creates it as the daemon's own connections close and open."""
        if self._wal_remembered or not writer.connected.is_set():
            return
        db_path = self.config.db_path
        wal = db_path.with_name(db_path.name + "-wal")
        self._guard.remember(wal, lambda what: DatabaseError(
            db_path, f"its write-ahead log {wal} was {what} while the daemon ran; stopping "
            "(the last checkpoint saves what it held into the database file)"))
        self._wal_remembered = True

    def _read_counts(self) -> tuple[dict[str, int], str | None]:
        """Stories per stage and the last sync, for STATUS=."""
        conn = open_read_only(self.config.db_path)
        try:
            return counts_by_stage(conn), meta(conn).get("last_sync")
        finally:
            conn.close()

    def _send_ready(self, stories: int) -> None:
        """READY=1: the database equals the folders (called on the apply thread, or on
        this one before the threads start when the survey found nothing changed).

        The writer's integrity check (PRAGMA quick_check) may still be running:
        it takes longer than the whole stat pass on a large database, and the
        writer runs it before its first write anyway. A corrupt database then
        stops the daemon with one line right after READY.
        """
        if self._ready_at is None:
            self._stories_at_ready = stories
            self._ready_at = time.monotonic()
            self.notifier.send("READY=1", f"STATUS=in sync: {stories} stories")

    def _ready_before_parts(self, stories: int) -> None:
        """READY=1 as soon as the survey finds the database equal to the folders, with
        the heartbeat `status` reads saying so first (the threads start right after)."""
        self._beat(None, stories)
        self._send_ready(stories)

    def _watch_health(self, parts: _Parts) -> None:
        """The probes behind WATCHDOG=1 and STATUS= (see pipelined.health).

        A part is stalled once it has sat on waiting work without progress for
        as long as systemd's watchdog timeout (at least a second), or for
        DEFAULT_STALL_S without a watchdog.
        """
        apply, writer, coalescer = parts.apply, parts.writer, parts.coalescer
        usec = watchdog_usec()
        stall_s = max(usec / 1e6, 1.0) if usec else DEFAULT_STALL_S
        self._liveness = Liveness([
            ProgressProbe("watcher", parts.watcher.is_alive),
            # Its work: a settled burst not taken yet. Its progress: a flush.
            ProgressProbe("apply thread", apply.is_alive,
                          done=lambda: apply.last_flush_monotonic,
                          waiting=lambda: apply.in_sync.done() and coalescer.ready(),
                          stall_s=stall_s),
            # Its work: a submitted batch not committed yet (queued, or in a retry).
            # Its progress: an attempt that finished, failed or not. A writer that
            # keeps retrying a full disk is degraded, not wedged: systemd must not
            # restart it in a loop. One stuck inside a call is wedged.
            ProgressProbe("writer", writer.is_alive, done=lambda: writer.attempts,
                          waiting=lambda: not writer.wait_committed(writer.submitted, 0),
                          stall_s=stall_s),
        ])
        self._pinger = WatchdogPinger.from_usec(self.notifier, usec)

    def _tick(self, parts: _Parts) -> float:
        """WATCHDOG=1 while healthy, STATUS=, EXTEND_TIMEOUT_USEC= during startup.

        Called by the main thread only; returns the seconds until the next tick.
        """
        problems = self._liveness()
        self._pinger.tick(healthy=not problems)
        writer = parts.writer
        if self._ready_at is not None:
            self._status.running(problems, writer.commits, writer.last_error, writer.pending(),
                                 self._folder_problems(parts))
        else:
            self._status.starting(problems)
        # Kept for the health loop's first wait: READY must not delay a due ping.
        self._tick_in = min(HEALTH_EVERY_S, self._pinger.due_in())
        return self._tick_in

    def _reload(self) -> None:
        """SIGHUP: RELOADING=1, the settings read again, what can change applied, READY=1.

        Log format and level change at once; any other changed setting is
        logged as needing a restart and keeps its running value.
        """
        self._signals.reload_requested = False
        self.notifier.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}",
                           "STATUS=reloading the configuration")
        try:
            fresh = self._reload_config()
        except PipelinedError as exc:
            log.error("daemon.reload_failed", error=str(exc),
                      action="kept the running configuration")
        else:
            changed = [name for name in Config._fields
                       if getattr(fresh, name) != getattr(self.config, name)]
            live = [name for name in changed if name in RELOADABLE]
            restart = [name for name in changed if name not in RELOADABLE]
            if live:
                self.config = self.config._replace(**{name: getattr(fresh, name) for name in live})
                configure_logging(self.config.log_format, self.config.log_level)
            if restart:
                log.warning("daemon.reloaded", applied=live, needs_restart=restart,
                            action="restart pipelined to apply needs_restart")
            else:
                log.info("daemon.reloaded", applied=live, needs_restart=restart)
        self._status.resend()
        self.notifier.send("READY=1")

    def _keep_watching(self, parts: _Parts) -> None:
        """A dead watcher restarted; stage folders created, replaced or unwatchable."""
        watcher, coalescer = parts.watcher, parts.coalescer
        try:
            if watcher.ensure_alive():
                coalescer.request_rescan()
        except OSError as exc:  # e.g. the root vanished meanwhile: the guard says so
            log.warning("watch.restart_failed", error=str(exc), action="retried")
        now = time.monotonic()
        if self._watches_dirty.is_set() or now - self._last_watch_check >= WATCH_CHECK_S:
            self._watches_dirty.clear()
            self._last_watch_check = now
            if watcher.ensure_watches():
                log.info("watch.stages_rewatched")
                coalescer.request_rescan()
        if watcher.problems and now - self._last_unwatched_rescan >= UNWATCHED_RESCAN_S:
            self._last_unwatched_rescan = now  # no event comes from an unwatched folder
            coalescer.request_rescan()

    @staticmethod
    def _folder_problems(parts: _Parts) -> list[str]:
        """`<stage>: <why>` for each stage folder that cannot be read or is not watched."""
        problems = [(stage, f"cannot be read ({why})")
                    for stage, why in parts.apply.stage_problems.items()]
        problems += parts.watcher.problems.items()
        return [f"{stage}: {why}" for stage, why in sorted(problems)]

    def _beat(self, parts: _Parts | None, stories: int = 0) -> None:
        """Write the heartbeat `pipelined status` reads (outside the database). Without
        the parts: READY before they start, with `stories` in sync."""
        if parts is None:
            failing, folder_problems, writer_error, pending = None, [], None, 0
            ready, stat_pass_owed = True, False
        else:
            apply, writer = parts.apply, parts.writer
            failing, folder_problems = writer.failing_since, self._folder_problems(parts)
            writer_error, pending = writer.last_error, writer.pending()
            # READY may have gone out before the apply thread knew (the survey's count).
            ready, stat_pass_owed = self._ready_at is not None, parts.coalescer.rescan_owed()
            stories = apply.stories if apply.in_sync.done() else self._stories_at_ready
        self._heartbeat.beat({
            "pid": os.getpid(),
            "started_unix": self._started_unix,
            "ready": ready,
            "degraded": failing is not None or bool(folder_problems),
            "folder_problems": folder_problems,
            "writer_error": writer_error,
            "failing_for_s": None if failing is None else round(time.monotonic() - failing, 1),
            "pending_batches": pending,
            "stat_pass_owed": stat_pass_owed,
            "log_lines_dropped": dropped_lines(),
            "stories": stories,
        })

    def _shutdown(self, parts: _Parts) -> None:
        """Stop the watcher, settle what is pending, drain the writer (it checkpoints).

        A second SIGTERM or SIGINT skips the final flush: the apply thread stops
        at once and the writer stops retrying.
        """
        apply, writer, coalescer = parts.apply, parts.writer, parts.coalescer
        signals = self._signals
        if signals.name == "SIGINT":
            end_ctrl_c_line()
        if signals.stopping:
            log.info("daemon.stopping", signal=signals.name)
        try:
            parts.watcher.stop()
        except Exception:
            log.exception("watch.stop_failed")
        # Events still in the kernel queue died with the watcher: a last stat pass
        # catches files written just before the signal.
        coalescer.request_rescan()
        coalescer.stop()
        hurried = False
        for thread in (apply, writer):
            if thread is writer:
                writer.close(timeout=0)
            while thread.is_alive():
                if signals.count > 1 and not hurried:
                    hurried = True
                    log.warning("daemon.stopping_now", signal=signals.name)
                    coalescer.stop(hurry=True)
                    writer.abandon()
                thread.join(HEALTH_EVERY_S)
