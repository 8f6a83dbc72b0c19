"""The table renderer: columns as wide as their widest cell, numbers on the right."""

import pytest

from cli.tables import render_fields, render_table


def test_columns_line_up_under_their_headers():
    table = render_table(
        ["ID", "STATUS", "N"],
        [["contain-1", "pending_approval", 1], ["eradicate-12", None, 250]],
        right=(2,),
    )
    assert table.splitlines() == [
        "ID            STATUS              N",
        "contain-1     pending_approval    1",
        "eradicate-12  -                 250",
    ]


def test_a_table_without_rows_is_its_header_and_a_cell_is_one_line():
    assert render_table(["CASE", "PHASE"], []) == "CASE  PHASE"
    assert render_table(["NOTE"], [["two\nlines"]]).splitlines() == ["NOTE", "two lines"]


def test_rows_must_fit_the_columns():
    with pytest.raises(ValueError, match="row has 1 cells, the table 2 columns"):
        render_table(["A", "B"], [["only one"]])


def test_fields_align_their_values():
    assert render_fields([("Phase", "closed"), ("Credential", "AKIA..."), ("Outcome", None)]) == (
        "Phase       closed\nCredential  AKIA...\nOutcome     -"
    )
