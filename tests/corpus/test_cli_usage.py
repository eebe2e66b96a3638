"""Corpus: command lines as users mistype them. Usage errors exit 2 with a "did you mean",
never `internal error`; `--json` failures print a JSON error object; help is readable."""

import json

import pytest


def _usage_error(result, *fragments):
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr
    last = [line for line in result.stderr.splitlines() if line.strip()][-1]
    assert last.startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in last, last
    return last


@pytest.mark.parametrize("args,fragments", [
    (["conver", "demo:tiny-clip"], ["No such command 'conver'", "Did you mean 'convert'"]),
    (["convert", "demo:tiny-clip", "--ouput", "x"], ["--ouput", "did you mean --output"]),
    (["convert", "demo:tiny-clip"], ["Missing option '--output'", "pass --output DIR"]),
    (["convert", "demo:tiny-clip", "-o", "x", "--opset", "abc"], ["'--opset'", "integer"]),
    (["bench", "x", "--max-p50-ms", "fast"], ["'--max-p50-ms'", "number"]),
    (["inspect"], ["Missing argument 'ARTIFACT'"]),
    (["quantize", "x", "-o", "y", "--int8", "--calib-limt", "3"], ["did you mean --calib-limit"]),
    (["split", "x", "--bandwith", "1Mbps"], ["did you mean --bandwidth"]),
    (["zeroshot", "x", "--label", "cat,dog", "-o", "y"], ["did you mean --labels"]),
    (["zeroshot", "x", "--labels", "cat,dog"], ["Missing option '--output'", "pass --output DIR"]),
    (["classify", "x"], ["Missing argument 'IMAGES'"]),
    (["classify", "x", "img.png", "--top", "many"], ["'--top'", "integer"]),
    (["bake", "x", "--ouput", "y"], ["did you mean --output"]),
])
def test_usage_errors(cli, tmp_path, args, fragments):
    _usage_error(cli(*args), *fragments)
    assert not (tmp_path / "x").exists()


def test_usage_error_in_a_new_process(cli_subprocess):
    """The real entry point, as a user runs it."""
    _usage_error(cli_subprocess("conver", "demo:tiny-clip"), "Did you mean 'convert'")


def test_no_arguments_prints_help_exit_2(cli):
    result = cli()
    assert result.returncode == 2 and "convert" in result.stdout and "internal error" not in result.stderr


@pytest.mark.parametrize("args,kind,code", [
    (["convert", "/definitely/not/here", "-o", "out", "--json"], "InputError", 2),
    (["conver", "x", "--json"], "UsageError", 2),
    (["convert", "x", "--json"], "UsageError", 2),
])
def test_json_error_object(cli, args, kind, code):
    result = cli(*args)
    assert result.returncode == code
    error = json.loads(result.stdout)["error"]
    assert error["type"] == kind and error["exit_code"] == code and error["message"]


def _commands():
    from mmdeploy.cli import get_command

    return get_command().commands


def test_every_option_has_help_and_a_readable_metavar():
    problems = []
    for name, command in _commands().items():
        if not (command.help or command.short_help):
            problems.append(f"{name}: no help")
        for param in command.params:
            if not getattr(param, "help", None):
                problems.append(f"{name} {param.opts}: no help")
            if param.metavar and param.metavar != param.metavar.upper():
                problems.append(f"{name} {param.opts}: metavar {param.metavar!r}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("command", ["convert", "compile", "quantize", "bench", "split", "prune", "inspect",
                                     "zeroshot", "classify", "bake"])
def test_help_shows_no_python_types(cli, command):
    text = cli(command, "--help").stdout
    assert text, command
    for python_type in ("<int>", "<float>", "<path>", "<str>", "<bool>", "list[Path]", "<text>"):
        assert python_type not in text, (command, python_type)


def test_metavars_name_the_kind_of_value(cli):
    text = cli("bench", "--help").stdout
    assert "MS" in text and " N " in text and "PATH" in text
    assert "DIR" in cli("convert", "--help").stdout
