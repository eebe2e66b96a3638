import json
from pathlib import Path

import pytest

from mmdeploy.cli import main
from mmdeploy.errors import InputError
from mmdeploy.stages.recipe import load_recipe, load_yaml, plan

REPO = Path(__file__).resolve().parents[1]


def cli(*args) -> int:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    return exc.value.code


def write(tmp_path, text, name="r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_yaml_line_marks(tmp_path):
    doc = load_yaml(write(tmp_path, "a: 1\nb:\n  - x: 2\n  - y: 3\n"))
    assert doc.data == {"a": 1, "b": [{"x": 2}, {"y": 3}]}
    assert doc.line(("b", 1, "y")) == 4 and doc.line(("a",)) == 1 and doc.line(("b", 0, "zz")) == 3


def test_pass_forms_and_plan(tmp_path):
    recipe, _ = load_recipe(write(tmp_path, """
name: r
source: demo:tiny-clip
passes:
  - prune: {method: heads, amount: 0.25}
  - simplify
  - {name: quantize, options: {precision: int8}}
targets: [cpu, jetson-orin-nano]
"""))
    assert [(p.name, p.options) for p in recipe.passes] == [
        ("prune", {"method": "heads", "amount": 0.25}), ("simplify", {}), ("quantize", {"precision": "int8"})]
    steps = plan(recipe)
    assert steps[0].startswith("prune") and steps[1].startswith("convert") and "jetson-orin-nano" in steps[-1]


BAD = {
    "malformed": ("name: r\nsource: x\ntargets: [cpu\n", r"r.yaml:4: malformed recipe"),
    "unknown pass": ("name: r\nsource: x\npasses:\n  - quantize: {}\n  - distill: {}\n", r"r.yaml:5: unknown pass 'distill'.*valid passes: prune"),
    "unknown target": ("name: r\nsource: x\ntargets:\n  - cpu\n  - jetson-tx9\n", r"r.yaml:5: unknown target 'jetson-tx9'.*rpi5"),
    "unknown key": ("name: r\nsource: x\nbench:\n  iters: 3\n  warmpu: 3\n", r"r.yaml:5: invalid recipe: bench.warmpu: unknown key"),
    "bad type": ("name: r\nsource: x\nbench: {iters: lots}\n", r"r.yaml:3: invalid recipe: bench.iters"),
    "missing": ("name: r\n", r"r.yaml:1: invalid recipe: source: Field required"),
    "bad budget": ("name: r\nsource: x\nbudgets:\n  - {max_p50_ms: 3}\n  - {max_p5O_ms: 3}\n", r"r.yaml:5: invalid recipe budget: max_p5O_ms"),
    "not a mapping": ("- a\n", r"r.yaml:1: a recipe is a mapping"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_recipe_names_file_and_line(tmp_path, case):
    import re

    text, pattern = BAD[case]
    with pytest.raises(InputError) as exc:
        load_recipe(write(tmp_path, text))
    assert re.search(pattern, exc.value.one_line()), exc.value.one_line()


def test_bad_recipe_cli_exit_2_one_line(tmp_path, capsys):
    assert cli("run", write(tmp_path, "name: r\nsource: x\npasses: [distill]\n"), "--output", tmp_path / "o") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "r.yaml:3: unknown pass 'distill'" in err
    assert not (tmp_path / "o").exists()
    assert cli("run", tmp_path / "missing.yaml", "--output", tmp_path / "o") == 2


def test_shipped_recipes_are_valid():
    recipes = sorted((REPO / "recipes").glob("*.yaml"))
    assert len(recipes) >= 5
    for path in recipes:
        recipe, _ = load_recipe(path)
        assert recipe.targets and plan(recipe)


@pytest.mark.slow
def test_run_recipe_end_to_end_with_budgets(tiny_clip_dir, tmp_path, capsys):
    recipe = write(tmp_path, f"""
name: tiny
source: {tiny_clip_dir}
passes: [simplify]
targets: [cpu]
bench: {{iters: 20, warmup: 2, accuracy: true}}
budgets:
  - {{component: vision, target: cpu, max_p50_ms: 10000, max_accuracy_drop_pts: 0.5}}
""")
    assert cli("run", recipe, "--output", tmp_path / "out", "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["passed"] and summary["targets"]["cpu"]["passed"]
    out = tmp_path / "out"
    assert (out / "fp32" / "vision" / "model.onnx").is_file() and (out / "run.json").is_file()
    rep = out / "bench" / "cpu"
    assert {p.name for p in rep.iterdir()} >= {"report.md", "report.html", "results.json", "junit.xml"}
    # the same run with an impossible budget: exit 1, output kept with the failing JUnit
    recipe.write_text(recipe.read_text().replace("max_p50_ms: 10000", "max_p50_ms: 0.000001"))
    assert cli("run", recipe, "--output", tmp_path / "out2") == 1
    assert "budget(s) failed" in capsys.readouterr().err
    assert "<failure" in (tmp_path / "out2" / "bench" / "cpu" / "junit.xml").read_text()


@pytest.mark.slow
def test_run_recipe_with_prune_before_convert(tiny_clip_dir, tmp_path, capsys):
    recipe = write(tmp_path, f"""
name: pruned
source: {tiny_clip_dir}
passes:
  - prune: {{method: mlp, amount: 0.25, measure_latency: false}}
targets: [cpu]
bench: {{iters: 5, warmup: 1}}
""")
    assert cli("run", recipe, "--output", tmp_path / "out", "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    assert [s["step"] for s in summary["steps"]] == ["prune", "convert", "target cpu"]
    assert (tmp_path / "out" / "pruned" / "config.json").is_file()


def test_unknown_pass_option_names_the_line(tiny_clip_dir, tmp_path, capsys):
    recipe = write(tmp_path, f"name: r\nsource: {tiny_clip_dir}\npasses:\n  - prune: {{metod: mlp}}\n")
    assert cli("run", recipe, "--output", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "r.yaml:4: unknown prune option 'metod'" in err and not (tmp_path / "out").exists()
