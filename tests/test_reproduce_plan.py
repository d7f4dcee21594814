"""`seqrep reproduce TABLE` without --dataset rebuilds what the data directory allows."""

import pytest

from seqrep import reproduce, tables
from seqrep.errors import SeqrepError


def test_whole_table_skips_data_sets_that_are_absent(tmp_path, capsys):
    needed = tables.studies_for("table7")
    kept = reproduce._available_studies("table7", needed, str(tmp_path))
    # toy is generated; sarcos needs files an empty data directory lacks
    assert kept == [(space, dataset) for space, dataset in needed if dataset == "toy"]
    assert len(kept) == 6
    out = capsys.readouterr().out
    assert out.count("skipping sarcos") == 1
    assert str(tmp_path / "sarcos" / "sarcos_inv.mat") in out


def test_whole_table_with_no_data_at_all_names_what_to_fetch(tmp_path):
    needed = tables.studies_for("table11")
    with pytest.raises(SeqrepError, match=r"data set 'tidigits' needs .*which is not in the data directory"):
        reproduce._available_studies("table11", needed, str(tmp_path))
