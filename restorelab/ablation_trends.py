"""The SRCNN paper's trend behind each ablation (Dong et al., TPAMI 2016, Sec. 4) and whether a sweep's runs
reproduce it: one sentence per ablation under its table in ``restorelab report``, from the final validation PSNR
of each setting. A sweep named ``srcnn_<ablation>`` or ``srcnn_<ablation>_cpu`` (sweeps/) has a trend here."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

NET = "model.init_args.net.init_args"
# "about as good" and "not clearly better": a gap within this many dB, a tenth of the filter-count table's
TIE_DB = 0.1


@dataclass(frozen=True)
class Trend:
    claim: str  # the paper's finding, as the report states it
    settings: tuple[str, ...]  # labels of the settings the check reads, in the sweep's grid order
    check: Callable[[dict[str, float]], tuple[bool, str]]  # finals by label -> (reproduced, the numbers said)


def _increasing(finals: dict[str, float], labels: Sequence[str]) -> tuple[bool, str]:
    values = [round(finals[k], 2) for k in labels]  # as the table shows them: a gap under 0.01 dB is a tie
    said = " < ".join(f"{k} {v:.2f}" for k, v in zip(labels, values))
    ok = all(a < b for a, b in zip(values, values[1:]))
    return ok, said if ok else " vs ".join(f"{k} {v:.2f}" for k, v in zip(labels, values))


def _deeper_not_clearly_better(finals: dict[str, float]) -> tuple[bool, str]:
    pairs = [("9-1-5", "9-1-1-5"), ("9-3-5", "9-3-3-5"), ("9-1-1-5", "9-1-1-1-5")]
    gains = [(a, b, finals[b] - finals[a]) for a, b in pairs]
    said = "; ".join(f"{b} − {a} = {g:+.2f} dB" for a, b, g in gains)
    return all(g < TIE_DB for _, _, g in gains), said


def _rgb_as_good_as_y(finals: dict[str, float]) -> tuple[bool, str]:
    gap = finals["RGB"] - finals["Y"]
    return abs(gap) <= TIE_DB, f"RGB − Y = {gap:+.2f} dB on Y"


TRENDS = {
    "srcnn_filters": Trend("wider is better (n1/n2 = 128/64 > 64/32 > 32/16)", ("32/16", "64/32", "128/64"),
                           lambda f: _increasing(f, ("32/16", "64/32", "128/64"))),
    "srcnn_filter_sizes": Trend("a larger mapping filter f2 is better (9-5-5 > 9-3-5 > 9-1-5)",
                                ("9-1-5", "9-3-5", "9-5-5"), lambda f: _increasing(f, ("9-1-5", "9-3-5", "9-5-5"))),
    "srcnn_depth": Trend(f"a fourth (or fifth) layer is not clearly better (each deeper net within {TIE_DB} dB "
                         "of, or below, the shallower one)", ("9-1-5", "9-1-1-5", "9-1-1-1-5", "9-3-5", "9-3-3-5"),
                         _deeper_not_clearly_better),
    "srcnn_channels": Trend(f"training on RGB is about as good on Y as training on Y alone (within {TIE_DB} dB)",
                            ("Y", "RGB"), _rgb_as_good_as_y),
    "srcnn_train_set": Trend("more training data is better (T91 + the bundled photos > T91)",
                             ("T91", "T91 + photos"), lambda f: _increasing(f, ("T91", "T91 + photos"))),
}


def trend_for(sweep_name: str) -> Trend | None:
    return TRENDS.get(sweep_name.removesuffix("_cpu"))


def setting_of(params: dict) -> str | None:
    """The trend's label of a trial's parameters: its kernel sizes (and filter counts), colour space or training
    set."""
    net = dict(params.get(NET) or {})
    net.update({k.removeprefix(f"{NET}."): v for k, v in params.items() if k.startswith(f"{NET}.")})
    if "config" in params:  # the channels ablation: an inline config
        import yaml

        channels = (yaml.safe_load(params["config"]).get("data") or {}).get("init_args", {}).get("channels")
        return {"y": "Y", "rgb": "RGB"}.get(channels)
    if "data.init_args.train" in params:
        return "T91" if params["data.init_args.train"] == ["benchmark:T91"] else "T91 + photos"
    if "filters" in net and f"{NET}.filters" in params:
        return "/".join(map(str, net["filters"]))
    if "kernel_sizes" in net:
        return "-".join(map(str, net["kernel_sizes"]))
    return None


def verdict(sweep_name: str, runs: Sequence) -> str | None:
    """The sentence under the sweep's table: the claim, whether the final PSNRs reproduce it, and those numbers
    (None for a sweep without a trend; a sentence saying which settings are missing where runs lack)."""
    trend = trend_for(sweep_name)
    if trend is None:
        return None
    finals = {}
    for run in runs:
        label = setting_of(run.params)
        if label is not None and run.final is not None:
            finals.setdefault(label, run.final)
    if missing := [s for s in trend.settings if s not in finals]:
        return f"Paper: {trend.claim}. Not judged: no final PSNR for {', '.join(missing)}."
    ok, said = trend.check(finals)
    return f"Paper: {trend.claim}. {'Reproduced' if ok else 'Not reproduced'} at this budget: {said}."
