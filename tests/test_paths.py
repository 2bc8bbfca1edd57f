"""The path validator remembers valid paths; remembering never changes an answer."""
from __future__ import annotations

import pytest

from workspace.errors import Invalid
from workspace.paths import _valid, _validate, validate_path

BAD = ["", "/abs", "a//b", "a/../b", "a/./b", "a\\b", "a\x00b", "dir/", "e\u0301", "a\u2215b", "x" * 1025]
GOOD = ["a.txt", "agent-a/notes.md", "ünïcode/ok.txt", "x" * 1024]


@pytest.mark.parametrize("path", BAD)
def test_an_invalid_path_is_refused_every_time(path):
    """GIVEN an invalid path WHEN validated twice THEN both times it is refused with the same error
    (errors are never remembered as answers)."""
    errors = []
    for _ in range(2):
        with pytest.raises(Invalid) as raised:
            validate_path(path)
        errors.append((raised.value.code, str(raised.value)))
    assert errors[0] == errors[1]


@pytest.mark.parametrize("path", GOOD)
def test_a_valid_path_gives_the_uncached_answer(path):
    """GIVEN a valid path WHEN validated twice THEN both answers equal the validator's own, and the
    second comes from the cache."""
    _valid.cache_clear()
    assert validate_path(path) == _validate(path) == path
    assert validate_path(path) == path
    assert _valid.cache_info().hits == 1


def test_the_directory_flag_is_part_of_the_answer():
    """GIVEN 'dir/' WHEN validated as a directory THEN it is valid; as a file, still refused."""
    assert validate_path("dir/", directory=True) == "dir/"
    with pytest.raises(Invalid):
        validate_path("dir/")
    with pytest.raises(Invalid):
        validate_path("dir", directory=True)


def test_non_strings_are_refused_without_touching_the_cache():
    """GIVEN a value that is not a string (a list is not even hashable) WHEN validated THEN 400."""
    for value in (None, 3, ["a"]):
        with pytest.raises(Invalid):
            validate_path(value)  # type: ignore[arg-type]
