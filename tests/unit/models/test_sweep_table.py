"""`lfm pretrain-sweep`'s table: its columns are the data's largest scenarios by test rows, named as scenarios
(no data set's own word for them, no list of one data set's values)."""
from __future__ import annotations

from models.training.sweep import largest_scenarios, sweep_markdown


def _run(variant: str, seed: int, aucs: dict[str, float]) -> dict:
    sizes = {"home": 900, "search": 50, "cart": 400, "*": 1350}
    test = [{"task": "click", "scenario": s, "n": sizes[s], "auc": a} for s, a in aucs.items()]
    test.append({"task": "purchase", "scenario": "search", "n": 5000, "auc": 0.5})  # another task's rows
    return {"variant": variant, "seed": seed, "seconds": 1.0, "cpu_seconds": 1.0, "best_epoch": 1,
            "epochs_run": 2, "test": test}


def test_the_columns_are_the_largest_scenarios_of_the_task():
    runs = [_run("plain", s, {"home": 0.7, "search": 0.6, "cart": 0.65, "*": 0.68}) for s in (0, 1)]
    assert largest_scenarios(runs, "click") == ["home", "cart", "search"]
    assert largest_scenarios(runs, "click", k=2) == ["home", "cart"]
    text = sweep_markdown(runs, "click")
    head = text.splitlines()[0]
    assert head.startswith("| variant | seeds | scenario home | scenario cart | scenario search | all scenarios |")
    assert "tab" not in text
    assert "| plain | 2 | 0.7000 ± 0.0000 | 0.6500 ± 0.0000 | 0.6000 ± 0.0000 | 0.6800 ± 0.0000 |" in text
