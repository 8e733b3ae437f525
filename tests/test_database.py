"""The database contract: schema, migrations at startup, atomic state and rows."""

from __future__ import annotations

import apsw
from conftest import DaemonProcess, Stories

from pipelined.errors import EXIT_NEEDS_A_PERSON
from pipelined.state import PipelineState


class TestSchema:
    def test_pipeline_items_columns(self, stories: Stories, daemon: DaemonProcess) -> None:
        """pipeline_items has exactly the columns docs/design.md names, in order."""
        daemon.start()
        cols = [(r[1], r[2], r[3], r[5]) for r in daemon.query("PRAGMA table_info(pipeline_items)")]
        assert cols == [
            ("id", "TEXT", 0, 1), ("name", "TEXT", 0, 0), ("stage", "TEXT", 1, 0),
            ("agent", "TEXT", 0, 0), ("retry_count", "INTEGER", 0, 0),
            ("blocked", "INTEGER", 0, 0), ("depends_on", "TEXT", 0, 0),
            ("content", "TEXT", 0, 0), ("created_at", "TEXT", 0, 0),
            ("updated_at", "TEXT", 0, 0)]
        assert daemon.query("PRAGMA journal_mode") == [("wal",)]

    @staticmethod
    def start_after(daemon: DaemonProcess, tamper_sql: str) -> str:
        """Run once, change the migration record, start again: the one line it printed,
        and exit 78, as a restart cannot help (RestartPreventExitStatus= in the units)."""
        daemon.start()
        assert daemon.stop() == 0
        conn = apsw.Connection(str(daemon.db))
        conn.execute(tamper_sql)
        conn.close()
        assert daemon.spawn().wait(30) == EXIT_NEEDS_A_PERSON
        return daemon.log_tail(1)

    def test_unknown_migration_is_refused(self, stories: Stories, daemon: DaemonProcess) -> None:
        """A database with a migration this code does not know: one line."""
        line = self.start_after(
            daemon, "INSERT INTO schema_migrations VALUES ('9999_future.sql', 'x', 'now')")
        assert line == (f"Error: database {daemon.db}: it has migration 9999_future.sql that "
                        "this pipelined does not know (written by a newer version); "
                        "upgrade pipelined")

    def test_changed_migration_is_refused(self, stories: Stories, daemon: DaemonProcess) -> None:
        """A recorded checksum that differs from the shipped file is refused."""
        line = self.start_after(daemon, "UPDATE schema_migrations SET checksum = 'tampered'")
        assert line == (f"Error: database {daemon.db}: migration 0001_initial.sql changed "
                        "since it was applied")


class TestStateAndRows:
    def test_persisted_state_equals_rows(self, stories: Stories, daemon: DaemonProcess) -> None:
        """The pycrdt updates in the database rebuild a state equal to the rows."""
        stories.write("1_backlog", "1_story_a", name="A", retry_count=2, depends_on=[5])
        stories.write("2_current", "2_story_b", name="B", blocked=True)
        daemon.start()
        stories.move("1_story_a", "1_backlog", "4_merge")
        stories.write("2_current", "2_story_b", name="B2", blocked=False)
        daemon.wait_row("2_story_b", lambda r: r["name"] == "B2")
        daemon.wait_row("1_story_a", lambda r: r["stage"] == "4_merge")
        assert daemon.stop() == 0
        state = PipelineState(client_id=7)
        state.load(bytes(r[0]) for r in daemon.query("SELECT data FROM crdt_updates ORDER BY seq"))
        assert state.to_dict() == {
            "1_story_a": {"stage": "4_merge", "name": "A", "agent": None, "retry_count": 0,
                          "blocked": False, "depends_on": "[5]"},
            "2_story_b": {"stage": "2_current", "name": "B2", "agent": None, "retry_count": 0,
                          "blocked": False, "depends_on": None},
        }

    def test_client_id_is_reused(self, stories: Stories, daemon: DaemonProcess) -> None:
        """The daemon's pycrdt client id is persisted and reused across restarts."""
        stories.write("1_backlog", "1_story_a")
        daemon.start()
        assert daemon.stop() == 0
        client_id = daemon.query("SELECT value FROM daemon_meta WHERE key='client_id'")
        stories.write("1_backlog", "2_story_b")
        daemon.start()
        assert daemon.stop() == 0
        assert daemon.query("SELECT value FROM daemon_meta WHERE key='client_id'") == client_id
        state = PipelineState(client_id=7)
        state.load(bytes(r[0]) for r in daemon.query("SELECT data FROM crdt_updates ORDER BY seq"))
        assert len(state.doc.get_state()) < 16  # one client in the state vector

    def test_high_water_mark_survives_delete(self, stories: Stories,
                                             daemon: DaemonProcess) -> None:
        """The highest story number ever seen stays after that story is deleted."""
        stories.write("1_backlog", "41_story_top")
        daemon.start()
        daemon.wait_row("41_story_top")
        stories.path("1_backlog", "41_story_top").unlink()
        daemon.wait_gone("41_story_top")
        assert daemon.query("SELECT high_water FROM story_numbers") == [(41,)]
