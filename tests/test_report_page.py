"""The report as a reader gets it, on a merged report of two fabricated sweeps with ten settings:
the page in headless Chromium (every section there, every image decoded, no console error, nothing
past a 1280 px window, no sideways scrolling on a phone), every LaTeX table through pdflatex
without an overfull line, and every plot's axes still readable with ten settings.

Chromium (Debian's ``chromium`` + ``chromium-driver``, driven by selenium) and pdflatex
(``texlive-latex-base`` and ``-recommended``: booktabs) are installed by ``.ci/run``; outside CI a
missing one skips its test with the command that installs it; under ``CI=true`` it fails.
"""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from analysis import plots
from analysis.latex import PACKAGES
from analysis.report import build_report
from tests.test_report import _metrics, _write_job, _write_outputs

SECTIONS = ["The answer", "Conditions", "Accuracy", "Speed", "Errors", "Examples", "Training"]
MIN_AXES_IN = (1.2, 0.9)          # width, height (inches) every axes keeps at ten settings
APT = "apt-get install -y chromium chromium-driver texlive-latex-base texlive-latex-recommended"


def need(program: str) -> str:
    """The program's path; skip (outside CI) or fail (CI=true) when it is missing."""
    path = shutil.which(program)
    if path is None:
        message = f"{program} not found: install it with `{APT}` (.ci/run does)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def merged(tmp_path_factory):
    """Two sweeps merged: ssd300 at five widths, yolov1 at five schedules (ten settings)."""
    root = tmp_path_factory.mktemp("merged")
    plots.AXES_SIZES.clear()
    for sweep, detector, key, values in (("widths", "ssd300", "detector.model.width", (0.125, 0.25, 0.5, 1, 2)),
                                         ("schedules", "yolov1", "train.iterations", (10, 20, 30, 40, 50))):
        for i, value in enumerate(values):
            overrides = [f"detector={detector}", "seed=0", f"{key}={value}", "train.batch_size=8"]
            folder = root / sweep / str(i)
            _write_job(folder, detector, 0, _metrics(detector, 0) | {"overrides": overrides}, overrides)
            _write_outputs(folder, detector, 0)
    report = build_report(root, print_tables=False)
    return report.parent


def test_ten_settings_get_short_labels_and_a_legend(merged):
    text = (merged / "report.md").read_text()
    assert "ssd300 width=0.125" in text and "yolov1 iterations=50" in text
    assert "detector.model.width=0.125" in text            # the legend says what the label stands for
    assert "train.batch_size=8" in text                     # the shared override is stated once


def test_every_plot_keeps_readable_axes_with_ten_settings(merged):
    names = {p.stem for p in (merged / "plots").glob("*.png")}
    assert {"error_breakdown", "training", "ap_by_size", "confusion_matrix", "prf_confidence"} <= names
    for name in names:
        sizes = plots.AXES_SIZES[name]
        small = [(round(w, 2), round(h, 2)) for w, h in sizes if w < MIN_AXES_IN[0] or h < MIN_AXES_IN[1]]
        assert not small, f"{name}: axes squeezed to {small} inches"


def test_every_latex_table_compiles_and_fits_the_page(merged, tmp_path):
    pdflatex = need("pdflatex")
    tables = sorted((merged / "tables").glob("*.tex"))
    assert len(tables) >= 8
    for tex in tables:
        assert PACKAGES in tex.read_text(), f"{tex.name}: the header comment names no packages"
        document = tmp_path / f"{tex.stem}.tex"
        document.write_text("\\documentclass{article}\n" + PACKAGES + "\n\\begin{document}\n"
                            + tex.read_text() + "\n\\end{document}\n")
        done = subprocess.run([pdflatex, "-interaction=nonstopmode", "-halt-on-error", document.name],
                              cwd=tmp_path, capture_output=True, text=True, timeout=120)
        log = (tmp_path / f"{tex.stem}.log").read_text(errors="replace")
        assert done.returncode == 0, f"{tex.name} does not compile:\n{done.stdout[-1500:]}"
        overfull = [line for line in log.splitlines() if line.startswith("Overfull \\hbox")
                    and float(line.split("(")[1].split("pt")[0]) > 5]
        assert not overfull, f"{tex.name} is wider than the page: {overfull}"


def _browser(width: int, height: int):
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install -e '.[dev]' brings selenium")
    need("chromium")
    options = webdriver.ChromeOptions()
    options.binary_location = need("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--hide-scrollbars", f"--window-size={width},{height}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(need("chromedriver")))


def test_the_page_in_chromium_at_1280_px(merged):
    driver = _browser(1280, 900)
    try:
        driver.get((merged / "report.html").as_uri())
        page = driver.execute_script("""
            const view = document.documentElement.clientWidth;
            const past = [...document.querySelectorAll('table, figure, img')]
                .filter(e => e.getBoundingClientRect().right > view + 1)
                .map(e => (e.id || e.tagName) + ' ' + Math.round(e.getBoundingClientRect().right));
            return {view: view, scroll: document.documentElement.scrollWidth,
                    h2: [...document.querySelectorAll('h2')].map(h => h.textContent),
                    toc: [...document.querySelectorAll('nav.toc a')].map(a => a.getAttribute('href')),
                    images: [...document.images].map(i => [i.alt, i.complete, i.naturalWidth]),
                    past: past};""")
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    finally:
        driver.quit()
    assert page["view"] >= 1200, page["view"]
    for title in SECTIONS:
        assert title in page["h2"], f"section {title!r} missing: {page['h2']}"
    assert page["h2"][:2] == ["The answer", "Conditions"]
    assert len(page["h2"]) == len(set(page["h2"])), "one heading per section"
    assert all(href.startswith("#") for href in page["toc"]) and len(page["toc"]) >= len(SECTIONS)
    assert len(page["images"]) >= 10 and all(ok and w > 0 for _, ok, w in page["images"]), page["images"]
    assert not errors, errors
    assert not page["past"], f"past the right edge of a {page['view']} px window: {page['past']}"
    assert page["scroll"] <= page["view"] + 1


def test_the_page_on_a_phone_does_not_scroll_sideways(merged):
    driver = _browser(390, 844)
    try:
        driver.get((merged / "report.html").as_uri())
        view, scroll, widest_image = driver.execute_script(
            "return [document.documentElement.clientWidth, document.documentElement.scrollWidth,"
            " Math.max(...[...document.images].map(i => i.getBoundingClientRect().right))];")
    finally:
        driver.quit()
    assert scroll <= view + 1 and widest_image <= view + 1, (view, scroll, widest_image)
