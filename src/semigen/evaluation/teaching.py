"""What generated images teach: the classification accuracy score (CAS; Ravuri & Vinyals
2019), a classifier trained on generated images alone and scored on real images it never saw.

FID and class consistency say whether images look like their class; CAS says whether a
classifier learns the classes from them, which is what a joint round needs. Here the
classifier is a linear probe (logistic regression) on a frozen feature network, the run's
self-supervised representation: seconds on a CPU, so a round can score several candidate sets
of images and keep the one that teaches most, and the real images it is scored on can be the
few labeled ones (the generator learned from them, the probe did not)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression

from .. import checkpoint
from ..generation import from_checkpoint, generate_per_class
from ..labeling import nets, represent
from ..run import Run


def linear_probe(features: torch.Tensor, labels: np.ndarray) -> LogisticRegression:
    """Logistic regression on L2-normalised features."""
    x = F.normalize(features.float(), dim=1).numpy()
    return LogisticRegression(max_iter=1000, C=1.0).fit(x, labels)


def classification_accuracy_score(generated: torch.Tensor, generated_labels: np.ndarray,
                                  real: torch.Tensor, real_labels: np.ndarray) -> dict:
    """How a linear probe trained on the `generated` images' features alone does on the `real`
    images' features: ``cas``, the share it gives their true class, and ``cas_nll``, the mean
    negative log-probability of the true class (it breaks ties between candidate image sets
    when the real images are few). None for both where the generated images hold fewer than
    two classes (no probe can be trained) or there is no real image."""
    if len(np.unique(generated_labels)) < 2 or not len(real_labels):
        return {"cas": None, "cas_nll": None}
    probe = linear_probe(generated, generated_labels)
    probs = np.zeros((len(real_labels), int(max(real_labels.max(), probe.classes_.max())) + 1))
    probs[:, probe.classes_] = probe.predict_proba(F.normalize(real.float(), dim=1).numpy())
    truth = probs[np.arange(len(real_labels)), real_labels]
    return {"cas": float((probs.argmax(1) == real_labels).mean()),
            "cas_nll": float(-np.log(np.clip(truth, 1e-12, None)).mean())}


def contradicted_classes(generated: torch.Tensor, generated_labels: np.ndarray,
                         real: torch.Tensor, real_labels: np.ndarray) -> list[int]:
    """The classes whose generated images the labeled images contradict, by a linear probe
    trained on the generated images: c, where it gives fewer than half of c's labeled images
    their class (c's images do not look like c), and k, where no more than half of the labeled
    images it calls k are k (k's images look like another class). With one labeled image per
    class: both classes of every mistake. A generator learns its classes from pseudo-labels,
    and where module 1 confused two classes, so does it; a few mistakes among many labels
    leave every class."""
    if len(np.unique(generated_labels)) < 2 or not len(real_labels):
        return []
    guess = linear_probe(generated, generated_labels).predict(
        F.normalize(real.float(), dim=1).numpy())
    right = guess == real_labels
    found = set()
    for c in np.unique(np.concatenate([real_labels, guess])):
        if (real_labels == c).any() and right[real_labels == c].mean() < 0.5:
            found.add(int(c))  # recall below one half
        if (guess == c).any() and right[guess == c].mean() <= 0.5:
            found.add(int(c))  # precision at most one half
    return sorted(found)


def ranking(scores: dict) -> tuple[float, float]:
    """Sort key of a candidate image set: higher CAS first, then lower NLL."""
    if scores["cas"] is None:
        return (-1.0, 0.0)
    return (scores["cas"], -scores["cas_nll"])


def teaching_metrics(run: Run, generator_checkpoint: Path, classifier_checkpoint: Path | None,
                     device: str = "cpu") -> dict:
    """The classification accuracy score of a generator: ``fit.synthetic_per_class`` images
    of each class (seeds from ``evaluate.seed``, the generator's configured guidance), a
    linear probe on their features, scored on the labeled images and, where there are any, on
    the held-out test images; beside it, the same probe trained on the labeled images
    themselves and scored on the test images (what the few true labels teach). Features: the
    run's representation, else the classifier's own."""
    cfg, data = run.cfg, run.data
    features, about = represent.load_representation(run.path, cfg, data, device), \
        ("ImageNet's EfficientNet-Lite features" if (cfg.label.backbone or cfg.label.net)
         in nets.LITE else "the run's self-supervised representation")
    if features is None and classifier_checkpoint is not None:
        features = nets.from_checkpoint(checkpoint.load(classifier_checkpoint)).features
        about = "the classifier's own features"
    if features is None:
        return {"skipped": "no feature network in the run"}
    features = features.to(device).eval()
    generator = from_checkpoint(checkpoint.load(generator_checkpoint),
                                guidance=cfg.generate.guidance,
                                sample_steps=cfg.generate.sample_steps).to(device)
    per_class = cfg.fit.synthetic_per_class
    images, labels = generate_per_class(generator, len(data.classes), per_class,
                                        cfg.evaluate.seed)
    generated = nets.embed(features, np.ascontiguousarray(images.permute(0, 2, 3, 1).numpy()),
                           device)
    labels = labels.numpy()
    labeled = nets.embed(features, data.labeled.images, device)
    found = {"features": about, "per_class": per_class, "generator": generator.settings(),
             "cas_labeled": classification_accuracy_score(generated, labels, labeled,
                                                           data.labeled.labels)["cas"]}
    if data.test is not None:
        test = nets.embed(features, data.test.images, device)
        found["cas_test"] = classification_accuracy_score(generated, labels, test,
                                                          data.test.labels)["cas"]
        found["labels_probe_test"] = classification_accuracy_score(
            labeled, data.labeled.labels, test, data.test.labels)["cas"]
    return found
