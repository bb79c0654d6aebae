"""python -m services.scorer — reads SAIM_* settings, serves until SIGTERM."""

from services.common import main

from .server import ScorerApp, ScorerDeps


def build(settings, infra) -> ScorerDeps:
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
