"""The origin every subject proxies to: nginx serving static files, or `benchmarks.origin`.

nginx is preferred because it is fast enough that the subject, not the origin, is the bottleneck;
the Python origin is the fallback when nginx is not installed.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from benchmarks import configs, procs
from benchmarks.origin import BODY_64K, BODY_BULK, SMALL_BODY

HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Origin:
    kind: str  # "nginx" or "python"
    port: int
    process: procs.Process

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def stop(self) -> None:
        self.process.stop()


def start_origin(
    workdir: Path,
    log_dir: Path,
    pinning: procs.Pinning,
    prefer: str = "auto",
    timeout: float = 10.0,
) -> Origin:
    """Start the origin: `prefer` is "nginx", "python", or "auto" (nginx when installed)."""
    port = procs.free_port()
    nginx = shutil.which("nginx") if prefer in ("auto", "nginx") else None
    if prefer == "nginx" and nginx is None:
        raise procs.StartError("--origin nginx: nginx is not installed", None)
    if nginx is not None:
        odir = workdir / "origin"
        docroot = odir / "www"
        docroot.mkdir(parents=True)
        (docroot / "small").write_bytes(SMALL_BODY)
        (docroot / "64k").write_bytes(BODY_64K)
        (docroot / "bulk").write_bytes(BODY_BULK)
        conf = odir / "nginx.conf"
        conf.write_text(configs.nginx_origin(odir, docroot, port))
        # -e: the error log before the config is read (else nginx tries /var/log/nginx).
        argv = [nginx, "-p", str(odir), "-e", str(odir / "error.log"), "-c", str(conf)]
        kind = "nginx"
    else:
        if prefer == "auto":
            print("note: nginx is not installed; using the Python origin (benchmarks/origin.py)")
        argv = [sys.executable, "-m", "benchmarks.origin", "--host", HOST, "--port", str(port)]
        kind = "python"
    process = procs.start(f"origin-{kind}", pinning.load_prefix() + argv, log_dir, cwd=REPO_ROOT)
    try:
        procs.wait_for_port(process, HOST, port, timeout)
    except BaseException:
        process.stop()
        raise
    return Origin(kind, port, process)
