"""The accuracy guard's vocabulary, shared by the quantize stage and the INC tuner: embedding
cosine to the fp32 model, one-line score summaries and the error naming the best reached."""

from __future__ import annotations

import numpy as np

from mmdeploy.errors import CheckFailed


class AccuracyBudgetError(CheckFailed):
    """The accuracy budget cannot be met by any choice of nodes kept in float: a check that ran
    and failed (exit 1)."""


def cosine(ref: np.ndarray, got: np.ndarray) -> float:
    return float(np.mean(_row_cosines(ref, got)))


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


def tail_floor(budget: float) -> float:
    """The cosine every judged sample must keep under a mean-cosine ``budget``: twice the mean's
    allowance (0.98 under 0.99), so a few inputs cannot be lost behind a good mean."""
    return 1.0 - 2.0 * (1.0 - budget)


def embedding_cosines(ref_runner, runner, feeds, refs: list | None = None) -> tuple[float, float]:
    """(mean, worst sample) cosine of each consumed float output (:func:`consumed_outputs`) to the
    fp32 model's, the worst output reported.  Token-level outputs are compared token by token
    over the real positions (padding masked out), a sample's score being its tokens' mean;
    sample-level ones sample by sample (a feed may hold several samples).  Feeds of different
    sequence lengths never need to be concatenated.  ``refs``: the fp32 model's outputs on
    ``feeds`` when already computed."""
    mean_worst, sample_worst = 1.0, 1.0
    refs = refs if refs is not None else [ref_runner.run(f) for f in feeds]
    gots = [runner.run(f) for f in feeds]
    masks = [f.get("attention_mask") for f in feeds]
    for name in consumed_outputs(refs[0]):
        if refs[0][name].dtype.kind != "f":
            continue
        rows = [(_tokens(r[name][i:i + 1], None if m is None else m[i:i + 1]),
                 _tokens(g[name][i:i + 1], None if m is None else m[i:i + 1]), True)
                for r, g, m in zip(refs, gots, masks) if r[name].ndim == 3 for i in range(len(r[name]))]
        rows += [(r[name], g[name], False) for r, g in zip(refs, gots) if r[name].ndim != 3]
        weights = [len(a) for a, _, _ in rows]
        values = [cosine(a, b) for a, b, _ in rows]
        mean_worst = min(mean_worst, float(np.average(values, weights=weights)))
        per_sample = [v if tokens else _row_cosines(a, b).min() for (a, b, tokens), v in zip(rows, values)]
        sample_worst = min(sample_worst, float(min(per_sample)))
    return mean_worst, sample_worst


def _row_cosines(ref: np.ndarray, got: np.ndarray) -> np.ndarray:
    a = np.asarray(ref, np.float64).reshape(len(ref), -1)
    b = np.asarray(got, np.float64).reshape(len(got), -1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(den > 0, (a * b).sum(1) / np.maximum(den, 1e-30), 1.0)


def brief(score: dict) -> dict:
    return {k: v for k, v in score.items()
            if k in ("value", "drop", "ok", "cosine", "min_cosine", "agreement", "ci95")}


def describe(score: dict, evaluator) -> str:
    if evaluator.metric == "task":
        return f"{evaluator.task_name} {score['value']:.2f} % (drop {score['drop']:.2f} pp)"
    return f"cosine {score['value']:.5f}" + _worst(score)


def _worst(score: dict) -> str:
    worst = score.get("min_cosine")
    return f" (worst sample {min(worst.values()):.5f})" if worst else ""


def reachable_budget(score: dict) -> float:
    """The largest cosine budget ``score`` holds: its mean, and its worst sample above the tail
    floor (:func:`tail_floor`)."""
    worst = min((score.get("min_cosine") or {}).values(), default=1.0)
    return min(score["value"], (1.0 + worst) / 2.0)


def budget_error(evaluator, best: dict, float_blocks: list) -> AccuracyBudgetError:
    kept = f" with {len(float_blocks)} block(s) kept in float" if float_blocks else ""
    if evaluator.metric == "task":
        reached = f"best reached: drop {best['drop']:.2f} pp ({best['value']:.2f} % vs fp32 {evaluator.baseline:.2f} %){kept}"
    else:
        reached = f"best reached: cosine {best['value']:.5f}{_worst(best)}{kept}"
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
        fixes.append(f"pass --accuracy-budget {math.floor(reachable_budget(best) * 1e4) / 1e4:g} "
                     f"(the cosine {who} reached)")
    fixes.append("or use --fp16")
    return "; ".join(fixes)
