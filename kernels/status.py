"""The position-status kernel: operator transitions between the four visible statuses.


Owns: ``set_status_nb``.
Runs on: the engine thread. Imports: numba, kernels.

Meanings (``enums.PositionStatus``):
  PENDING    announced, not yet filled (quantity 0). From FREE or CLOSED.
             The first accepted trade makes it ACTIVE.
  ACTIVE     open (quantity != 0). Reached by trades; explicitly only to resume a
             SUSPENDED position that holds quantity.
  CLOSED     quantity back to 0. Reached by trades; explicitly from PENDING
             (announcement withdrawn) or from SUSPENDED with quantity 0.
  SUSPENDED  operator hold (halted instrument, legal hold, dispute): every trade
             is rejected with Reason.SUSPENDED; price and FX ticks still revalue
             it, since the holding is still owned. From any visible status.
Anything else is Reason.BAD_STATUS and changes nothing.
"""

from .jit import kernel
from .enums import PF_ACTIVE, PositionStatus, Reason
from .fixedpoint import release_fence_nb


@kernel
def set_status_nb(b, portfolio, slot, status, ts, reason):
    """Apply status changes in row order; return the number accepted."""
    n_ok = 0
    for i in range(slot.shape[0]):
        p = portfolio[i]
        s = slot[i]
        if p < 0 or p >= b.portfolios.shape[0] or (b.portfolios[p].flags & PF_ACTIVE) == 0:
            reason[i] = Reason.UNKNOWN_PORTFOLIO
            continue
        if s < 0 or s >= b.positions.shape[0] or b.positions[s].portfolio != p:
            reason[i] = Reason.UNKNOWN_POSITION
            continue
        pos = b.positions[s]
        cur = pos.status
        to = status[i]
        flat = pos.qty == 0
        if to == PositionStatus.PENDING:
            ok = flat and (cur == PositionStatus.FREE or cur == PositionStatus.CLOSED)
        elif to == PositionStatus.ACTIVE:
            ok = cur == PositionStatus.SUSPENDED and not flat
        elif to == PositionStatus.CLOSED:
            ok = flat and (cur == PositionStatus.PENDING or cur == PositionStatus.SUSPENDED)
        elif to == PositionStatus.SUSPENDED:
            ok = cur != PositionStatus.FREE and cur != PositionStatus.SUSPENDED
        else:
            ok = False
        if not ok:
            reason[i] = Reason.BAD_STATUS
            continue
        pf = b.portfolios[p]
        pf.version += 1
        release_fence_nb()
        pos.status = to
        pos.updated_ns = ts[i]
        pf.seq += 1
        pf.updated_ns = ts[i]
        release_fence_nb()
        pf.version += 1
        reason[i] = Reason.OK
        n_ok += 1
    return n_ok
