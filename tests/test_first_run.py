"""What a new user sees at the start of a run (issue 14): no time budget unless asked for, and one
note when --max-length is above the checkpoint's position limit."""
from reliability_cases import FIXTURE_DATA, base_argv
from training.multitask import options
from training import run_multitask


def test_the_presets_set_no_time_budget():
    for preset in options.PRESETS:
        assert options.parse_args(["--device", "cpu", "--preset", preset]).time_budget is None
    assert options.parse_args(["--device", "cpu", "--time-budget", "30"]).time_budget == 30


def test_the_run_says_there_is_no_budget_and_clamps_max_length_once(tmp_path, tiny_checkpoint, capsys):
    # The tiny checkpoint reads at most 128 positions (max_position_embeddings).
    run_multitask.main(base_argv(tiny_checkpoint, FIXTURE_DATA, tmp_path / "a") + ["--max-length", "100000"])
    out = capsys.readouterr().out
    assert "no time budget" in out
    assert out.count("--max-length 100000 is more than the checkpoint can read") == 1
    assert "position limit of 128 tokens" in out


def test_the_run_names_the_budget_it_was_given(tmp_path, tiny_checkpoint, capsys):
    run_multitask.main(base_argv(tiny_checkpoint, FIXTURE_DATA, tmp_path / "b") + ["--time-budget", "30"])
    out = capsys.readouterr().out
    assert "time budget: training stops after 30 min" in out and "--max-length" not in out
