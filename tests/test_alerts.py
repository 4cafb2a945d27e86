"""Alerts by mail (a real SMTP server, aiosmtpd) and webhook (a real HTTP receiver), both on
127.0.0.1 and stopped by the test, with a cooldown per alert key, and on a full disk (a small
tmpfs, filled up)."""

from __future__ import annotations

import errno
import gc
import json
import logging
import os
import subprocess
import threading
from collections.abc import Iterator
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import luigi
import pytest
from aiosmtpd.controller import Controller

from jobs.ops import runtime
from jobs.ops.alerts import alert, read_alerts
from tests.helpers import free_port, luigi_settings

runtime.install()  # what a workflow module installs: the failure alerts of every task


class Inbox:
    def __init__(self) -> None:
        self.messages: list = []

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 - aiosmtpd's hook name
        self.messages.append((envelope.rcpt_tos, message_from_bytes(envelope.content)))
        return "250 OK"


@pytest.fixture()
def smtp_server() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()  # aiosmtpd checks it is up by connecting to it
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@pytest.fixture()
def webhook() -> Iterator[tuple[list, str]]:
    received: list = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None: ...

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield received, f"http://127.0.0.1:{server.server_address[1]}/alerts"
    finally:
        server.shutdown()
        server.server_close()


def settings(root: Path, port: int, url: str) -> luigi_settings:
    return luigi_settings(
        paths={"root": root},
        email={
            "method": "smtp",
            "receiver": "test-ops@example.com",
            "sender": "stdf-jobs@example.com",
            "force_send": True,
        },
        smtp={"host": "127.0.0.1", "port": port, "no_tls": True},
        alerts={"webhook_url": url, "cooldown_minutes": 60},
    )


def test_an_alert_is_mailed_posted_and_then_quiet_for_its_cooldown(
    tmp_path: Path, smtp_server, webhook
) -> None:
    inbox, port = smtp_server
    received, url = webhook
    with settings(tmp_path, port, url):
        first = alert(
            "fab_merge",
            "Normalize(...)",
            "warning",
            "fab2 had not delivered 05:00",
            key="fab2 missing",
            hour=5,
        )
        assert first["sent"]
        assert len(inbox.messages) == 1 and len(received) == 1
        recipients, mail = inbox.messages[0]
        assert recipients == ["test-ops@example.com"] and "fab2 had not delivered 05:00" in mail["Subject"]
        assert received[0]["message"] == "fab2 had not delivered 05:00" and received[0]["numbers"] == {
            "hour": 5
        }

        again = alert(
            "fab_merge", "Normalize(...)", "warning", "fab2 had not delivered 06:00", key="fab2 missing"
        )
        assert (
            not again["sent"] and len(inbox.messages) == 1 and len(received) == 1
        )  # same key: recorded only
        other = alert(
            "quality_monitor", "QualityMonitor(...)", "warning", "quarantined a file", key="quarantine"
        )
        assert other["sent"] and len(inbox.messages) == 2 and len(received) == 2
        assert [a["sent"] for a in read_alerts(tmp_path / "alerts" / "alerts.jsonl")] == [True, False, True]


def test_an_unreachable_webhook_or_mail_server_does_not_fail_the_task(tmp_path: Path) -> None:
    with settings(tmp_path, 1, "http://127.0.0.1:1/nobody"):
        record = alert("wafer_yield", "Train(...)", "error", "training skipped")
    assert (
        record["sent"]
        and read_alerts(tmp_path / "alerts" / "alerts.jsonl")[0]["message"] == "training skipped"
    )


def test_info_alerts_are_not_mailed_by_default(tmp_path: Path, smtp_server) -> None:
    inbox, port = smtp_server
    with settings(tmp_path, port, ""):
        alert("wafer_yield", "Score(...)", "info", "scored")
    assert inbox.messages == []


class Doomed(luigi.Task):
    """A task that fails as a real one does: an exception in run()."""

    day = luigi.IntParameter()

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(f"/nonexistent/doomed-{self.day}")

    def run(self) -> None:
        raise RuntimeError(f"the landing share is gone (day {self.day})")


def test_a_failed_task_alerts_and_mails_once_per_cooldown(tmp_path: Path, smtp_server, webhook) -> None:
    inbox, port = smtp_server
    received, url = webhook
    with settings(tmp_path, port, url):
        assert not luigi.build([Doomed(day=1), Doomed(day=2)], local_scheduler=True, log_level="CRITICAL")
    failures = [a for a in read_alerts(tmp_path / "alerts" / "alerts.jsonl") if a["key"] == "failed Doomed"]
    assert sorted(a["message"] for a in failures) == [
        f"Doomed failed: RuntimeError: the landing share is gone (day {day})" for day in (1, 2)
    ]
    assert [a["severity"] for a in failures] == ["error", "error"]
    assert sorted(a["sent"] for a in failures) == [False, True]
    assert len(inbox.messages) == 1 and len(received) == 1
    assert "Doomed failed" in inbox.messages[0][1]["Subject"]


@pytest.fixture()
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A data root on a 64 KiB tmpfs with not a byte free (unmounted at the end)."""
    root = tmp_path / "full"
    root.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(root)], capture_output=True
    )
    if mounted.returncode:
        pytest.skip(
            f"cannot mount a small tmpfs for a full disk (needs root): {mounted.stderr.decode().strip()}"
        )
    try:
        (root / "alerts").mkdir()
        filler = os.open(root / "filler", os.O_WRONLY | os.O_CREAT)
        with pytest.raises(OSError) as full:
            while True:
                os.write(filler, b"x" * 4096)
        os.close(filler)
        assert full.value.errno == errno.ENOSPC
        yield root
    finally:
        gc.collect()  # the run history's SQLite connections close when collected (jobs/ops/history.py)
        subprocess.run(["umount", str(root)], check=True)


def test_on_a_full_disk_alerts_still_go_out_without_cooldown(
    full_disk: Path, smtp_server, webhook, caplog
) -> None:
    inbox, port = smtp_server
    received, url = webhook
    with settings(full_disk, port, url), caplog.at_level(logging.WARNING, "luigi-interface"):
        first = alert("wafer_yield", "IngestFab(...)", "error", "fab2 offline", key="fab2 offline")
        again = alert("wafer_yield", "IngestFab(...)", "error", "fab2 offline", key="fab2 offline")
    assert first["sent"] and again["sent"]  # no cooldown could be kept: each one is sent
    assert [r["message"] for r in received] == ["fab2 offline", "fab2 offline"] and len(inbox.messages) == 2
    assert "ALERT [error] wafer_yield IngestFab(...): fab2 offline" in caplog.text
    assert (
        "alert cooldown not recorded, sending without it: [Errno 28] No space left on device" in caplog.text
    )
    assert "alert not written to" in caplog.text
    assert read_alerts(full_disk / "alerts" / "alerts.jsonl") == []  # no half line either
    assert sorted(p.name for p in (full_disk / "alerts").iterdir()) == ["alerts.jsonl"]  # no temporary left


def test_on_a_full_disk_a_failed_task_is_still_alerted(full_disk: Path, webhook) -> None:
    received, url = webhook
    with settings(full_disk, 1, url):
        assert not luigi.build([Doomed(day=3)], local_scheduler=True, log_level="CRITICAL")
    assert [r["message"] for r in received] == [
        "Doomed failed: RuntimeError: the landing share is gone (day 3)"
    ]
