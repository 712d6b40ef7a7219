"""The chaos suite's harness: a publisher of numbered pushes through ``ServerClient``, and the
tally of what the subscribers received against what the publisher was told.

The tally is in deliveries (one push to one subscriber): a push acknowledged 2xx that one
subscriber of 120 never received counts 1 lost. A lost delivery is signalled when that
subscriber received ``event: gap`` at or after the point where the push should have arrived
(after every message below it): from there on, a client knows that it may have missed
something, which is all the promise asks.
"""

from __future__ import annotations

import threading
import time
import uuid
from bisect import bisect_right
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from flask_impulse.client import ServerClient
from flask_impulse.errors import ServerClientError

#: The ``error`` of a 503 that says the push was refused before anything happened: its
#: details say "nothing was published", so no subscriber may have received it.
NOTHING_PUBLISHED = "Backplane unavailable"
#: The ``error`` of a 503 whose outcome is unknown: it may or may not have been delivered.
OUTCOME_UNKNOWN = "Outcome unknown"
#: The only non-2xx answers a publisher may see in these experiments (docs/protocol.md, section 7).
DOCUMENTED_503 = frozenset({NOTHING_PUBLISHED, OUTCOME_UNKNOWN})


@dataclass(frozen=True)
class Refusal:
    """A push answered non-2xx (status 0: no answer at all), as ServerClient reported it."""

    number: int
    status: int
    error: str
    details: Any

    @property
    def explained(self) -> bool:
        return self.status == 503 and self.error in DOCUMENTED_503

    def describe(self) -> str:
        return f"{self.status} {self.error}"


class Publisher:
    """Pushes payloads 0, 1, 2, ... to ``channel`` one at a time from a thread, at most ``rate``
    per second, each with an idempotency key of its own, until stopped.

    One push at a time, so the acknowledged order is the number order: a subscriber that gets
    a higher number before a lower one saw a reordering.
    """

    def __init__(self, url: str, secret: str, channel: str, rate: float) -> None:
        self.channel = channel
        self.rate = rate
        self.client = ServerClient(url, token=secret, timeout=10)
        self.acked: list[int] = []
        self.refused: list[Refusal] = []
        self.errors: list[BaseException] = []
        #: Pushes answered so far (acknowledged or refused).
        self.answered = 0
        self._run_id = uuid.uuid4().hex[:12]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Publisher:
        self._thread.start()
        return self

    def _push(self, number: int) -> None:
        # A key of our own per number, so that a retry of ServerClient's never delivers twice.
        self.client.push(self.channel, number, idempotency_key=f"chaos-{self._run_id}-{number}")

    def _run(self) -> None:
        interval = 1 / self.rate
        next_at = time.monotonic()
        number = 0
        try:
            while not self._stop.is_set():
                try:
                    self._push(number)
                    self.acked.append(number)
                except ServerClientError as exc:
                    self.refused.append(Refusal(number, exc.status, exc.error, exc.details))
                number += 1
                self.answered = number
                # After a slow answer, go on at once but do not burst to catch up.
                next_at = max(next_at + interval, time.monotonic())
                self._stop.wait(max(next_at - time.monotonic(), 0))
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.errors.append(exc)
        finally:
            self.client.close()

    def next_ack(self, timeout: float = 10) -> None:
        """Return as soon as one more push is acknowledged: the next is about to be sent."""
        seen = len(self.acked)
        deadline = time.monotonic() + timeout
        while len(self.acked) == seen:
            if time.monotonic() > deadline:
                raise AssertionError(f"no push acknowledged within {timeout} s")
            time.sleep(0.001)

    def acked_from(self, number: int) -> bool:
        """Whether a push numbered ``number`` or later was acknowledged."""
        return bool(self.acked) and self.acked[-1] >= number

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(45)  # a push being retried may take ServerClient's whole deadline
        assert not self._thread.is_alive(), "the publisher did not stop within 45 s"


@dataclass(frozen=True)
class Tally:
    """One experiment's figures. ``lost``, ``duplicates`` and ``reordered`` are deliveries."""

    experiment: str
    subscribers: int
    acked: int
    lost: int
    lost_without_gap: int
    duplicates: int
    reordered: int
    refusals: tuple[Refusal, ...]
    #: Deliveries of pushes refused with "nothing was published": each one a false answer.
    refused_yet_delivered: int
    reconnects: int
    #: What went wrong in the run itself (the cluster did not recover, a fault failed).
    problems: tuple[str, ...] = ()
    #: A few subscribers that lost deliveries without a gap, for the reader of the table.
    examples: tuple[str, ...] = ()

    @property
    def unexplained(self) -> list[Refusal]:
        return [refusal for refusal in self.refusals if not refusal.explained]

    def non_2xx(self) -> str:
        counts = Counter(refusal.describe() for refusal in self.refusals)
        return ", ".join(f"{count} x {what}" for what, count in sorted(counts.items())) or "0"


def count(
    experiment: str,
    acked: Sequence[int],
    refusals: Sequence[Refusal],
    received: Sequence[tuple[Sequence[int], Sequence[int]]],
    reconnects: int = 0,
    problems: Sequence[str] = (),
) -> Tally:
    """The tally of an experiment: ``received`` holds, per subscriber, its payloads in arrival
    order and the gap positions (how many payloads had arrived when each gap did)."""
    lost = silent = duplicates = reordered = refused_yet_delivered = 0
    examples = []
    nothing_published = {refusal.number for refusal in refusals if refusal.error == NOTHING_PUBLISHED}
    for index, (payloads, gaps) in enumerate(received):
        seen: set[int] = set()
        highest = -1
        highest_so_far = []  # non-decreasing, for bisect
        for payload in payloads:
            if payload in seen:
                duplicates += 1
            elif payload < highest:
                reordered += 1
            seen.add(payload)
            highest = max(highest, payload)
            highest_so_far.append(highest)
        last_gap = max(gaps, default=-1)
        unsignalled = []
        for number in acked:
            if number not in seen:
                lost += 1
                # Where it should have arrived: right after every payload below it.
                if last_gap < bisect_right(highest_so_far, number):
                    unsignalled.append(number)
        silent += len(unsignalled)
        if unsignalled and len(examples) < 3:
            examples.append(f"subscriber {index}: {len(unsignalled)} missing without a gap, from #{unsignalled[0]}")
        refused_yet_delivered += len(nothing_published & seen)
    return Tally(
        experiment,
        len(received),
        len(acked),
        lost,
        silent,
        duplicates,
        reordered,
        tuple(refusals),
        refused_yet_delivered,
        reconnects,
        tuple(problems),
        tuple(examples),
    )


def table(tallies: Sequence[Tally]) -> str:
    """The results as a Markdown table, one row per experiment."""
    lines = [
        "| experiment | subscribers | acked | lost | lost without gap | duplicates | reordered "
        "| non-2xx | refused yet delivered | reconnects |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for t in tallies:
        lines.append(
            f"| {t.experiment} | {t.subscribers} | {t.acked} | {t.lost} | {t.lost_without_gap} | {t.duplicates} "
            f"| {t.reordered} | {t.non_2xx()} | {t.refused_yet_delivered} | {t.reconnects} |"
        )
    notes = [f"- {t.experiment}: {note}" for t in tallies for note in (*t.problems, *t.examples)]
    return "\n".join([*lines, "", *notes] if notes else lines) + "\n"
