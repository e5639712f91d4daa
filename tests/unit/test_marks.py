"""DirtySet lists exactly the marked slots, whether it reads its log of marks or scans its bitmap."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from portfolio_state.daemon.marks import DirtySet


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
