"""The accuracy guard's vocabulary, shared by the quantize stage and the INC tuner: embedding
cosine to the fp32 model, one-line score summaries and the error naming the best reached."""

from __future__ import annotations

import numpy as np

from mmdeploy.errors import CheckFailed


class AccuracyBudgetError(CheckFailed):
    """The accuracy budget cannot be met by any choice of nodes kept in float: a check that ran
    and failed (exit 1)."""


def cosine(ref: np.ndarray, got: np.ndarray) -> float:
    a = np.asarray(ref, np.float64).reshape(len(ref), -1)
    b = np.asarray(got, np.float64).reshape(len(got), -1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.mean(np.where(den > 0, (a * b).sum(1) / np.maximum(den, 1e-30), 1.0)))


def consumed_outputs(names) -> list[str]:
    """The outputs a user consumes, which the guard judges: a sentence-transformers bundle's
    ``sentence_embedding`` (not its token embeddings); otherwise every output but BERT's
    ``pooler_output`` beside ``last_hidden_state`` (a pretraining head sentence encoders never
    use, whose tanh saturates and says nothing of the embedding)."""
    names = list(names)
    if "sentence_embedding" in names:
        return ["sentence_embedding"]
    if "last_hidden_state" in names:
        return [n for n in names if n != "pooler_output"]
    return names


def _tokens(value: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """A token-level output's real positions only (``attention_mask`` == 1), one row each."""
    if mask is not None and value.ndim == 3 and value.shape[:2] == mask.shape:
        return value[mask.astype(bool)]
    return value


def embedding_cosine(ref_runner, runner, feeds) -> float:
    """Mean cosine of each consumed float output (:func:`consumed_outputs`) to the fp32 model's,
    the worst output reported.  Token-level outputs are compared token by token over the real
    positions (padding masked out); sample-level ones sample by sample.  Cosines are averaged
    over the feeds, so feeds of different sequence lengths never need to be concatenated."""
    worst = 1.0
    refs, gots = [ref_runner.run(f) for f in feeds], [runner.run(f) for f in feeds]
    masks = [f.get("attention_mask") for f in feeds]
    for name in consumed_outputs(refs[0]):
        if refs[0][name].dtype.kind != "f":
            continue
        rows = [(_tokens(r[name], m), _tokens(g[name], m)) for r, g, m in zip(refs, gots, masks)]
        weights = [len(a) for a, _ in rows]
        values = [cosine(a, b) for a, b in rows]
        worst = min(worst, float(np.average(values, weights=weights)))
    return worst


def brief(score: dict) -> dict:
    return {k: v for k, v in score.items() if k in ("value", "drop", "ok", "cosine", "agreement", "ci95")}


def describe(score: dict, evaluator) -> str:
    if evaluator.metric == "task":
        return f"{evaluator.task_name} {score['value']:.2f} % (drop {score['drop']:.2f} pp)"
    return f"cosine {score['value']:.5f}"


def budget_error(evaluator, best: dict, float_blocks: list) -> AccuracyBudgetError:
    kept = f" with {len(float_blocks)} block(s) kept in float" if float_blocks else ""
    if evaluator.metric == "task":
        reached = f"best reached: drop {best['drop']:.2f} pp ({best['value']:.2f} % vs fp32 {evaluator.baseline:.2f} %){kept}"
    else:
        reached = f"best reached: cosine {best['value']:.5f}{kept}"
    error = AccuracyBudgetError(
        f"accuracy budget {evaluator.describe()} cannot be met; {reached}; nothing written",
        remedy(evaluator, best, float_blocks))
    error.best = best  # the score reached (quantize --method auto names it per candidate)
    error.float_blocks = float_blocks
    return error


def remedy(evaluator, best: dict, float_blocks: list, who: str = "this run") -> str:
    """What to rerun with: the options that would have let this run pass, most direct first
    (``who`` reached ``best``: "this run", or a ``--method auto`` candidate)."""
    import math

    options = getattr(evaluator, "options", None)
    fixes = []
    if options is not None and not options.accuracy_aware:
        fixes.append("drop --no-accuracy-aware (sensitive blocks then stay float)")
    elif options is not None and len(float_blocks) >= options.max_float_blocks:
        fixes.append(f"raise --max-float-blocks above {options.max_float_blocks}")
    if evaluator.metric == "task":
        fixes.append(f"pass --accuracy-budget {math.ceil(max(best['drop'], 0) * 100) / 100 + 0.01:g} "
                     f"(the drop {who} reached)")
    else:
        fixes.append(f"pass --accuracy-budget {math.floor(best['value'] * 1e4) / 1e4:g} "
                     f"(the cosine {who} reached)")
    fixes.append("or use --fp16")
    return "; ".join(fixes)
