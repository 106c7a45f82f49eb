"""Screenshot of the running demo for docs/demo.md, with a real browser: Debian's Chromium,
headless, driven by Playwright (pip install playwright; no browser download: it uses the
system's /usr/bin/chromium). It waits for both columns and their scores to render.

    python -m streamlit run scripts/demo.py --server.headless true --server.port 8599 \\
        --client.toolbarMode minimal -- en_conll2003_a_cnn en_conll2003_b_cnn &
    python docs/screenshot.py http://localhost:8599 docs/demo.png
"""

import sys

from playwright.sync_api import sync_playwright

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

if __name__ == "__main__":
    url, out = sys.argv[1], sys.argv[2]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1200})
        page.goto(url)
        page.get_by_text("System B:").first.wait_for(timeout=120_000)  # the pipelines load
        page.get_by_text("Per-type scores").last.wait_for(timeout=60_000)
        page.wait_for_timeout(1500)
        page.screenshot(path=out, full_page=True)
        browser.close()
