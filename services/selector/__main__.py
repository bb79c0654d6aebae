"""python -m services.selector — reads SAIM_* settings, serves until SIGTERM."""

from saim.events import SCORING_PARTS
from saim.selection.loop import SelectionLoop
from saim.selection.scoring import LocalScoring, ShardedScoring
from saim.selection.strategies import make_strategy
from services.common import main

from .server import SelectorApp, SelectorDeps


def build(settings, infra) -> SelectorDeps:
    strategy = make_strategy(settings.selection, settings.seed)
    publisher = infra.publisher("selector")
    if settings.scoring == "sharded" and strategy.uses_model:
        scoring = ShardedScoring(infra.store, publisher, strategy, SCORING_PARTS, settings.scoring_resend_s)
    else:
        scoring = LocalScoring(infra.pool, strategy, settings.decode_workers)
    loop = SelectionLoop(
        infra.pool,
        strategy,
        settings.batch_size,
        settings.max_iterations,
        settings.lease_ttl_s,
        overlap=settings.overlap,
        scoring=scoring,
        next_batch=settings.next_batch,
    )
    return SelectorDeps(loop=loop, model=infra.live_model(), publisher=publisher)


if __name__ == "__main__":
    main(SelectorApp, build)
