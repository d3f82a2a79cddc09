"""Render a batched benchmark's throughput figure (bench --batch-sizes JSON) to PNG for the README,
with the app's own figure, in Debian's chromium through Playwright.

    .venv/bin/python scripts/plot_batch_bench.py benchmarks/batch-cpu-smollm2-135m-xeon.json docs/batch-throughput.png
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from app.batch_figures import throughput_figure  # noqa: E402

CHROMIUM = os.environ.get("MEDUSA_CHROMIUM", "/usr/bin/chromium")


def main(bench_json: str, png: str) -> None:
    figure = throughput_figure(json.loads(Path(bench_json).read_text()))
    figure.update_layout(width=900, height=420)
    with tempfile.TemporaryDirectory() as tmp:
        page_file = Path(tmp) / "figure.html"
        page_file.write_text(figure.to_html(include_plotlyjs=True, full_html=True, config={"displayModeBar": False}))
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 920, "height": 440})
            page.goto(page_file.as_uri())
            page.wait_for_selector(".main-svg")
            page.locator(".js-plotly-plot").screenshot(path=png)
            browser.close()
    print(f"wrote {png}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
