"""python -m services.selector — reads SAIM_* settings, serves until SIGTERM."""

from saim.batches import SelectionLoop
from saim.selection import make_strategy
from services.common import main

from .server import SelectorApp, SelectorDeps


def build(settings, infra) -> SelectorDeps:
    loop = SelectionLoop(
        infra.pool,
        make_strategy(settings.selection, settings.seed),
        settings.batch_size,
        settings.max_iterations,
        settings.lease_ttl_s,
        overlap=settings.overlap,
        decode_workers=settings.decode_workers,
    )
    return SelectorDeps(loop=loop, model=infra.live_model(), publisher=infra.publisher("selector"))


if __name__ == "__main__":
    main(SelectorApp, build)
