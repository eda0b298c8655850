"""The re-arm admin call and the splits in the status document (supervisor side, no workers)."""

from __future__ import annotations

import shutil
import signal
from types import SimpleNamespace

from lb.admin.server import AdminServer
from lb.admin.status import _splits
from lb.metrics import SPLIT_ROLLED_BACK
from lb.supervisor import Supervisor
from tests.sticky.conftest import config_of

DATA = {
    "listeners": {"web": {}},
    "routes": [
        {
            "name": "shop",
            "match": {},
            "split": [{"pool": "v1", "weight": 90}, {"pool": "v2", "weight": 10}],
            "rollback": {"max_error_rate": "5%"},
        }
    ],
    "pools": {
        "v1": {"servers": [{"address": "127.0.0.1:9001"}]},
        "v2": {"servers": [{"address": "127.0.0.1:9002"}]},
    },
}


class FakeProc:
    pid = 4242

    def __init__(self) -> None:
        self.signals: list[int] = []

    def poll(self) -> None:
        return None

    def send_signal(self, sig: int) -> None:
        self.signals.append(sig)


async def test_rearm_signals_ready_workers_only(tmp_path):
    sup = Supervisor(str(tmp_path / "lb.yaml"), config_of(DATA), "version: 1\n", 2)
    ready, starting = FakeProc(), FakeProc()
    sup.workers = [
        SimpleNamespace(ready=True, proc=ready),  # type: ignore[list-item]
        SimpleNamespace(ready=False, proc=starting),  # type: ignore[list-item]
    ]
    admin = AdminServer(sup)
    status, _, body = admin.handle("POST", "/api/v1/routes/shop/rearm", {}, b"")
    assert status == 200 and b'"rearmed": true' in body
    assert ready.signals == [signal.SIGUSR1] and starting.signals == []
    status, _, body = admin.handle("POST", "/api/v1/routes/nope/rearm", {}, b"")
    assert status == 404 and b"no route 'nope'" in body
    shutil.rmtree(sup.run_dir, ignore_errors=True)


def test_status_document_shows_a_rolled_back_arm():
    SPLIT_ROLLED_BACK.labels("shop", "v2").set(1)
    try:
        doc = _splits(SimpleNamespace(config=config_of(DATA)))  # type: ignore[arg-type]
    finally:
        SPLIT_ROLLED_BACK.labels("shop", "v2").set(0)
    shop = doc["shop"]
    assert shop["rolled_back"] is True
    assert [(a["pool"], a["stable"], a["rolled_back"]) for a in shop["arms"]] == [
        ("v1", True, False),
        ("v2", False, True),
    ]
