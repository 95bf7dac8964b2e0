"""How alert expressions become queries that must return data (see promql_checks)."""

from __future__ import annotations

from promql_checks import data_checks, split_set_operations, with_bool


def test_comparisons_get_bool_outside_matchers_and_strings():
    assert with_bool('up{job!="a", x=~"b>c"} == 0') == 'up{job!="a", x=~"b>c"} == bool 0'
    assert with_bool("a > on (type) group_left () b") == "a > bool on (type) group_left () b"
    assert with_bool("x >= bool 1") == "x >= bool 1"
    assert with_bool("time() - max(y) > 60") == "time() - max(y) > bool 60"


def test_set_operations_split_at_the_top_level_only():
    operands, operators = split_set_operations(
        "(a or vector(0)) / b > 1 and on (q) c == 0 unless ignoring (x) d"
    )
    assert operands == ["(a or vector(0)) / b > 1", "c == 0", "d"]
    assert operators == ["and", "unless"]


def test_unless_operands_are_checked_alone_and_left_out_of_the_join():
    checks = data_checks("(a > 0 unless on () b > 1) and on () c > 0")
    assert checks == [
        "a > bool 0",
        "b > bool 1",
        "a > bool 0",
        "c > bool 0",
        "(a > bool 0) and on () c > bool 0",
    ]


def test_absent_checks_its_argument():
    assert data_checks('absent(m{queue=~"conveyor\\\\..+"})') == ['m{queue=~"conveyor\\\\..+"}']
