"""python -m services.trainer — reads SAIM_* settings, serves until SIGTERM."""

from saim.settings import ServiceSettings
from saim.training import TrainingPipeline
from services.common import Infra, main

from .server import TrainerApp, TrainerDeps


def build(settings: ServiceSettings, infra: Infra) -> TrainerDeps:
    pipeline = TrainingPipeline(
        infra.pool,
        infra.registry,
        settings.predictor_config(infra.pool.classes),
        lambda iteration: settings.train_config(settings.seed + iteration),
        promotion_tolerance=settings.promotion_tolerance,
        work_dir=settings.work_dir,
    )
    return TrainerDeps(pipeline=pipeline, registry=infra.registry, publisher=infra.publisher("trainer"))


if __name__ == "__main__":
    main(TrainerApp, build)
