#!/usr/bin/env python3
"""examples/live.html in a real browser: headless Chromium (Debian's
`chromium`, driven by Playwright from PyPI with the system browser) loads the
page from a small HTTP server of its own (another origin than the service, as
a screen's host would be) against a running service.

Usage: live.py SERVICE_URL TOKEN SYMBOL LEVEL_ID

Talks with tests/browser.rs over stdin/stdout: prints `ARMED <price>` once
the page shows the level armed and the symbol's price has changed on it,
then waits for a line on stdin (the test crosses the level meanwhile), and
prints `EXECUTED` once the page shows the level executed. Exits 1 with the
reason on any failure: a missing browser fails, it never passes silently.
"""
import functools
import http.server
import os
import sys
import threading

from playwright.sync_api import sync_playwright

CHROMIUM = os.environ.get("SM_CHROMIUM", "/usr/bin/chromium")
EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples")


def serve_examples():
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=EXAMPLES)
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main():
    service, token, symbol, level_id = sys.argv[1:5]
    if not os.path.exists(CHROMIUM):
        print(f"no browser at {CHROMIUM}: install Debian's chromium (scripts/test does)", flush=True)
        return 1
    server = serve_examples()
    page_url = f"http://127.0.0.1:{server.server_port}/live.html?url={service}&token={token}"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(page_url)
        status = f'#levels tr[data-id="{level_id}"] td.status'
        page.wait_for_selector(f'{status}[data-status="armed"]', timeout=30_000)
        cell = f'#prices tr[data-symbol="{symbol}"] td.price'
        page.wait_for_selector(cell, timeout=30_000)
        first = page.inner_text(cell)
        # The simulator moves prices on its own: the page must follow.
        page.wait_for_function(
            "([sel, was]) => { const c = document.querySelector(sel); return c && c.textContent !== was && c.textContent !== ''; }",
            arg=[cell, first],
            timeout=30_000,
        )
        print(f"ARMED {first} -> {page.inner_text(cell)}", flush=True)
        sys.stdin.readline()
        page.wait_for_selector(f'{status}[data-status="executed"]', timeout=60_000)
        print("EXECUTED", flush=True)
        if errors:
            print(f"page errors: {errors}", flush=True)
            return 1
        browser.close()
    server.shutdown()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # the reason, for the test's message
        print(f"FAILED: {type(e).__name__}: {e}", flush=True)
        sys.exit(1)
