"""Browser tier: the embedded stack with the HTTP gateway, and Debian's chromium driven by Playwright.

Chromium comes from apt (`make browser-tools`; Playwright's own browser download is not available here) and renders
WebGL2 in software (SwiftShader), which Niivue needs. Each test gets its own browser context (its own session
storage), like a person's browser tab.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from saim.data import phantom
from saim.data.dataset import NnUNetDataset
from saim.rpc.tokens import ADMIN
from saim.stack.local import LocalStack
from saim.v1 import selector_pb2, selector_pb2_grpc
from tests.stack_settings import stack_settings
from tests.waiting import poll

ROOT = Path(__file__).resolve().parents[2]
SHOTS = Path(os.environ.get("SAIM_SCREENSHOTS", ROOT / "out" / "screenshots"))
CHROMIUM_ARGS = ["--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist"]

# Short training (the page is what is tested, but the screenshots should show a model that has learnt something);
# one batch of two series. The model configuration is otherwise the default one: box prompts on, so the page's box
# is drawn on what a deployment trains.
SETTINGS = stack_settings(epochs=2, steps_per_epoch=25, batch_size=2, iterations=1)


def chromium_path() -> str:
    path = os.environ.get("SAIM_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("chromium is not installed: `make browser-tools` installs Debian's chromium (apt)")
    return path


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """pytest-playwright's launch arguments: Debian's chromium, software WebGL2."""
    return {**browser_type_launch_args, "executable_path": chromium_path(), "args": CHROMIUM_ARGS}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    return {**browser_context_args, "viewport": {"width": 1280, "height": 800}}


@dataclass
class WebStack:
    stack: LocalStack
    dataset: NnUNetDataset
    tokens: dict[str, str]

    @property
    def url(self) -> str:
        return self.stack.url


@pytest.fixture(scope="package")
def web(tmp_path_factory):
    if not (ROOT / "web" / "dist" / "index.html").is_file():
        pytest.fail("the web app is not built: `make web` (npm ci && npm run build in web/)")
    root = tmp_path_factory.mktemp("saim-web")
    # LPS, as DICOM-derived scans are: the page must reorient for display and map screen positions back to voxels
    lps = np.diag([-1.5, -1.5, 5.0, 1.0])
    ds = NnUNetDataset(phantom.generate(root / "dataset", num_series=8, depth=6, size=96, seed=0, affine=lps))
    stack = LocalStack(root / "stack", settings=dict(SETTINGS), threads={"trainer": 2, "selector": 1, "annotator": 1})
    try:
        stack.start_broker()
        stack.start_s3()
        stack.import_dataset(ds.root, seed=0)
        stack.start_services()
        stack.wait_serving(timeout_s=300)
        stack.start_gateway()
        selector = selector_pb2_grpc.SelectorServiceStub(stack.channel("selector"))
        poll(lambda: selector.GetStatus(selector_pb2.GetStatusRequest(), timeout=10).batch, 300, "the first batch")
        tokens = {name: stack.issue_token(name) for name in ("alice", "bob", "mallory")}
        tokens["admin"] = stack.issue_token("operator", ADMIN)
        SHOTS.mkdir(parents=True, exist_ok=True)
        yield WebStack(stack, ds, tokens)
    finally:
        stack.stop()
