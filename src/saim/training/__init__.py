"""Training: the recipe (losses, augmentation, click simulation, the loop), the virtual user and evaluation, and the
trainer's pipeline (train on the annotated pool, evaluate, gate, publish). Services use these names only."""

from saim.training.pipeline import RunResult, TrainingPipeline

__all__ = ["RunResult", "TrainingPipeline"]
