"""The report as a browser sees it: headless Chromium (Debian's `chromium`) loads report.html from
disk, and a probe script added to a copy of the page records every console message and
uncaught error, whether each image decoded, and the section ids; a screenshot of the real page
is saved next to it (report.png). Used by the browser test and by `make paper`.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

PROBE = """<script>
(function(){const log=[];for(const k of ['error','warn','log','info']){const f=console[k];
console[k]=function(...a){log.push(k+': '+a.join(' '));f.apply(console,a);};}
window.addEventListener('error',e=>log.push('uncaught: '+(e.message||e.target&&e.target.src)),true);
window.addEventListener('load',()=>{document.body.setAttribute('data-probe',JSON.stringify({log,
images:[...document.images].map(i=>({ok:i.complete&&i.naturalWidth>0,alt:i.alt})),
sections:[...document.querySelectorAll('section')].map(s=>s.id)}));});})();
</script>"""


def chromium() -> str | None:
    return next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)


def _run(binary: str, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args],
                          capture_output=True, text=True, timeout=timeout)


def check_report(report: Path, width: int = 1280, height: int = 4000) -> dict:
    """Load `report` in headless Chromium: {'console': [...], 'images': [...], 'sections': [...],
    'screenshot': path}. Console lines come from the probe and from Chromium's own log."""
    binary = chromium()
    if binary is None:
        raise FileNotFoundError("chromium is not installed (Debian: apt-get install chromium; `make test` does)")
    report = Path(report).resolve()
    probe = report.with_name(".probe-" + report.name)
    probe.write_text(report.read_text().replace("<head>", "<head>" + PROBE, 1))
    try:
        res = _run(binary, "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", "--dump-dom",
                   probe.as_uri())
    finally:
        probe.unlink(missing_ok=True)
    m = re.search(r'data-probe="([^"]*)"', res.stdout)
    if not m:
        raise RuntimeError(f"chromium did not finish loading {report}: {res.stderr[-500:]}")
    data = json.loads(html.unescape(m.group(1)))
    data["console"] = data.pop("log") + [ln for ln in res.stderr.splitlines() if ":CONSOLE" in ln]
    shot = report.with_suffix(".png")
    _run(binary, f"--screenshot={shot}", f"--window-size={width},{height}", report.as_uri())
    data["screenshot"] = str(shot) if shot.is_file() else None
    return data
