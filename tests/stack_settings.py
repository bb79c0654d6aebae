"""The embedded stack's settings for every test tier that starts one (integration, chaos, browser): one home.

A tier chooses its training budget, its batch and its number of iterations; everything else is the same small,
nearly untrained model on a CPU."""


def stack_settings(
    *, epochs: int, steps_per_epoch: int, batch_size: int, iterations: int, **more: str
) -> dict[str, str]:
    return {
        "SAIM_TRAIN__EPOCHS": str(epochs),
        "SAIM_TRAIN__STEPS_PER_EPOCH": str(steps_per_epoch),
        "SAIM_TRAIN__BATCH_SIZE": "4",
        "SAIM_MODEL__ENCODER": "resnet18",
        "SAIM_MODEL__IMAGE_SIZE": "64",
        # nearly untrained models ignore every click: refinement would run its full budget on each
        "SAIM_MODEL__REFINE_STEPS": "0",
        "SAIM_MAX_SLICES": "3",
        "SAIM_BATCH_SIZE": str(batch_size),
        "SAIM_MAX_ITERATIONS": str(iterations),
        "SAIM_PROMOTION_TOLERANCE": "1.0",  # tiny models have noisy val mIoU: promote every version
        **more,
    }
