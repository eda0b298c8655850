"""Graceful shutdown: SIGTERM while requests are in flight to a slow origin; each of them is
answered 200, new connections are refused, and `lb run` exits 0."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

from tests.conftest import wait_for
from tests.integration.helpers import LbProcess, free_port, request
from tests.resilience.helpers import Origin


def test_sigterm_drains_requests_in_flight_then_exits_0(tmp_path: Path) -> None:
    with Origin("slow") as origin:
        port, admin_port = free_port(), free_port()
        path = tmp_path / "lb.yaml"
        path.write_text(
            f"""version: 1
defaults: {{shutdown_grace: 10s}}
listeners:
  web: {{bind: "127.0.0.1:{port}", mode: http}}
routes:
  - {{name: default, match: {{}}, pool: app}}
pools:
  app: {{servers: [{{address: "{origin.address}"}}]}}
admin: {{bind: "127.0.0.1:{admin_port}"}}
"""
        )
        lb = LbProcess(path, port, admin_port, workers=2).start()
        try:
            answers: list[tuple[int, bytes]] = []

            def slow(i: int) -> None:
                code, _, body = request(port, f"/slow/{i}?s=1.5")
                answers.append((code, body))

            threads = [threading.Thread(target=slow, args=(i,)) for i in range(6)]
            for thread in threads:
                thread.start()
            wait_for(lambda: origin.total >= 6, 5, what="six requests at the origin")
            lb.signal(signal.SIGTERM)
            for thread in threads:
                thread.join(10)
            assert len(answers) == 6
            assert all(code == 200 and body.startswith(b"origin slow") for code, body in answers)
            assert lb.wait(10) == 0
        finally:
            lb.stop()
