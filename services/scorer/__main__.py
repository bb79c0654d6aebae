"""python -m services.scorer — reads SAIM_* settings, serves until SIGTERM."""

from saim.settings import ServiceSettings
from services.common import Infra, main

from .server import ScorerApp, ScorerDeps


def build(settings: ServiceSettings, infra: Infra) -> ScorerDeps:
    return ScorerDeps(
        pool=infra.pool,
        model=infra.live_model(),
        publisher=infra.publisher("scorer"),
        seed=settings.seed,
        decode_workers=settings.decode_workers,
        name=settings.instance_id,
    )


if __name__ == "__main__":
    main(ScorerApp, build)
