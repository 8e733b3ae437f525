"""`Outcome`: the one object every daemon thread reports a fatal failure to."""

from __future__ import annotations

import threading

from pipelined.outcome import Outcome


class TestOutcome:
    def test_the_first_report_wins(self) -> None:
        """The first failure is the run's; later ones are kept, not lost."""
        outcome = Outcome()
        assert outcome.error is None and not outcome.failed
        first, second = RuntimeError("first"), ValueError("second")
        outcome.fail(first)
        outcome.fail(second)
        outcome.fail(first)  # the same one again is not a second failure
        assert outcome.error is first and outcome.failed
        assert outcome.later == [second]

    def test_reports_from_many_threads_keep_one_winner(self) -> None:
        """Threads reporting at once: exactly one error is the outcome, all are kept."""
        outcome = Outcome()
        errors = [RuntimeError(str(n)) for n in range(16)]
        threads = [threading.Thread(target=outcome.fail, args=(e,)) for e in errors]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert outcome.error in errors
        assert sorted(map(str, [outcome.error, *outcome.later]), key=int) == \
            [str(n) for n in range(16)]
