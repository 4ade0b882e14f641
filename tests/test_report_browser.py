"""The report people open: `snakemake --report results/report.html` of the full tiny DAG, opened in a
real headless Chromium (Debian's package, `make browser-deps`) the way a reader uses it: the page
loads with no console error or uncaught exception, the Figures section lists every figure in
results/figures/, and clicking each shows it (the picture the file holds, its screenshot far from
a blank page); every table and report is listed."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from headless_browser import Browser, chromium_path

REPO = Path(__file__).resolve().parents[1]
FULL_PARAMS = REPO / "tests" / "data" / "tiny_params_full.yaml"
BIN = Path(sys.executable).parent

pytestmark = [pytest.mark.slow]

if chromium_path() is None:
    pytest.skip("chromium is not installed (make browser-deps installs Debian's package; needs root and apt-get)",
                allow_module_level=True)

# Click a sidebar entry, or the eye button of a result row, by its visible text.
OPEN_SECTION = ("(text) => { const a = Array.from(document.querySelectorAll('a'))"
                ".find(e => e.textContent.trim() === text); if (!a) return false; a.click(); return true; }")
SHOW_RESULT = ("(name) => { const td = Array.from(document.querySelectorAll('td'))"
               ".find(e => e.textContent.trim() === name); const eye = td && td.parentElement"
               ".querySelector('a[iconname=eye]'); if (!eye) return false; eye.click(); return true; }")
LISTED = "Array.from(document.querySelectorAll('td')).map(e => e.textContent.trim()).filter(t => t.startsWith('results/'))"


def _snakemake(workdir: Path, *args: str) -> None:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    result = subprocess.run([str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "-d", str(workdir), *args],
                            capture_output=True, text=True, timeout=1200, env=env)
    assert result.returncode == 0, result.stderr[-4000:]


@pytest.fixture(scope="module")
def report(dvc_full_run, tmp_path_factory) -> Path:
    """The full tiny DAG's every table, figure and report, bundled by `snakemake --report`; built on
    a copy of the session's full run (tests/conftest.py ``dvc_full_run``: tests/data/tiny_params_full.yaml
    run by `dvc repro`, Snakemake inside every stage), without its git and DVC state."""
    workdir = tmp_path_factory.mktemp("report")
    shutil.copytree(dvc_full_run, workdir, symlinks=True, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".git", ".dvc"))
    assert (workdir / "params.yaml").read_bytes() == FULL_PARAMS.read_bytes()
    _snakemake(workdir, "--report", "results/report.html")
    return workdir


@pytest.fixture(scope="module")
def browser():
    with Browser(chromium_path()) as opened:
        yield opened


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


def _differs_from_blank(shot: bytes, blank: bytes) -> float:
    """Fraction of pixels more than 16 grey levels away from the blank page's."""
    a, b = _pixels(shot), _pixels(blank)
    return float((np.abs(a - b).max(axis=2) > 16).mean())


def _clip(browser: Browser, name: str) -> dict:
    rect = browser.evaluate(
        f"(() => {{ const img = Array.from(document.images).find(i => i.src.includes('filename={Path(name).name}'));"
        " if (!img || !img.complete || img.naturalWidth === 0) return null; const r = img.getBoundingClientRect();"
        " return {x: r.x, y: r.y, width: r.width, height: r.height, natural: [img.naturalWidth, img.naturalHeight]}; })()")
    return rect


def _wait_for_figure(browser: Browser, name: str, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while (rect := _clip(browser, name)) is None:
        assert time.monotonic() < deadline, f"{name}: never shown as a loaded image"
        time.sleep(0.1)
    return rect


def test_the_report_opens_without_console_errors_and_is_not_blank(report, browser, tmp_path):
    browser.open("about:blank")
    blank = browser.screenshot()
    browser.open((report / "results" / "report.html").as_uri())
    browser.wait_until("document.body && document.body.innerText.includes('Figures')")
    landing = browser.screenshot(tmp_path / "landing.png")
    assert _differs_from_blank(landing, blank) > 0.02
    assert browser.errors == []


def test_every_figure_is_listed_and_shows_its_picture(report, browser, tmp_path):
    figures = sorted(f"results/figures/{p.name}" for p in (report / "results" / "figures").glob("*.png"))
    assert len(figures) >= 4  # ROC, reject curves, uncertainty histograms of the tiny DAG
    browser.open((report / "results" / "report.html").as_uri())
    browser.wait_until("document.body && document.body.innerText.includes('Figures')")
    assert browser.evaluate(f"({OPEN_SECTION})('Figures')")
    browser.wait_until(f"{LISTED}.length > 0")
    assert sorted(browser.evaluate(LISTED)) == figures
    for name in figures:
        assert browser.evaluate(f"({SHOW_RESULT})({name!r})"), name
        rect = _wait_for_figure(browser, name)
        with Image.open(report / name) as png:
            assert tuple(rect.pop("natural")) == png.size, name  # the file's own picture
        shot = browser.screenshot(tmp_path / Path(name).name, clip=rect)
        blank = np.full_like(_pixels(shot), 255)  # the report's page background is white
        coloured = float((np.abs(_pixels(shot) - blank).max(axis=2) > 16).mean())
        assert coloured > 0.02, f"{name}: {coloured:.3%} of its pixels differ from a blank page"
    assert browser.errors == []


@pytest.mark.parametrize("section, pattern", [("Tables", "*.csv"), ("Reports", "reports/*.md")])
def test_every_table_and_report_is_listed(report, browser, section, pattern):
    expected = sorted(f"results/{p.relative_to(report / 'results')}" for p in (report / "results").glob(pattern))
    assert expected
    browser.open((report / "results" / "report.html").as_uri())
    browser.wait_until("document.body && document.body.innerText.includes('Figures')")
    assert browser.evaluate(f"({OPEN_SECTION})({section!r})")
    browser.wait_until(f"{LISTED}.length > 0")
    assert sorted(browser.evaluate(LISTED)) == expected
    assert browser.errors == []
