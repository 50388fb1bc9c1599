"""`outdir.files_in_the_way`: the one rule for which files in a folder an output may not replace."""

import os

from grouprobust.outdir import files_in_the_way


def test_every_present_name_is_in_the_way_unless_this_kind_of_output_wrote_it_as_a_plain_file(tmp_path):
    (tmp_path / "mine.csv").write_text("user")
    (tmp_path / "ours.csv").write_text("earlier output")
    (tmp_path / "ours_dir.csv").mkdir()
    os.symlink(tmp_path / "mine.csv", tmp_path / "ours_link.csv")
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling.csv")
    names = ["absent.csv", "mine.csv", "ours.csv", "ours_dir.csv", "ours_link.csv", "dangling.csv"]
    ours = {"ours.csv", "ours_dir.csv", "ours_link.csv"}
    assert files_in_the_way(tmp_path, names, ours) == ["mine.csv", "ours_dir.csv", "ours_link.csv", "dangling.csv"]
    assert files_in_the_way(tmp_path, names) == names[1:]
    assert files_in_the_way(tmp_path / "missing", names) == []
