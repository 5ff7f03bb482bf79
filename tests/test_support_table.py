"""The README's support table is what bench/support_table.py gives on this tree: rows of two families (a CNN and a
causal LM; the whole table takes a few minutes) are regenerated and must be in the README as they are."""
import pytest

from benches import load_bench

pytestmark = pytest.mark.usefixtures("one_thread")


def test_readme_support_table_rows_are_what_a_run_gives():
    pytest.importorskip("transformers")
    table = load_bench("support_table")
    families = ["fashion-cnn (ResNet CNN)", "GPT-2 (causal LM)"]
    assert table.main(["--check", "--families", *families]) == 0, "regenerate it: python bench/support_table.py"
