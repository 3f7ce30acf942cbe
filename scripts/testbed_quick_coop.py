"""Quick prompt-tuning check of a testbed checkpoint (a throwaway stand-in until the engine measures CoOp).

    PYTHONPATH=src python scripts/testbed_quick_coop.py [--assets DIR] [--tasks testbed-shapes ...]

For each task: zero-shot accuracy, then CoOp with the project's defaults (16 generic context tokens drawn from
N(0, 0.02^2), class token at the end) trained on 16 shots per class on cached frozen image features (no
augmentation), SGD lr 0.002, momentum 0.9, weight decay 5e-4, batch 16, cosine over the epochs, with clean
labels and with 75% symmetric label noise (each label replaced, with probability 0.75, by a uniformly drawn
other class). Test accuracy on rendered test images of every class, averaged over ``--seeds`` (few-shot draw,
noise and initialisation). Prints one line per task; ``--json`` writes {task: {"coop_clean", "coop_noise75",
"zero_shot"}} for ``scripts/testbed_card.py --coop``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from visprompt.models.classifier import PromptClassifier, ZeroShotClassifier
from visprompt.models.coop import CoOpPromptLearner
from visprompt.testbed.evaluate import task_images
from visprompt.testbed.model import ASSETS, load_testbed_clip
from visprompt.testbed.pretrain import normalise
from visprompt.testbed.tasks import TASKS, TASKS_BY_NAME


def features(clip, images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return clip.encode_image(normalise(torch.from_numpy(images).permute(0, 3, 1, 2)))


def coop(clip, classnames, train, labels, test, test_labels, epochs: int, seed: int, ctx_init: str = "") -> float:
    """Test accuracy of CoOp (16 context tokens, or ``ctx_init``'s) trained on cached features."""
    torch.manual_seed(seed)
    model = PromptClassifier(clip, CoOpPromptLearner(clip, classnames, n_ctx=16, ctx_init=ctx_init))
    opt = torch.optim.SGD(model.trainable_parameters(), lr=0.002, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    y = torch.as_tensor(labels)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(y)).split(16):
            loss = torch.nn.functional.cross_entropy(model.logits_from_features(train[0][idx], train[1][idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    model.eval()
    with torch.no_grad():
        return float((model.logits_from_features(*test).argmax(1).numpy() == test_labels).mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", default=str(ASSETS))
    parser.add_argument("--tasks", nargs="*", default=[t.name for t in TASKS])
    parser.add_argument("--test-per-class", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--noise", type=float, default=0.75)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--ctx-init", default="", help='initialising phrase, e.g. "a photo of a" ("" = random)')
    parser.add_argument("--json", type=Path, help="write the accuracies here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    clip = load_testbed_clip(directory=args.assets)
    results = {}
    for name in args.tasks:
        task = TASKS_BY_NAME[name]
        c = task.num_classes
        test_images, test_labels = task_images(task, "test", args.test_per_class, 0)
        test = features(clip, test_images)
        zs = ZeroShotClassifier(clip, list(task.classnames), [task.template])
        with torch.no_grad():
            zero_shot = float((zs.logits_from_features(*test).argmax(1).numpy() == test_labels).mean())
        clean, noisy = [], []
        for seed in args.seeds:
            train_images, labels = task_images(task, "train", 16, seed)  # a different 16-shot draw per seed
            train = features(clip, train_images)
            rng = np.random.default_rng(seed)
            flip = rng.random(len(labels)) < args.noise
            corrupted = np.where(flip, (labels + rng.integers(1, c, len(labels))) % c, labels)  # other class
            clean.append(
                coop(clip, task.classnames, train, labels, test, test_labels, args.epochs, seed, args.ctx_init)
            )
            noisy.append(
                coop(clip, task.classnames, train, corrupted, test, test_labels, args.epochs, seed, args.ctx_init)
            )
        clean_acc, noisy_acc = float(np.mean(clean)), float(np.mean(noisy))
        results[name] = {"zero_shot": zero_shot, "coop_clean": clean_acc, "coop_noise75": noisy_acc}
        print(
            f"{name:22s} zero-shot {100 * zero_shot:5.1f}  CoOp clean {100 * clean_acc:5.1f} "
            f"({100 * (clean_acc - zero_shot):+5.1f})  CoOp {args.noise:.0%} noise {100 * noisy_acc:5.1f} "
            f"({100 * (noisy_acc - clean_acc):+5.1f})",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
