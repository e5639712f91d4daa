"""The book's array id maps against the dicts they replace: random keys, forced hash collisions,
growth, batch and one-key reads, and the rebuild after a checkpoint."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from portfolio_state.daemon.idmaps import HeadIndex, SlotIndex, _Table
from portfolio_state.kernels.idtable import idtable_first_nb


class Clash(str):
    """An id whose hash is one of a handful of values, so that many ids share a hash."""

    def __hash__(self):
        return len(self) % 3


def _fill(ids, pairs, one_by_one):
    index = SlotIndex(ids)
    for (p, pid), s in pairs:
        ids.append(pid)
        if one_by_one:
            index[(p, pid)] = s
    if not one_by_one:
        index.update(pairs)
    return index


@settings(max_examples=60, deadline=None)
@given(keys=st.lists(st.tuples(st.integers(0, 5), st.text("abc", min_size=0, max_size=6)), max_size=300, unique=True),
       clash=st.booleans(), one_by_one=st.booleans())
def test_slot_index_reads_like_a_dict(keys, clash, one_by_one):
    mk = Clash if clash else str
    keys = [(p, mk(pid)) for p, pid in keys]
    ids: list[str] = []
    pairs = [(k, s) for s, k in enumerate(keys)]
    index = _fill(ids, pairs, one_by_one)
    ref = dict(pairs)
    assert len(index) == len(ref)
    assert dict(index.items()) == ref and index.values() == sorted(ref.values())
    probes = keys + [(p + 1, pid) for p, pid in keys] + [(0, mk("zz")), (-1, mk("a"))]
    for k in probes:
        assert index.get(k, -1) == ref.get(k, -1)
        assert (k in index) == (k in ref)
    ps, pids = [p for p, _ in probes], [pid for _, pid in probes]
    # the batch path (many keys) and the key-by-key path (a few) give the dict's answers
    assert index.find(ps, pids).tolist() == [ref.get(k, -1) for k in probes]
    assert index.find(ps[:3], pids[:3]).tolist() == [ref.get(k, -1) for k in probes[:3]]


def test_slot_index_grows_and_rebuilds_from_ids():
    rng = np.random.default_rng(7)
    n = 20_000
    owners = rng.integers(0, 50, n).astype(np.int32)
    ids = [f"pos{i}" if i % 11 else "" for i in range(n)]  # "": a slot allocated without an id
    index = SlotIndex(ids)  # starts at 1,024 cells: grows many times
    index.update(((int(owners[s]), ids[s]), s) for s in range(n) if ids[s])
    rebuilt = SlotIndex(ids)
    rebuilt.rebuild(owners)
    ref = {(int(owners[s]), ids[s]): s for s in range(n) if ids[s]}
    for ix in (index, rebuilt):
        assert len(ix) == len(ref) and dict(ix.items()) == ref
        assert 4 * ix.t.count <= 3 * len(ix.t.vals)
    q = rng.integers(0, n, 5_000)
    got = rebuilt.find(owners[q].tolist(), [ids[s] or "x" for s in q.tolist()])
    assert got.tolist() == [s if ids[s] else -1 for s in q.tolist()]


def test_a_key_is_added_once():
    ids = ["a"]
    index = SlotIndex(ids)
    index[(0, "a")] = 0
    try:
        index[(0, "a")] = 1
    except ValueError:
        pass
    else:
        raise AssertionError("a second slot for one key was accepted")
    assert index[(0, "a")] == 0 and len(index) == 1


def test_head_index_is_setdefault_row_by_row():
    rng = np.random.default_rng(3)
    heads = HeadIndex()
    ref: dict = {}
    base = 0
    for _ in range(30):
        n = int(rng.integers(1, 400))
        p = rng.integers(0, 40, n).astype(np.int32)
        k = rng.integers(0, 60, n).astype(np.int32)
        cand = np.arange(base, base + n, dtype=np.int32)
        got = heads.setdefault(p, k, cand)
        want = [ref.setdefault((int(a), int(b)), int(c)) for a, b, c in zip(p, k, cand)]
        assert got.tolist() == want
        base += n
    assert len(heads) == len(ref) and dict(heads.items()) == ref
    assert heads[(int(p[0]), int(k[0]))] == ref[(int(p[0]), int(k[0]))] and heads.get((99, 99)) is None
    again = HeadIndex()
    again.rebuild(*(np.array(c) for c in zip(*[(a, b, s) for (a, b), s in ref.items()])))
    assert dict(again.items()) == ref


def test_python_and_kernel_pick_the_same_first_cell():
    t = _Table(5_000)
    rng = np.random.default_rng(1)
    for key in rng.integers(-(1 << 63), (1 << 63) - 1, 200, dtype=np.int64).tolist() + [0, -1, 1 << 40]:
        assert t.first(key) == idtable_first_nb(key, t.shift)
