"""The manifest lines of recorded training calls (training/run_history.py)."""

import pytest

from defense_gan_tf.training import run_history


def test_lines_say_how_each_call_started_what_it_trained_and_how_it_ended():
    fresh = run_history.new_run("python bin/train.py --a", 0, "fresh")
    fresh.update(end_iteration=700, stop_reason="signal")
    warm = run_history.new_run("python bin/train.py --b", 700, "warm start from p at "
                               "iteration 700", budget_minutes=45.5, launcher="bash c.sh")
    warm.update(end_iteration=900, evaluated=[750, 800, 900], stop_reason="time_budget")
    nan = run_history.new_run(None, 900, "resumed")
    nan.update(end_iteration=950, stop_reason="nan")
    odd = run_history.new_run("python x", 950, "resumed")
    odd.update(stop_reason="something new")
    carried = run_history.from_package(["python old (iterations 0-5)"], "p/manifest.json")
    assert run_history.train_commands(carried + [fresh, warm, nan, odd]) == [
        "python old (iterations 0-5)",
        "python bin/train.py --a (started afresh, iterations 0-700, stopped by SIGINT or "
        "SIGTERM)",
        "python bin/train.py --b (through bash c.sh; warm start from p at iteration 700, "
        "budget 45.5 min, iterations 700-900 with the evaluations at 750, 800 and 900, "
        "stopped by its time budget)",
        "train_gan() called from Python (resumed exactly, iterations 900-950, stopped by "
        "a non-finite loss (nothing saved after its last checkpoint))",
        "python x (resumed exactly, iterations 950-950, stopped (something new))"]


@pytest.mark.parametrize("runs", [{"a": 1}, ["line"], [{"command": "x"}, 3]])
def test_a_broken_runs_list_is_refused_with_the_file_named(runs):
    with pytest.raises(ValueError, match="run/progress.json: 'runs' is not a list"):
        run_history.read_runs({"runs": runs}, "run/progress.json")
    assert run_history.read_runs({}, "run/progress.json") == []
