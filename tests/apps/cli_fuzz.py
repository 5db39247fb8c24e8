"""Helpers of the property-based CLI tests: run ``main`` and classify the outcome; value strategies.

The contract (issue 18): every ``unclip`` command line ends in success (exit 0) or in a
one-line ``error: ...`` (exit 1 from an :class:`~unclip.errors.UnclipError`, exit 2 from
argparse), never in another exception. :func:`run_cli` runs one and returns
``(status, stderr)``; any other exception propagates and fails the test.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from pathlib import Path

from hypothesis import strategies as st

from unclip.apps.cli import main
from unclip.apps.cli.args import LIMITS, SEED_MAX


def run_cli(argv: list[str]) -> tuple[int, str]:
    """Run ``unclip argv``; returns (exit status, stderr). Other exceptions propagate."""
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            status = main(argv)
        except SystemExit as exc:  # argparse: usage errors exit 2
            status = exc.code if isinstance(exc.code, int) else 2
    return status, err.getvalue()


def assert_clean(status: int, stderr: str, argv: list[str]) -> None:
    """Success, or a failure status with an ``error:`` line."""
    assert status in (0, 1, 2), (status, argv)
    if status != 0:
        assert "error:" in stderr, (argv, stderr[-500:])
        assert "Traceback" not in stderr, (argv, stderr[-2000:])


def digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file, or of a folder's file names and contents (to show nothing changed)."""
    path = Path(path)
    h = hashlib.sha256()
    if path.is_file():
        h.update(path.read_bytes())
    elif path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.name == ".unclip.lock":  # the training lock records each run's PID: not a result
                continue
            h.update(str(p.relative_to(path)).encode())
            if p.is_file():
                h.update(p.read_bytes())
    return h.hexdigest()


_ODD_TEXT = [
    "",
    " ",
    "0",
    "-0",
    "-1",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "+inf",
    "1e309",
    "-1e309",
    "1e-320",
    "1e9",
    "-1e9",
    str(2**63),
    str(2**64),
    str(-(2**63)),
    str(SEED_MAX),
    "0x10",
    "1_000",
    "1.5",
    "٣",
    "½",
    "abc",
    "--",
    "None",
    "9" * 400,
]


def numbers(cheap_max: int = 2, limit: int | None = None) -> st.SearchStrategy[str]:
    """Text of numbers of every sign and size, NaN, inf and non-numbers, as a user might type them.

    Valid counts above ``cheap_max`` but within ``limit`` are left out: they are correct
    requests that only take long (the suite must run in minutes), covered by the commands'
    own tests at small sizes.
    """
    low = st.integers(min_value=-(2**70), max_value=cheap_max)
    high = st.integers(min_value=(limit or 10**7) + 1, max_value=2**70)
    return st.one_of(
        st.sampled_from(_ODD_TEXT).filter(lambda t: not _valid_but_costly(t, cheap_max, limit)),
        low.map(str),
        high.map(str),
        st.floats(allow_nan=True, allow_infinity=True)
        .map(repr)
        .filter(lambda t: not _valid_but_costly(t, cheap_max, limit)),
        st.text(max_size=12),
    )


def _valid_but_costly(text: str, cheap_max: int, limit: int | None) -> bool:
    try:
        value = int(text)
    except ValueError:
        return False
    return cheap_max < value <= (limit or 10**7)


def floats_text() -> st.SearchStrategy[str]:
    """Float options (guidance, eta, theta): any float text, odd strings included."""
    return st.one_of(
        st.sampled_from(_ODD_TEXT),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.floats(min_value=0, max_value=2).map(str),
        st.text(max_size=12),
    )


def texts() -> st.SearchStrategy[str]:
    """Prompts and free strings: unicode, empty, very long."""
    return st.one_of(
        st.text(max_size=30),
        st.sampled_from(["a red circle", "", " ", "ü" * 2000, "a" * 100_000, "\u202e\u0000?", "--out"]),
    )


__all__ = ["LIMITS", "assert_clean", "digest", "floats_text", "numbers", "run_cli", "texts"]
