"""What fine-tuning EfficientNet-Lite0 can reach on a folder set, outside semigen's stage: the
network semigen fine-tunes (`nets.LiteFeatures`, its first 8 blocks frozen) with the frozen
blocks' maps computed once, so that every label can be used within minutes on a CPU; the rest
and a new head trained with cross-entropy on the labeled images (--mode labels) or on every
training image with its true label from ``<root>.truth.csv`` (--mode all), flips of the maps
as the only augmentation, for --seconds; then the test accuracy. --src 64 reads the images at
64 px first (what a run trains on) and enlarges them to --side.

    python benchmarks/lite_ceiling.py /work/data/sets/elpv-l10 --mode all --side 160 --src 64
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from semigen.labeling import nets


def read(paths: list[Path], side: int, src: int) -> np.ndarray:
    """Grey images, each at `src` px first where given, then at `side` px."""
    out = []
    for path in paths:
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if src:
            image = cv2.resize(image, (src, src), interpolation=cv2.INTER_AREA)
        out.append(cv2.resize(image, (side, side), interpolation=cv2.INTER_LINEAR))
    return np.stack(out)[..., None]


def listing(root: Path, part: str, classes: list[str]) -> tuple[list[Path], np.ndarray]:
    found = [(p, c) for c, name in enumerate(classes)
             for p in sorted((root / part / name).iterdir())]
    return [p for p, _ in found], np.array([c for _, c in found])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root", type=Path)
    p.add_argument("--mode", choices=("labels", "all"), default="labels")
    p.add_argument("--side", type=int, default=160)
    p.add_argument("--src", type=int, default=0)
    p.add_argument("--seconds", type=float, default=200)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.01)
    args = p.parse_args()
    torch.manual_seed(0)
    classes = sorted(d.name for d in (args.root / "labeled").iterdir())
    train_paths, train_labels = listing(args.root, "labeled", classes)
    test_paths, test_labels = listing(args.root, "test", classes)
    if args.mode == "all":
        with open(f"{args.root}.truth.csv", newline="") as f:
            truth = [(args.root / r["path"], classes.index(r["label"])) for r in csv.DictReader(f)]
        train_paths += [p for p, _ in truth]
        train_labels = np.concatenate([train_labels, [c for _, c in truth]])
    features = nets.LiteFeatures("efficientnet-lite0", args.side, nets.LITE_FROZEN_BLOCKS,
                                 nets.lite_weights_file("efficientnet-lite0"))
    head = torch.nn.Linear(features.width, len(classes))

    @torch.no_grad()
    def frozen_maps(paths):
        images = torch.from_numpy(read(paths, args.side, args.src)).permute(0, 3, 1, 2)
        return torch.cat([features.frozen(features.input(images[i:i + 64].float() / 127.5 - 1))
                          for i in range(0, len(images), 64)])

    def logits(maps):
        x = maps
        for block in features.blocks:
            x = block(x)
        return head(features.act(features.head_bn(features.head_conv(x))).mean((2, 3)))

    start = time.time()
    train_maps, test_maps = frozen_maps(train_paths), frozen_maps(test_paths)
    print(f"frozen maps of {len(train_maps) + len(test_maps)} images: "
          f"{time.time() - start:.0f} s", flush=True)
    trained = [*features.blocks.parameters(), *features.head_conv.parameters(),
               *features.head_bn.parameters(), *head.parameters()]
    optimizer = torch.optim.SGD(trained, lr=args.lr, momentum=0.9, nesterov=True,
                                weight_decay=5e-4)
    target = torch.from_numpy(train_labels)
    start, steps = time.time(), 0
    while time.time() - start < args.seconds:
        pick = torch.randint(len(train_maps), (args.batch_size,))
        x = train_maps[pick]
        x = x.flip(3) if torch.rand(1) < 0.5 else x
        x = x.flip(2) if torch.rand(1) < 0.5 else x
        loss = F.cross_entropy(logits(x), target[pick])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        steps += 1
    features.eval()
    with torch.no_grad():
        guess = torch.cat([logits(test_maps[i:i + 128]) for i in range(0, len(test_maps), 128)])
    right = float((guess.argmax(1).numpy() == test_labels).mean())
    print(f"{args.mode}, {len(train_maps)} training images, side {args.side}, src "
          f"{args.src or 'files'}: {steps} steps in {args.seconds:.0f} s, test {right:.1%}")


if __name__ == "__main__":
    main()
