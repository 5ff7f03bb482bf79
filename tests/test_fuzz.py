"""The README's promise for bad input, fuzzed: exit code 2, one clear message and no traceback, nothing
written or changed on disk. bench/fuzz_cli.py draws the cases (seed 0) and runs them in-process."""
from benches import load_bench

N = 500


def test_cases_are_distinct_reproducible_and_cover_every_category(tmp_path):
    fuzz = load_bench("fuzz_cli")
    drawn = fuzz.cases(N, 0, tmp_path)
    again = fuzz.cases(N, 0, tmp_path)
    assert [c.argv for c in drawn] == [c.argv for c in again] and [c.files for c in drawn] == [c.files for c in again]
    assert len({c.key() for c in drawn}) == N
    assert {c.category for c in drawn} == set(fuzz.CATEGORIES)


def test_bad_input_exits_2_with_one_message_and_touches_nothing():
    fuzz = load_bench("fuzz_cli")
    result = fuzz.fuzz(N, seed=0)
    failing = result["failures"]
    listing = "\n".join(f"{o['category']}/{o['kind']} [{', '.join(o['failures'])}] exit {o['exit_code']}: "
                        f"slimkit {' '.join(map(repr, o['argv']))}\n    {' | '.join(o['stderr_tail'][-2:])}"
                        + (f"\n    paths: {o['paths']}" if o["paths"] else "") for o in failing)
    assert result["cases"] == N
    assert not failing, f"{len(failing)} of {N} bad inputs were mishandled ({result['totals']}):\n{listing}"
