"""``inc``: Intel Neural Compressor's accuracy-aware tuning driving ONNX Runtime QDQ.

neural-compressor 3.x quantizes PyTorch/TensorFlow models only (its ONNX adaptor moved out of
the package).  What it offers for any framework is the tuner: a ``TuningConfig`` (candidate
configs, ``tolerable_loss``, ``max_trials``), a ``ConfigLoader`` and a ``TuningMonitor`` that
keeps the trial history and stops at the first trial within the loss.  Here the candidates are
ONNX Runtime static QDQ configs: first the calibration methods, then (if none is within the
loss) the most sensitive blocks kept in float, one more per trial.  INC decides when to stop
and which trial is best.
"""

from __future__ import annotations

from mmdeploy.errors import BackendUnavailable


def _inc():
    try:
        from neural_compressor.common.base_config import BaseConfig
        from neural_compressor.common.base_tuning import TuningConfig, init_tuning
    except ImportError as exc:
        raise BackendUnavailable(f"--method inc needs neural-compressor ({exc.name} is missing)",
                                 'pip install "mmdeploy[intel]" (neural-compressor[pt])') from None
    return BaseConfig, TuningConfig, init_tuning


def _config_class():
    BaseConfig, _, _ = _inc()

    class OrtQdqConfig(BaseConfig):
        """One trial: an ORT static QDQ calibration method and the blocks kept in float."""

        name = "ort_qdq"
        params_list = ["calibrate_method", "float_count"]  # scalars: INC expands list params

        def __init__(self, calibrate_method: str = "minmax", float_count: int = 0, white_list=None):
            super().__init__(white_list=white_list)
            self.calibrate_method = calibrate_method
            self.float_count = float_count  # the first N blocks of the sensitivity ranking stay float
            self._post_init()

        @classmethod
        def register_supported_configs(cls):
            return []

        @staticmethod
        def get_model_info(model):
            return []

        @classmethod
        def get_config_set_for_tuning(cls):
            return cls()

    return OrtQdqConfig


def inc_accuracy_loop(comps, evaluator, options, quantize_component, log):
    """Tune with INC; returns (steps, float_blocks) like the default loop, or raises the budget error."""
    import logging

    from mmdeploy.passes.accuracy import brief, budget_error, describe
    from mmdeploy.passes.quantize import quantizable_groups

    _, TuningConfig, init_tuning = _inc()
    Config = _config_class()
    logging.getLogger("neural_compressor").setLevel(logging.ERROR)
    # INC's loss is relative to the fp32 baseline; express the budget that way
    if evaluator.metric == "task":
        baseline, tolerable = evaluator.baseline, evaluator.budget / max(evaluator.baseline, 1e-9)
    else:
        baseline, tolerable = 1.0, 1.0 - evaluator.budget
    base_excluded = {c.name: list(c.excluded) for c in comps}
    by_name = {c.name: c for c in comps}
    steps, scores = [], {}
    ranking: list[tuple[float, str, str]] = []  # (gain, component, block), most sensitive first

    def trial(config) -> dict:
        runners = {}
        for comp in comps:
            comp.excluded = base_excluded[comp.name] + [n for _, name, group in ranking[: config.float_count]
                                                        if name == comp.name for n in comp.groups[group]]
            opts = options.model_copy(update={"calibrate_method": config.calibrate_method})
            runners[comp.name] = quantize_component(comp, opts, "ort-static", "q")[1]
        score = evaluator.score(runners)
        steps.append({"trial": len(steps) + 1, "calibrate_method": config.calibrate_method,
                      "float_blocks": [f"{n}:{g}" for _, n, g in ranking[: config.float_count]], **brief(score)})
        log(f"inc trial {len(steps)}: {config.calibrate_method}, {config.float_count} float block(s) -> "
            f"{describe(score, evaluator)}")
        return score

    def tune(configs):
        tuning = TuningConfig(config_set=configs, tolerable_loss=tolerable, max_trials=len(configs))
        loader, _, monitor = init_tuning(tuning)
        monitor.set_baseline(baseline)
        for config in loader:
            score = trial(config)
            scores[(config.calibrate_method, config.float_count)] = score
            monitor.add_trial_result(monitor.trial_cnt, score["value"], config)
            if monitor.need_stop():
                break
        best = monitor.get_best_quant_config()
        return best, scores[(best.calibrate_method, best.float_count)]

    best, score = tune([Config(m) for m in ("minmax", "entropy", "percentile")])
    float_blocks: list[dict] = []
    if not score["ok"] and options.accuracy_aware:
        for comp in comps:
            comp.groups = dict(quantizable_groups(comp.base_model))
            comp.excluded = base_excluded[comp.name]
            opts = options.model_copy(update={"calibrate_method": best.calibrate_method})
            base = evaluator.judge(comp.name, quantize_component(comp, opts, "ort-static", "probe")[1])[0]
            for group, nodes in comp.groups.items():
                comp.excluded = base_excluded[comp.name] + nodes
                r = quantize_component(comp, opts, "ort-static", "probe")[1]
                ranking.append((evaluator.judge(comp.name, r)[0] - base, comp.name, group))
        ranking.sort(key=lambda t: -t[0])
        del ranking[options.max_float_blocks:]
        configs = [Config(best.calibrate_method, k) for k in range(1, len(ranking) + 1)]
        if configs:
            prev = score["value"]
            best, score = tune(configs)
            for k, (gain, name, group) in enumerate(ranking[: best.float_count], start=1):
                after = scores[(best.calibrate_method, k)]["value"]
                float_blocks.append({"component": name, "block": group, "nodes": by_name[name].groups[group],
                                     "sensitivity_gain": gain, "metric_before": prev, "metric_after": after})
                prev = after
    # leave the components quantized with the best trial
    for comp in comps:
        comp.excluded = base_excluded[comp.name] + [n for _, name, group in ranking[: best.float_count]
                                                    if name == comp.name for n in comp.groups[group]]
        quantize_component(comp, options.model_copy(update={"calibrate_method": best.calibrate_method}),
                           "ort-static", "q")
    if not score["ok"]:
        raise budget_error(evaluator, score, float_blocks)
    steps.append({"float_block": None, "component": None, "chosen": True, **brief(score)})
    return steps, float_blocks
