"""What a data source held: counts, sizes, skipped files and why, warnings and errors.

Every command builds one before training; `semigen data check` prints it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


class DataError(ValueError):
    """The data cannot be trained on; the message lists every error found."""


@dataclass
class DataReport:
    source: str
    classes: list[str] = field(default_factory=list)
    labeled_per_class: dict[str, int] = field(default_factory=dict)
    test_per_class: dict[str, int] = field(default_factory=dict)
    unlabeled: int = 0
    held_out_truth: bool = False  # true labels of the unlabeled images are known (built-ins)
    sizes_found: Counter = field(default_factory=Counter)  # "HxW" -> files
    channels_found: Counter = field(default_factory=Counter)  # "gray"/"rgb" -> files
    shape: tuple[int, int, int] | None = None  # (H, W, C) every image was normalised to
    resized: int = 0  # images whose size or channels changed
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # labels given after the split (`added`): file, added, corrected, not_found
    added_labels: dict | None = None

    @property
    def ok(self) -> bool:
        return not self.errors

    def raise_if_errors(self) -> None:
        if self.errors:
            raise DataError(f"{self.source}: cannot train on this data:\n  "
                            + "\n  ".join(self.errors))

    def to_dict(self) -> dict:
        return {
            "source": self.source, "classes": self.classes,
            "labeled_per_class": self.labeled_per_class, "test_per_class": self.test_per_class,
            "unlabeled": self.unlabeled, "held_out_truth": self.held_out_truth,
            "sizes_found": dict(self.sizes_found), "channels_found": dict(self.channels_found),
            "shape": list(self.shape) if self.shape else None, "resized": self.resized,
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
            "warnings": self.warnings, "errors": self.errors, "added_labels": self.added_labels,
        }

    def format(self, max_listed: int = 20) -> str:
        lines = [f"data: {self.source}"]
        if self.classes:
            width = max(len(c) for c in self.classes)
            lines.append(f"  classes: {len(self.classes)}")
            has_test = bool(self.test_per_class)
            lines.append(f"    {'class':<{width}}  labeled" + ("     test" if has_test else ""))
            for c in self.classes:
                row = f"    {c:<{width}}  {self.labeled_per_class.get(c, 0):>7}"
                if has_test:
                    row += f"  {self.test_per_class.get(c, 0):>7}"
                lines.append(row)
        lines.append(f"  labeled: {sum(self.labeled_per_class.values())}   unlabeled: "
                     f"{self.unlabeled}" + ("  (true labels held out for evaluation)"
                                            if self.held_out_truth else "")
                     + f"   test: {sum(self.test_per_class.values())}")
        if self.added_labels:
            a = self.added_labels
            lines.append(f"  labels added: {a['added']} (and {a['corrected']} corrected) from "
                         f"{a['file']}")
        if self.sizes_found:
            sizes = ", ".join(f"{s} ({n})" for s, n in self.sizes_found.most_common(8))
            more = len(self.sizes_found) - 8
            lines.append(f"  sizes found: {sizes}" + (f", {more} more" if more > 0 else ""))
            chans = ", ".join(f"{c} ({n})" for c, n in self.channels_found.most_common())
            lines.append(f"  channels found: {chans}")
        if self.shape:
            h, w, c = self.shape
            lines.append(f"  used as: {h}x{w} {'gray' if c == 1 else 'rgb'}"
                         + (f"  ({self.resized} images converted)" if self.resized else ""))
        if self.skipped:
            lines.append(f"  skipped files: {len(self.skipped)}")
            for path, reason in self.skipped[:max_listed]:
                lines.append(f"    {path}: {reason}")
            if len(self.skipped) > max_listed:
                lines.append(f"    ... {len(self.skipped) - max_listed} more "
                             "(all are listed in the run's data_report.json)")
        for w in self.warnings:
            lines.append(f"  warning: {w}")
        for e in self.errors:
            lines.append(f"  ERROR: {e}")
        lines.append("  ok" if self.ok else f"  {len(self.errors)} error(s): cannot train")
        return "\n".join(lines)
