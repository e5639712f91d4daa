"""The idempotency window keeps the newest `size` keys, forgets the oldest first, and keeps its
order through single puts, bulk puts (replay, checkpoint load) and re-puts of known keys."""
from hypothesis import given, settings
from hypothesis import strategies as st

from portfolio_state.daemon.idempotency import IdempotencyWindow


def test_oldest_keys_go_first_and_a_re_put_keeps_its_place():
    w = IdempotencyWindow(3)
    for k in "abc":
        w.put(k, 1, k.upper())
    w.put("a", 2, "A2")  # known key: value replaced, place kept
    w.put("d", 1, "D")   # evicts the oldest: a
    assert [k for k, _ in w.items()] == ["b", "c", "d"] and w.get("a") is None
    w.put_many(["e", "c"], [(1, "E"), (3, "C3")])  # c is known: replaced in place; e new; b evicted
    assert [k for k, _ in w.items()] == ["c", "d", "e"] and w.get("c") == (3, "C3") and len(w) == 3


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 6), st.lists(st.tuples(st.booleans(), st.lists(st.sampled_from("abcdefghij"), min_size=1,
                                                                         max_size=5)), max_size=30))
def test_matches_an_ordered_dict_model(size, ops):
    from collections import OrderedDict

    w, model, n = IdempotencyWindow(size), OrderedDict(), 0
    for bulk, keys in ops:
        vals = []
        for k in keys:
            n += 1
            vals.append((n, k))
        if bulk:
            w.put_many(list(keys), vals)
        else:
            for k, v in zip(keys, vals):
                w.put(k, *v)
        for k, v in zip(keys, vals):
            model[k] = v
            while len(model) > size:
                model.popitem(last=False)
        assert list(w.items()) == list(model.items())


def test_a_long_run_through_a_small_window_keeps_its_order():
    """Many times the window's size, in single and bulk puts with re-puts of live keys: the order
    stays the model's through thousands of trims."""
    import random
    from collections import OrderedDict

    rng = random.Random(11)
    w, model, n = IdempotencyWindow(50), OrderedDict(), 0
    for step in range(3_000):
        live = list(model)
        keys = [rng.choice(live) if live and rng.random() < 0.1 else f"k{n + j}" for j in range(rng.randint(1, 12))]
        n += len(keys)
        vals = [(step, k) for k in keys]
        if step % 2:
            w.put_many(keys, vals)
        else:
            for k, v in zip(keys, vals):
                w.put(k, *v)
        for k, v in zip(keys, vals):
            model[k] = v
            while len(model) > 50:
                model.popitem(last=False)
        if step % 100 == 0 or step > 2_990:
            assert list(w.items()) == list(model.items())
    assert len(w._order) == len(w) == 50
