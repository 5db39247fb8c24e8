"""Helpers of the web-app tests (imported by name, as tests/clip/clip_helpers.py is)."""

from __future__ import annotations

import base64
import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

#: limits of the test servers: small, so every allowed request is quick on the tiny model
TEST_LIMITS = dict(
    max_images=4, max_prompts=4, max_steps=3, max_frames=4, max_upload_bytes=64 * 1024, max_pixels=256 * 256
)
SERVER_ARGS = [
    "--max-images",
    "4",
    "--max-steps",
    "3",
    "--max-frames",
    "4",
    "--max-upload-mb",
    "0.0625",
    "--max-pixels",
    "65536",
]


def png_bytes(color=(200, 30, 30), size=(24, 24), fmt="PNG") -> bytes:
    """A small picture (a coloured square on grey) encoded as ``fmt``."""
    im = Image.new("RGB", size, (128, 128, 128))
    w, h = size
    im.paste(Image.new("RGB", (max(1, w // 2), max(1, h // 2)), color), (w // 4, h // 4))
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``unclip serve`` in a subprocess on 127.0.0.1 and a free port; its log goes to a file."""

    def __init__(self, model_args: list[str], extra: list[str], log_path: Path, timeout: float = 120.0) -> None:
        import httpx

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
        entry = "import sys; from unclip.apps.cli.main import main; sys.exit(main(sys.argv[1:]))"
        cmd = [sys.executable, "-c", entry, "serve", *model_args, "--port", str(self.port), *extra]
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"unclip serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/api/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"unclip serve did not answer within {timeout} s:\n{self.log()}")
            time.sleep(0.3)

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS in /proc status")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Send ``sig`` and wait for the exit status (killed after ``timeout`` s)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self._log.closed:
            self._log.close()
        return self.proc.returncode
