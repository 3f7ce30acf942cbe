"""Quick checks of the testbed CLIP on the downstream tasks: zero-shot accuracy and a few-shot linear probe.

Images are rendered in memory (no files), so a check of an intermediate checkpoint costs seconds. Notation:
N images, C classes, E the joint embedding width.

- Zero-shot: class c's text feature is the normalised encoding of ``template.format(classname_c)``; an image
  is assigned the class of highest cosine similarity.
- Linear probe: multinomial logistic regression (scikit-learn, L2, features normalised) on K images per class
  of the task's train split, scored on its test split; it tells whether the frozen image features separate the
  classes at all, which bounds what any prompt learner can do.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from visprompt.testbed.build import render_split
from visprompt.testbed.pretrain import normalise
from visprompt.testbed.render import PRETRAIN
from visprompt.testbed.tasks import TaskSpec


@torch.no_grad()
def image_features(model: torch.nn.Module, images: np.ndarray, batch_size: int = 512) -> torch.Tensor:
    """Unit-norm image features (N, E) of uint8 images (N, H, W, 3)."""
    out = []
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(images[i : i + batch_size]).permute(0, 3, 1, 2)  # (n, 3, H, W)
        out.append(F.normalize(model.encode_image(normalise(x)), dim=-1))
    return torch.cat(out)


@torch.no_grad()
def class_text_features(model: torch.nn.Module, tokenizer, task: TaskSpec) -> torch.Tensor:
    """Unit-norm text features (C, E) of the task's template filled with each class name."""
    tokens = tokenizer([task.template.format(c) for c in task.classnames])  # (C, L)
    return F.normalize(model.encode_text(tokens), dim=-1)


def task_images(task: TaskSpec, split: str, per_class: int, seed: int, in_domain: bool = False):
    """(images (N, H, W, 3), labels (N,)) of a task's split, cut to ``per_class`` images per class.

    ``in_domain`` renders the same scenes in the pretraining style instead of the task's shift.
    """
    sized = dataclasses.replace(task, **{f"{split}_per_class": per_class})
    if in_domain:
        sized = dataclasses.replace(sized, style=PRETRAIN)
    images = render_split(sized, split, seed=seed)
    labels = np.tile(np.arange(task.num_classes), per_class)  # the order of build.split_rows
    return images, labels


def zero_shot_accuracy(
    model: torch.nn.Module, tokenizer, task: TaskSpec, images: np.ndarray, labels: np.ndarray
) -> float:
    """Top-1 zero-shot accuracy in [0, 1]."""
    logits = image_features(model, images) @ class_text_features(model, tokenizer, task).t()  # (N, C)
    return float((logits.argmax(1).numpy() == labels).mean())


def linear_probe_accuracy(
    train: torch.Tensor, train_labels: np.ndarray, test: torch.Tensor, test_labels: np.ndarray, c: float = 1.0
) -> float:
    """Test accuracy of an L2 logistic regression fitted on (train features, labels)."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=c, max_iter=2000)
    clf.fit(train.numpy(), train_labels)
    return float(clf.score(test.numpy(), test_labels))


def evaluate_task(
    model: torch.nn.Module, tokenizer, task: TaskSpec, *, test_per_class: int = 50, shots: int = 16, seed: int = 0
) -> dict[str, float]:
    """Zero-shot accuracy in-domain and under the task's shift, and the ``shots``-shot linear probe (shifted)."""
    model.eval()
    test, test_labels = task_images(task, "test", test_per_class, seed)
    clean, clean_labels = task_images(task, "test", test_per_class, seed, in_domain=True)
    train, train_labels = task_images(task, "train", shots, seed)
    feats_test = image_features(model, test)
    return {
        "zero_shot": zero_shot_accuracy(model, tokenizer, task, test, test_labels),
        "zero_shot_in_domain": zero_shot_accuracy(model, tokenizer, task, clean, clean_labels),
        "linear_probe": linear_probe_accuracy(image_features(model, train), train_labels, feats_test, test_labels),
    }
