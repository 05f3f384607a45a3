"""A real S3 API on 127.0.0.1 for the object-storage tests: moto in server mode (HTTP), not a
mocked client.  Everything under test talks to it through ``pyarrow.fs`` exactly as it would
to AWS or MinIO, configured by the standard ``AWS_*`` environment variables.

Use ``from tests.s3_server import s3_server`` in a test module to get the session fixture.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs
import pytest

BUCKET = "docextract-test"


@dataclass
class S3Server:
    """A running server: its endpoint, a bucket, and a filesystem for the tests' own checks."""

    endpoint: str  # http://127.0.0.1:PORT
    bucket: str

    @property
    def fs(self) -> pafs.S3FileSystem:
        """An independent client (explicit endpoint), for reading back what the pipeline wrote."""
        return pafs.S3FileSystem(
            access_key="testing", secret_key="testing", region="us-east-1", endpoint_override=self.endpoint
        )

    def prefix(self) -> str:
        """A fresh ``s3://bucket/<random>`` for one test."""
        return f"s3://{self.bucket}/{uuid.uuid4().hex[:10]}"

    def upload_dir(self, local: Path, uri: str) -> list[str]:
        """Copy every file under ``local`` to ``uri`` (keys keep the relative paths)."""
        fs, base = self.fs, uri.removeprefix("s3://").rstrip("/")
        keys = []
        for p in sorted(local.rglob("*")):
            if p.is_file():
                key = f"{base}/{p.relative_to(local).as_posix()}"
                with fs.open_output_stream(key) as f:
                    f.write(p.read_bytes())
                keys.append(f"s3://{key}")
        return keys

    def keys(self, uri: str) -> list[str]:
        """Every object key under ``uri`` (``bucket/...``), sorted."""
        sel = pafs.FileSelector(uri.removeprefix("s3://"), recursive=True, allow_not_found=True)
        return sorted(i.path for i in self.fs.get_file_info(sel) if i.type == pafs.FileType.File)


# The server runs in a child process, not a thread of the test process: importing moto's server
# brings in Flask, whose context-local proxies make vLLM's engine start-up fail in the same
# process ("Working outside of application context" from a hasattr() over every module).
_SERVER = """
import logging, sys
logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print("%s %d" % server.get_host_and_port(), flush=True)
sys.stdin.read()  # serve until the parent closes our stdin (or exits)
server.stop()
"""


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server (``ThreadedMotoServer``) on a free port of 127.0.0.1 in a child process,
    one bucket, and the ``AWS_*`` variables for the session (restored afterwards)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdin is not None
    line = proc.stdout.readline().split()
    if len(line) != 2:
        proc.kill()
        raise RuntimeError(f"moto server did not start (exit code {proc.wait()})")
    endpoint = f"http://{line[0]}:{line[1]}"
    mp = pytest.MonkeyPatch()
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_REGION"):
        mp.delenv(key, raising=False)
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    for key, value in env.items():
        mp.setenv(key, value)
    s3 = S3Server(endpoint, BUCKET)
    try:
        pafs.S3FileSystem(
            access_key="testing", secret_key="testing", region="us-east-1", endpoint_override=endpoint,
            allow_bucket_creation=True,
        ).create_dir(BUCKET)
        yield s3
    finally:
        mp.undo()
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
