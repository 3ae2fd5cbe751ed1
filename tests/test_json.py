"""``mcp_acp._json``: the one JSON reader of the files a human writes, and its limit on the
digits of an integer."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from mcp_acp._json import NumberTooLongError, loads, loads_strict


@pytest.mark.parametrize("read", [loads, loads_strict])
def test_an_integer_of_4300_digits_is_read_and_one_of_4301_is_refused_where_it_is(
    read: Callable[[str], Any],
) -> None:
    assert read("-" + "9" * 4_300) == -int("9" * 4_300)
    # the digits of a string, a fraction or an exponent are no integer's
    many = "1" * 5_000
    text = f'{{"s": "\\"{many}", "f": 0.{many}, "e": 1e-{many},\n "n": [1, -{many}]}}'
    with pytest.raises(
        NumberTooLongError, match=r"^a number has more than 4300 digits: line 2"
    ) as e:
        read(text)
    assert isinstance(e.value, ValueError)  # a JSONDecodeError: every reader of bad JSON
    assert (e.value.lineno, e.value.colno) == (2, 11)


@pytest.mark.parametrize(("setting", "limit"), [("0", 4300), ("640", 640)])
def test_the_limit_holds_where_python_lifts_it_and_is_the_interpreters_if_lower(
    setting: str, limit: int
) -> None:
    """PYTHONINTMAXSTRDIGITS=0 lifts Python's own limit (reading a 10 MB number then takes
    quadratic time); a lower one is said as it is."""
    code = (
        "from mcp_acp._json import loads\n"
        f"assert loads('9' * {limit}) > 0\n"
        f"try: loads('9' * {limit + 1})\n"
        "except ValueError as e: print(e.msg)\n"
    )
    env = {**os.environ, "PYTHONINTMAXSTRDIGITS": setting}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout == f"a number has more than {limit} digits\n"
