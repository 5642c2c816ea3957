"""DiffSim target CSV errors name 1-based file lines (header and blank lines counted), the same
way in every message (issue 18 item 7: numpy's parser said "row 1" for the second data row and
"row 2" for the second data row in another message, and header lines shifted both)."""

from __future__ import annotations

import pytest

from ase_mlmd.diffsim.targets import read_partial_rdf_csv, read_rdf_csv, read_vacf_csv
from ase_mlmd.errors import DataFormatError

HEADER = "# density: 0.8\n# temperature: 1.0\n\n"  # lines 1-3; data start on line 4


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ("0.1,0.2,0.3\n1,x,1\n", r"line 5, column 2: 'x' is not a number"),
        ("0.1,0.2,x\n1,1,1\n", r"line 4, column 3: 'x' is not a number"),
        ("0.1,0.2,0.3\n1,1\n", r"line 5: 2 values, but line 4 has 3"),
        ("0.1,0.2,0.3\n1,nan,1\n", r"line 5: value 2 is nan"),
        ("0.1,inf,0.3\n1,1,1\n", r"line 4: value 2 is inf"),
        ("0.1,0.2,0.3\n1,1,-1\n", r"line 5: g\(r\) is negative \(-1\) at value 3, r = 0.3"),
        ("0.1,0.3,0.4\n1,1,1\n", r"line 4: the r row must increase in equal steps"),
    ],
)
def test_rdf_errors_name_the_file_line(tmp_path, data, match):
    path = tmp_path / "t.csv"
    path.write_text(HEADER + data)
    with pytest.raises(DataFormatError, match=match):
        read_rdf_csv(path)


def test_column_layout_errors_name_the_column(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("0.1,1\n0.2,-2\n0.3,1\n")
    with pytest.raises(DataFormatError, match=r"column 2: g\(r\) is negative \(-2\) at value 2"):
        read_rdf_csv(path, layout="columns")


def test_partial_rdf_errors_name_the_file_line(tmp_path):
    path = tmp_path / "mix.csv"
    head = "# pairs: Ar-Ar,Ar-Kr,Kr-Kr\n# composition: Ar:0.5,Kr:0.5\n"
    path.write_text(head + "0.1,0.2,0.3\n1,1,1\n1,1,1\n1,-1,1\n")
    with pytest.raises(DataFormatError, match=r"line 6: g\(r\) is negative"):
        read_partial_rdf_csv(path, density=0.8, temperature=1.0)
    path.write_text(head + "0.1,0.2,0.3\n1,1,1\n\n1,1,1\n")
    with pytest.raises(DataFormatError, match=r"need 4 rows .*found 3 \(lines 3-6\)"):
        read_partial_rdf_csv(path, density=0.8, temperature=1.0)


def test_vacf_bad_value_names_the_line(tmp_path):
    path = tmp_path / "vacf.csv"
    path.write_text("# vacf\n1.0\n0.5\noops\n")
    with pytest.raises(DataFormatError, match=r"line 4, column 1: 'oops'"):
        read_vacf_csv(path)
