"""The self-supervised views' two data-dependent choices, judged on what a user has: the labeled
images held out in turn (the representation stage's own estimate of its labels' accuracy).

- grey inversion: whether views of grey images are also inverted (dark on light and light on
  dark alike), as views of colour images are;
- the colour rule (`represent.colour_tells_classes_apart`): colour (brightness, for grey
  images) is a nuisance of the views unless it tells the labeled classes apart; the variant
  keeps it always, which tells whether the rule's "nuisance" was right for a data set.

    python benchmarks/view_choices.py --data digits --preset demo --seeds 0 1 2
    python benchmarks/view_choices.py --data 'runs/shapes{seed}' --preset quick --seeds 0 1 2

Each (variant, seed) runs the label stage's representation and its label spreading (one
fine-tuning step, no calibration: only the representation's figures are read). The held-out
estimate chooses; the test accuracy of the features' labels is shown, never used to choose."""

from __future__ import annotations

import statistics

import common
import kornia.augmentation as K

from semigen import api
from semigen.config import make_config
from semigen.labeling import represent
from semigen.run import read_metrics

ORIGINAL_VIEWS = represent.contrastive_views
ORIGINAL_RULE = represent.colour_tells_classes_apart


def inverted_grey_views(shape, hflip, rotate, colour=True, crop_scale=0.4):
    views = ORIGINAL_VIEWS(shape, hflip, rotate, colour, crop_scale)
    if colour and shape[2] == 1:
        return K.AugmentationSequential(*views.children(), K.RandomInvert(p=0.5))
    return views


VARIANTS = {  # name: (views, colour rule)
    "current": (ORIGINAL_VIEWS, ORIGINAL_RULE),
    "grey-inverted": (inverted_grey_views, ORIGINAL_RULE),
    "colour-kept": (ORIGINAL_VIEWS, lambda images, labels: True),
}


def run_one(args, name: str, seed: int) -> dict:
    represent.contrastive_views, represent.colour_tells_classes_apart = VARIANTS[name]
    out = f"{args.out}/{name}-seed{seed}"
    cfg = make_config(data=args.data.format(seed=seed), out=out, preset=args.preset,
                      data__labels_per_class=args.labels_per_class, data__split_seed=seed,
                      runtime__seed=seed, label__steps=1, label__calibration_steps=0,
                      run__progress=False, run__resume="none",
                      **{k.replace(".", "__"): v for k, v in args.set.items()})
    api.label_run(cfg)
    found = read_metrics(out)["represent"]
    return {"variant": name, "seed": seed, "estimate": found.get("estimated_accuracy"),
            "features_test_accuracy": found.get("features_test_accuracy")}


def main() -> None:
    p = common.parser(__doc__, "runs/bench-views")
    p.add_argument("--data", default="digits")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS))
    args = common.parse(p)
    rows = []
    for seed in args.seeds:
        for name in args.variants:
            rows.append(run_one(args, name, seed))
            print(rows[-1], flush=True)
    lines = ["| variant | held-out estimate (chooses) | features' test accuracy (shown) |",
             "| --- | ---: | ---: |"]
    def mean(got: list[dict], key: str) -> str:
        values = [r[key] for r in got if r[key] is not None]
        if not values:
            return "–"
        spread = f" ± {statistics.stdev(values):.1%}" if len(values) > 1 else ""
        return f"{statistics.mean(values):.1%}{spread}"
    for name in args.variants:
        got = [r for r in rows if r["variant"] == name]
        lines.append(f"| {name} | {mean(got, 'estimate')} | "
                     f"{mean(got, 'features_test_accuracy')} |")
    common.save(args.out, rows, "\n".join(lines))


if __name__ == "__main__":
    main()
