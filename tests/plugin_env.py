"""Loaded with `-p tests.plugin_env` before Django is set up: the test session's environment.

Every session gets its own data directory (blobs, SQLite files, the Redis socket), so a test run
never touches `var/` and two runs never share state. With REDIS_URL and DATABASE_URL set (CI's
PostgreSQL + Redis run) those services are used instead of the embedded ones.
"""
from __future__ import annotations

import os
import tempfile

if "SWITCHYARD_TEST_DATA_DIR" not in os.environ:
    os.environ["SWITCHYARD_TEST_DATA_DIR"] = tempfile.mkdtemp(prefix="switchyard-test-")
os.environ["SWITCHYARD_DATA_DIR"] = os.environ["SWITCHYARD_TEST_DATA_DIR"]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("SWITCHYARD_BLOB_FSYNC", "false")
os.environ.setdefault("SWITCHYARD_TEST_FAST_PASSWORDS", "true")
# A lower auth-failure limit would trip the tests that send bad tokens on purpose.
os.environ.setdefault("SWITCHYARD_AUTH_FAILURE_LIMIT", "100000")
if "CHROMA_URL" not in os.environ:
    import socket

    with socket.socket() as _sock:
        _sock.bind(("127.0.0.1", 0))
        os.environ["CHROMA_URL"] = f"http://127.0.0.1:{_sock.getsockname()[1]}"
    os.environ["SWITCHYARD_TEST_START_CHROMA"] = "1"
