"""Track IDs from the recurrent queries of a SparseBEV++ stream (the Sparse4Dv3 instance-bank idea).

A recurrent model carries its K best queries from one frame to the next (``propagated_index``
of the runtime seam: the rows of this frame the next state carries, best first), so a query
that follows an object keeps following it. :class:`TrackIdBank` turns that into identities:

* every row of a frame's ``Q + K`` queries has an ID or none (-1); the ``Q`` learned queries
  start without one, the ``K`` propagated rows inherit the IDs of the rows they came from when
  the propagated queries were used (``propagation_used``; otherwise they are padding, no ID);
* a detection (``query_index``: the row it was decoded from) takes its row's ID; a row without
  one gets a new ID when a detection of it survives the score threshold; the top-k decoding
  may give one row several detections (other classes of the same box): they share its ID, as
  in Sparse4Dv3 (one query, one object);
* IDs count up from 1 and are never reused in a stream, not even after a reset;
* a reset follows the recurrent memory's rule (``StreamingOptions.recurrent_reset``):
  ``'clear'`` forgets the carried IDs with the state, ``'official'`` keeps them with the state
  (then only the time gate, through ``propagation_used``, decides whether they continue).

The bank reads only the runtime seam's outputs, so it works with any ``RecurrentRuntime``.
"""
from __future__ import annotations

import numpy as np

from .options import RecurrentReset

NO_ID = -1


class TrackIdBank:
    """The identities of one stream's carried queries.

    Args:
        rule: what :meth:`reset` does, the ``RecurrentMemory``'s rule ('clear' or 'official').
    """

    def __init__(self, rule: RecurrentReset = 'clear') -> None:
        self.rule = rule
        self.next_id = 1
        self.carried: np.ndarray | None = None     # [K] int64: ID of each row of the state, or NO_ID

    def assign(self, query_index: np.ndarray, num_learned: int, propagated_index: np.ndarray,
               propagation_used: bool) -> np.ndarray:
        """IDs of one frame's detections.

        Args:
            query_index: ``[D]`` the query row of each detection (``decode_predictions``; new
                IDs are numbered in this order, descending score).
            num_learned: Q, the learned queries (rows ``:Q``); rows ``Q:`` are the K propagated ones.
            propagated_index: ``[K]`` rows of this frame the next state carries.
            propagation_used: this frame's propagated rows continue the previous frame's.
        Returns:
            ``[D]`` int64 track IDs (>= 1; equal for detections of one row).
        """
        query_index = np.asarray(query_index, np.int64).reshape(-1)
        propagated_index = np.asarray(propagated_index, np.int64).reshape(-1)
        rows = np.full(num_learned + len(propagated_index), NO_ID, dtype=np.int64)   # [Q+K]
        if propagation_used and self.carried is not None:
            rows[num_learned:] = self.carried
        ids = np.empty(len(query_index), dtype=np.int64)
        for d, row in enumerate(query_index.tolist()):
            if rows[row] == NO_ID:
                rows[row] = self._new_id()
            ids[d] = rows[row]
        self.carried = rows[propagated_index]
        return ids

    def reset(self) -> None:
        """A reset of the stream: forget the carried IDs ('clear') or keep them ('official');
        the counter goes on either way, so no ID is ever given twice."""
        if self.rule == 'clear':
            self.carried = None

    def _new_id(self) -> int:
        new = self.next_id
        self.next_id += 1
        return new
