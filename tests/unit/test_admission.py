"""The tier's admission ledger (pipelines.admission): room, tickets, lost requests, several processes."""

from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path

import pytest

from pipelines import admission, shared_memory, spec

LIMIT = 8


@pytest.fixture()
def ledger(tmp_path: Path) -> admission.Ledger:
    return admission.Ledger(tmp_path / "tier")


def test_admits_what_fits_and_refuses_the_rest_after_the_wait(ledger: admission.Ledger) -> None:
    tickets = ledger.admit([4, 2], LIMIT, wait_s=0)
    assert all(tickets) and len(set(tickets)) == 2
    assert ledger.images == 6
    late = ledger.admit([1, 2, 1], LIMIT, wait_s=0.05)  # room for 2: the leading run that fits
    assert late[0] and late[1:] == [0, 0]
    assert ledger.images == 7
    ledger.answered([tickets[0], late[0]])
    assert ledger.images == 2


def test_a_waiting_batch_goes_on_as_soon_as_room_is_freed(ledger: admission.Ledger) -> None:
    held = ledger.admit([LIMIT], LIMIT, wait_s=0)
    timer = threading.Timer(0.2, ledger.answered, (held,))
    timer.start()
    waited = ledger.admit([3], LIMIT, wait_s=None)  # a DELAY tier waits as long as it takes
    timer.join()
    assert waited[0] and ledger.images == 3


def test_an_answer_for_an_unknown_or_repeated_ticket_changes_nothing(ledger: admission.Ledger) -> None:
    (ticket,) = ledger.admit([2], LIMIT, wait_s=0)
    ledger.answered([ticket, ticket, 0, ticket + 12345])
    assert ledger.images == 0


def test_a_ticket_never_answered_is_taken_back(ledger: admission.Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spec, "TICKET_LOST_AFTER_S", 0.05)
    (lost,) = ledger.admit([LIMIT], LIMIT, wait_s=0)
    assert ledger.admit([1], LIMIT, wait_s=0) == [0]
    time.sleep(0.1)
    (ticket,) = ledger.admit([1], LIMIT, wait_s=0)
    assert ticket and ledger.lost == 1 and ledger.images == 1
    ledger.answered([lost])  # the lost request's late answer does not free room twice
    assert ledger.images == 1


def test_tickets_wrap_around_the_slots(ledger: admission.Ledger) -> None:
    for _ in range(admission.SLOTS + 10):
        ledger.answered(ledger.admit([1], LIMIT, wait_s=0))
    assert ledger.images == 0 and ledger.lost == 0


def _worker(path: Path, rounds: int) -> None:
    ledger = admission.Ledger(path)
    for _ in range(rounds):
        tickets = ledger.admit([1, 2], LIMIT, wait_s=None)
        assert ledger.images <= LIMIT
        ledger.answered(tickets)


def test_processes_share_one_ledger(tmp_path: Path) -> None:
    """Preprocess and postprocess instances are separate stub processes: counts stay exact under the lock."""
    path = tmp_path / "tier"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_worker, args=(path, 300)) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert [w.exitcode for w in workers] == [0, 0, 0]
    ledger = admission.Ledger(path)
    assert ledger.images == 0 and ledger.lost == 0


def test_a_server_has_one_ledger_per_tier(tmp_path: Path) -> None:
    here = admission.path_for("batch", server_pid=1)
    assert here != admission.path_for("streaming", server_pid=1)
    assert here.name.startswith(shared_memory.PREFIX)


def test_every_tier_admits_at_least_its_largest_batch() -> None:
    """A preprocess execution holds at most max_batch_size images; a smaller limit would never admit it."""
    for tier in spec.TIERS:
        for variant in spec.VARIANTS:
            b = tier.batching(variant)
            assert b.max_in_flight >= 2 * b.max_batch_size, (tier.name, variant)
