import os

import pytest
import torch

# Two cores are shared by every process a test starts: keep the test process itself to one torch thread.
torch.set_num_threads(int(os.environ.get("SAIM_TEST_THREADS", "1")))


@pytest.fixture
def tiny_model_config():
    from saim.model.config import ModelConfig

    return ModelConfig(classes=("a", "b"), image_size=32, encoder="resnet18")
