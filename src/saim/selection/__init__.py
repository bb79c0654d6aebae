"""Selection: scoring the unannotated pool (locally or sharded over scorer workers), the strategies that score, and
the selector's loop (batches, leases, the state it keeps in object storage), and the selectors' leader lease.
Services use these names only."""

from saim.selection.leader import Leader, LeaderLease
from saim.selection.loop import SelectionLoop, stored_batches
from saim.selection.scoring import (
    LocalScoring,
    Scoring,
    ShardedScoring,
    part_document,
    part_key,
    score_pool,
    scores_key,
    stored_part,
)
from saim.selection.strategies import SelectionStrategy, make_strategy, top_n

__all__ = [
    "Leader",
    "LeaderLease",
    "LocalScoring",
    "SelectionLoop",
    "Scoring",
    "SelectionStrategy",
    "ShardedScoring",
    "make_strategy",
    "part_document",
    "part_key",
    "score_pool",
    "scores_key",
    "stored_batches",
    "stored_part",
    "top_n",
]
