"""DirtySet and PortfolioMarks list exactly the marked slots, whatever the order of marks, listings and clears."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from portfolio_state.daemon.marks import DirtySet, PortfolioMarks


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.tuples(st.just("mark"), st.lists(st.integers(0, 63), max_size=12)),
                          st.tuples(st.just("clear"), st.lists(st.integers(0, 63), max_size=12)),
                          st.tuples(st.just("slots"), st.integers(0, 70)),
                          st.tuples(st.just("clear_all"), st.none())), max_size=40))
def test_lists_what_a_plain_set_holds(ops):
    d, model = DirtySet(64), set()
    for op, arg in ops:
        if op == "mark":
            d.mark(np.array(arg, np.int64))
            model |= set(arg)
        elif op == "clear":
            d.clear(np.array(arg, np.int64))
            model -= set(arg)
        elif op == "clear_all":
            d.clear_all()
            model = set()
        else:
            assert d.slots(arg).tolist() == sorted(s for s in model if s < arg)
        assert d.slots().tolist() == sorted(model)


def test_many_marks_switch_to_a_scan_and_back():
    d = DirtySet(160)
    d.mark(np.arange(0, 160, 2))  # 80 marks > 160 / 16: the log is dropped
    assert d._log is None
    assert d.slots().tolist() == list(range(0, 160, 2))
    assert d._log is not None  # a full listing makes the log complete again
    d.clear(np.arange(0, 160, 2))
    d.mark(np.array([5]))
    assert d.slots().tolist() == [5]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.tuples(st.just("mark"), st.lists(st.integers(0, 47), max_size=12)),
                          st.tuples(st.just("take"), st.lists(st.integers(0, 5), max_size=4, unique=True)),
                          st.tuples(st.just("clear_all"), st.none())), max_size=40))
def test_portfolio_marks_hand_over_what_a_dict_of_sets_holds(ops):
    owner = (np.arange(48) % 6).astype(np.int32)  # slot s belongs to portfolio s % 6
    pm, model = PortfolioMarks(), {p: set() for p in range(6)}
    pm.fit(48, 6)
    for op, arg in ops:
        if op == "mark":
            new = pm.mark(np.array(arg, np.int64), owner)
            assert new == len({s for s in arg if s not in model[s % 6]})
            for s in arg:
                model[s % 6].add(s)
        elif op == "take":
            assert pm.take(np.array(arg, np.int64)).tolist() == sorted(s for p in arg for s in model[p])
            for p in arg:
                model[p] = set()
        else:
            pm.clear_all()
            model = {p: set() for p in range(6)}
        assert pm.portfolios().tolist() == [p for p in range(6) if model[p]]
        assert pm.count.tolist() == [len(model[p]) for p in range(6)]


def test_portfolio_marks_follow_growth():
    pm = PortfolioMarks(4, 2)
    pm.mark(np.array([1, 3]), np.array([0, 1, 0, 1], np.int32))
    pm.fit(10, 5)
    owner = np.array([0, 1, 0, 1, 4, 4, 4, 4, 4, 9], np.int32)
    pm.mark(np.array([7, 1]), owner)
    assert pm.portfolios().tolist() == [1, 4]
    assert pm.take(np.array([4])).tolist() == [7] and pm.take(np.array([1, 0])).tolist() == [1, 3]
    assert not len(pm.portfolios())
