"""Host lists: expand Slurm's compact node lists and compact names back."""

import pytest

from isense_slurm.slurm.hostlist import compact, expand, split_top_level


@pytest.mark.parametrize(
    "text, names",
    [
        ("n1", ["n1"]),
        ("n[1-4]", ["n1", "n2", "n3", "n4"]),
        ("n[1-2,7],login", ["n1", "n2", "n7", "login"]),
        ("gpu[08-11]", ["gpu08", "gpu09", "gpu10", "gpu11"]),
        ("r[1-2]n[1-2]", ["r1n1", "r1n2", "r2n1", "r2n2"]),
        ("a[1-2]-ib", ["a1-ib", "a2-ib"]),
        ("n[1-3],n2", ["n1", "n2", "n3"]),
        ("", []),
        ("(null)", []),
        ("  n[9-10] ", ["n9", "n10"]),
    ],
)
def test_expand(text, names):
    assert expand(text) == names


def test_expand_several_expressions_and_none():
    assert expand(["n[1-2]", "m1"]) == ["n1", "n2", "m1"]
    assert expand(None) == []


@pytest.mark.parametrize("bad", ["n[1-", "n[2-1]", "n[a-b]", "n1]"])
def test_expand_rejects_malformed_lists(bad):
    with pytest.raises(ValueError, match="host list"):
        expand(bad)


@pytest.mark.parametrize(
    "names, text",
    [
        (["n1", "n2", "n3", "n4"], "n[1-4]"),
        (["n4", "n1", "n2"], "n[1-2,4]"),
        (["n1"], "n1"),
        (["n10", "n9", "n1"], "n[1,9-10]"),
        (["gpu09", "gpu10", "gpu11"], "gpu[09-11]"),
        (["login", "n2", "n1"], "login,n[1-2]"),
        (["a1-ib", "a2-ib"], "a[1-2]-ib"),
        (["n1", "n1", "n2"], "n[1-2]"),
        ([], ""),
    ],
)
def test_compact(names, text):
    assert compact(names) == text


def test_compact_keeps_different_paddings_apart():
    assert compact(["n01", "n02", "n3"]) == "n[01-02],n3"


@pytest.mark.parametrize("text", ["n[1-4]", "gpu[01-03,10]", "a[1-2],b[5-6]", "n[1,3,5-7]"])
def test_round_trip(text):
    assert compact(expand(text)) == text


def test_split_top_level_ignores_commas_in_brackets():
    assert split_top_level("n[1-2,4],gpu:2(IDX:0,2),x") == ["n[1-2,4]", "gpu:2(IDX:0,2)", "x"]
