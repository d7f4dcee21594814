"""`seqrep.reproduce._Turns`: the order and the moments in which a table's studies start."""

from __future__ import annotations

import io
import threading
import time

from seqrep import progress
from seqrep.reproduce import _Turns


class FakeView:
    def __init__(self):
        self.trained: set[str] = set()

    def training(self, name: str) -> bool:
        return name in self.trained


def start(turns: _Turns, name: str, stop: threading.Event, started: list) -> threading.Thread:
    thread = threading.Thread(target=lambda: started.append((name, turns.wait(name, stop))), daemon=True)
    thread.start()
    return thread


def settle(seconds: float = 0.35) -> None:
    time.sleep(seconds)  # the gate looks every 0.1 s


def test_the_first_studies_fill_the_slots_and_each_later_one_waits_until_all_before_it_train():
    view, stop, started = FakeView(), threading.Event(), []
    turns = _Turns(["a", "b", "c", "d"], view, slots=2)
    threads = [start(turns, name, stop, started) for name in ("d", "c", "b", "a")]  # asked in reverse
    settle()
    assert started == [("a", True), ("b", True)]  # plan order, as many as there are slots
    view.trained.add("a")
    settle()
    assert [n for n, _ in started] == ["a", "b"]  # b has not trained: c waits
    view.trained.add("b")
    settle()
    assert [n for n, _ in started] == ["a", "b", "c"]
    turns.end("c")  # c ended (a failure, say) before it trained: d need not wait for it
    settle()
    assert started == [("a", True), ("b", True), ("c", True), ("d", True)]
    for thread in threads:
        thread.join(1)


def test_a_stop_releases_the_waiting_studies_without_starting_them():
    view, stop, started = FakeView(), threading.Event(), []
    turns = _Turns(["a", "b"], view, slots=1)
    threads = [start(turns, name, stop, started) for name in ("a", "b")]
    settle()
    stop.set()
    for thread in threads:
        thread.join(1)
    assert sorted(started) == [("a", True), ("b", False)]


def test_the_view_knows_a_study_trains_once_one_of_its_trials_ran():
    view = progress.View(2, interactive=False, stream=io.StringIO())
    assert not view.training("s")
    view.start_study("s", "valid_loss", "min")
    view.update(progress.Counts(pending=3), "s")
    assert not view.training("s")
    view.update(progress.Counts(running=1, pending=2), "s")
    assert view.training("s")
    view.end_study("s")
    assert not view.training("s")


def test_a_study_shares_the_slots_with_the_studies_not_ended():
    view = FakeView()
    turns = _Turns(["a", "b", "c"], view, slots=5)
    assert [turns.share(n) for n in ("a", "b", "c", "other")] == [2, 2, 2, None]  # 5 / 3, rounded up
    turns.end("a")
    assert turns.share("b") == 3  # 5 / 2: no slot idles while b and c have trials
    turns.end("b")
    assert turns.share("c") == 5  # the last study takes every slot
    turns.end("c")
    assert turns.share("c") == 5
    assert [_Turns(list("abcd"), view, slots=2).share("a"), _Turns(["a"], view, slots=2).share("a")] == [1, 2]
