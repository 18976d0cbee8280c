"""The Dagster UI in a real browser (headless Debian chromium driven by Playwright), on the
stack's webserver once the automation has scored a shift: the asset graph (per group) shows
the project's assets, ``released_model``'s page its materialization and release-history plot,
and the scored shift's ``batch_scores`` partition its units and score histogram. Screenshots
are kept under ``$ARTIFACTS_DIR/ui`` (default ``vqganodip_pipeline_tests/artifacts/ui``,
git-ignored)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from vqganodip_pipeline.demo import PRODUCTION_BATCH
from vqganodip_pipeline.stack import Stack
from vqganodip_pipeline_tests.stack.helpers import latest, skip_or_fail

pytestmark = pytest.mark.slow
ARTIFACTS = Path(
    os.environ.get("ARTIFACTS_DIR", Path(__file__).resolve().parents[1] / "artifacts")
).joinpath("ui")
TIMEOUT_MS = 60_000


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def page(stack: Stack, automated: dict[str, Any]) -> Iterator[Any]:
    """One headless chromium page on the stack's webserver, after the automation ran."""
    executable = chromium_path()
    if executable is None:
        skip_or_fail("chromium not installed (apt-get install -y chromium)")
    try:
        import playwright.sync_api as sync_api
    except ImportError:
        skip_or_fail("playwright not installed (pip install -e '.[stack]')")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable,
            # root in CI: chromium's sandbox needs user namespaces it may not have
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
            timeout=TIMEOUT_MS,
        )
        try:
            context = browser.new_context(viewport={"width": 1600, "height": 1000})
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            # a first visit shows a "Join the Dagster community" dialog over every page; once
            # skipped, the browser context remembers
            page.goto(f"{stack.webserver_url}/overview", wait_until="domcontentloaded")
            skip = page.get_by_role("button", name="Skip")
            try:
                skip.wait_for(state="visible", timeout=15_000)
                skip.click()
            except sync_api.TimeoutError:
                pass  # this build shows no such dialog
            yield page
        finally:
            browser.close()


def open_page(page: Any, stack: Stack, path: str) -> None:
    page.goto(f"{stack.webserver_url}{path}", wait_until="domcontentloaded")


def shoot(page: Any, name: str) -> Path:
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000, f"{path} looks empty"
    return path


def shows_plot(page: Any, metadata_key: str) -> None:
    """The metadata entry ``metadata_key`` (a Markdown PNG) opens and its image decodes."""
    row = page.locator("tr", has_text=metadata_key).first
    row.wait_for(state="visible")
    row.get_by_text("[Show Markdown]").click()
    image = page.get_by_role("dialog").locator('img[src^="data:image/png"]').first
    image.wait_for(state="visible")
    width = image.evaluate("img => img.complete ? img.naturalWidth : 0")
    assert width > 100, f"{metadata_key}: the plot did not decode (width {width})"


def metadata_value(instance: dg.DagsterInstance, asset: str, name: str) -> str:
    record = latest(instance, asset, PRODUCTION_BATCH if asset.startswith("batch_") else None)
    assert record is not None, f"{asset} was never materialized"
    return str(record.asset_materialization.metadata[name].value)


GROUP = "/locations/__repository__@vqganodip_pipeline/asset-groups/{}"


@pytest.mark.parametrize(
    "group, names",
    [
        ("model", ("dataset_split", "vqgan_checkpoint", "weighting_mask", "training_metrics",
                   "released_model")),
        ("production", ("batch_images", "batch_reconstructions", "batch_metrics",
                        "batch_scores")),
    ],
)  # fmt: skip
def test_the_asset_graph_shows_the_projects_assets(
    page: Any, stack: Stack, group: str, names: tuple[str, ...]
) -> None:
    open_page(page, stack, GROUP.format(group))
    page.get_by_text(names[1], exact=True).first.wait_for(state="visible")
    text = page.inner_text("body")
    shoot(page, f"asset_graph_{group}")
    missing = [name for name in names if name not in text]
    assert not missing, f"not on the {group} graph: {missing}"


def test_the_released_model_page_shows_its_materialization_and_history_plot(
    page: Any, stack: Stack, instance: dg.DagsterInstance
) -> None:
    open_page(page, stack, "/assets/vqganodip/released_model")
    page.get_by_text("Latest materialization").first.wait_for(state="visible")
    page.locator("tr", has_text="history_plot").first.wait_for(state="visible")
    shoot(page, "released_model")
    text = page.inner_text("body")
    # the release the instance recorded, with its artefacts
    assert metadata_value(instance, "released_model", "release_id") in text
    assert "vqgan_checkpoint" in text and "composite_score_model" in text
    shows_plot(page, "history_plot")
    shoot(page, "released_model_history_plot")


def test_the_scored_shift_shows_its_scores_and_histogram(
    page: Any, stack: Stack, instance: dg.DagsterInstance
) -> None:
    open_page(
        page, stack, f"/assets/vqganodip/batch_scores?view=partitions&partition={PRODUCTION_BATCH}"
    )
    page.locator("tr", has_text="score_histogram").first.wait_for(state="visible")
    shoot(page, "batch_scores_partition")
    text = page.inner_text("body")
    assert PRODUCTION_BATCH in text and "Materialized" in text
    # scored with the release: its id, and the shift's units by file name with their decision
    assert metadata_value(instance, "batch_scores", "release_id") in text
    assert metadata_value(instance, "released_model", "release_id") in text
    assert "unit-0000.png" in text and ("to_operator" in text or "pass" in text)
    shows_plot(page, "score_histogram")
    shoot(page, "batch_scores_histogram")
