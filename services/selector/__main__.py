"""python -m services.selector — reads SAIM_* settings, serves until SIGTERM."""

from saim.events import SCORING_PARTS
from saim.rpc.service import failure_reporter
from saim.selection import LocalScoring, Scoring, SelectionLoop, ShardedScoring, make_strategy
from saim.settings import ServiceSettings
from services.common import Infra, main

from .server import SelectorApp, SelectorDeps


def build(settings: ServiceSettings, infra: Infra) -> SelectorDeps:
    strategy = make_strategy(settings.selection, settings.seed)
    publisher = infra.publisher("selector")
    scoring: Scoring
    if settings.scoring == "sharded" and strategy.uses_model:
        scoring = ShardedScoring(infra.store, publisher, strategy, SCORING_PARTS, settings.scoring_resend_s)
    else:
        scoring = LocalScoring(infra.pool, strategy, settings.decode_workers, failure_reporter("selector", publisher))
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
