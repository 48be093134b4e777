"""Peak resident memory of a block of code, sampled by a thread (Linux)."""

import contextlib
import os
import threading
import time


def rss_bytes():
    """Current resident memory of this process, in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextlib.contextmanager
def peak_rss(interval=0.002):
    """Yields a dict that holds `baseline` and, on exit, `peak` (bytes)."""
    figures = {"baseline": rss_bytes()}
    figures["peak"] = figures["baseline"]
    done = threading.Event()

    def sample():
        while not done.is_set():
            figures["peak"] = max(figures["peak"], rss_bytes())
            time.sleep(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield figures
    finally:
        done.set()
        sampler.join()
        figures["peak"] = max(figures["peak"], rss_bytes())
