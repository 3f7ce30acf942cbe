"""The Python front door: configure, train, reload, evaluate and predict, in a notebook or a script.

    >>> import visprompt
    >>> cfg = visprompt.config(method="visprompt", dataset="testbed-backgrounds", backbone="testbed",
    ...                        overrides={"noise.type": "sym", "noise.rate": 0.5, "optim.epochs": 5})
    >>> run = visprompt.train(cfg)             # skipped when done, resumed when interrupted
    >>> run.metrics["top1"]
    >>> run.predict(["a.png", "b.png"]).labels
    >>> visprompt.load_run("runs/...").evaluate()["top1"]

The command line is a thin layer over these functions (``visprompt train``, ``eval``, ``predict``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visprompt.config import RunConfig, load_config, load_run_config

if TYPE_CHECKING:
    import torch

    from visprompt.engine.inference import LoadedRun

__all__ = ["Predictions", "Run", "config", "image_samples", "load_run", "train"]


def config(
    method: str | None = None,
    *,
    dataset: str | None = None,
    backbone: str | None = None,
    files: Iterable[str | Path] = (),
    overrides: Mapping[str, Any] | Iterable[str] = (),
) -> RunConfig:
    """A resolved run configuration: the method's recipe and presets, then ``files``, then ``overrides``.

    ``overrides`` maps dotted keys to values (``{"optim.lr": 0.001}``) or lists ``"key=value"`` strings; the
    layers are the ``train`` command's (:func:`~visprompt.config.load_config`).
    """
    return load_config(files, overrides, dataset=dataset, backbone=backbone, method=method)


@dataclass(frozen=True)
class Predictions:
    """Class probabilities of some images under a trained run."""

    classnames: tuple[str, ...]
    probabilities: torch.Tensor  # (N, C), rows sum to 1

    @property
    def labels(self) -> list[str]:
        """The most probable class of each image."""
        return [self.classnames[int(i)] for i in self.probabilities.argmax(dim=-1)]


# the files a loaded model is rebuilt from: a change to any of them (the run resumed, finished or restarted) reloads it
_MODEL_FILES = ("config.yaml", "split.json", "checkpoint.safetensors", "status")


def _files_signature(run: Path) -> tuple[tuple[int, int, int] | None, ...]:
    """(inode, size, mtime_ns) of each of :data:`_MODEL_FILES`; every write replaces the file (a new inode)."""
    signature = []
    for name in _MODEL_FILES:
        try:
            st = (run / name).stat()
        except FileNotFoundError:
            signature.append(None)
        else:
            signature.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(signature)


@dataclass
class Run:
    """A run directory: its configuration, status and metrics, and its trained model on demand.

    Everything is read from the directory when asked for: a run resumed, finished or restarted after this object
    was made (in this process or another) gives its new configuration, metrics and model, never the old ones.
    """

    path: Path
    device: str = "auto"
    partial: bool = False  # allow an unfinished or failed run's last checkpoint (with a warning)
    # frozen image features from the store: True (the run's run.feature_store), "auto", a folder, or None (off)
    feature_store: str | bool | None = True
    # per data root: the signature of the run's files it was loaded from, and the model
    _loaded: dict[str, tuple[tuple[Any, ...], LoadedRun]] = field(default_factory=dict, repr=False)

    @property
    def config(self) -> RunConfig:
        return load_run_config(self.path / "config.yaml")

    @property
    def status(self) -> str | None:
        from visprompt.engine.rundir import RunDir

        return RunDir(self.path).status()

    @property
    def metrics(self) -> dict[str, Any]:
        """``metrics.json`` ({} before the run has finished)."""
        file = self.path / "metrics.json"
        return json.loads(file.read_text()) if file.is_file() else {}

    def model(self, data_root: str | Path | None = None) -> LoadedRun:
        """The run rebuilt with its trained parameters (cached per data root until the run's files change)."""
        from visprompt.engine.inference import load_run as rebuild

        key = str(data_root)
        signature = _files_signature(self.path)  # taken before loading: a write during the load reloads next time
        cached = self._loaded.get(key)
        if cached is None or cached[0] != signature:
            self._loaded[key] = signature, rebuild(
                self.path, device=self.device, data_root=data_root, partial=self.partial,
                feature_store=self.feature_store,
            )  # fmt: skip
        return self._loaded[key][1]

    def evaluate(self, data_root: str | Path | None = None) -> dict[str, Any]:
        """Top-1, macro-F1 and per-class accuracy on the run's test split (images under ``data_root`` if given)."""
        import torch

        from visprompt.engine.metrics import classification_metrics

        loaded = self.model(data_root)
        logits = loaded.logits(loaded.splits.test)  # (N, C)
        labels = torch.tensor([s.label for s in loaded.splits.test])
        return classification_metrics(logits.argmax(dim=-1), labels, loaded.splits.classnames)

    def predict(self, images: Sequence[str | Path]) -> Predictions:
        """Class probabilities of image files (checked before any is read)."""
        samples = image_samples(images)  # checked before the model is built
        loaded = self.model()
        probs = loaded.logits(samples).softmax(dim=-1)  # (N, C)
        return Predictions(tuple(loaded.splits.classnames), probs)

    def features(self, images: Sequence[str | Path]) -> torch.Tensor:
        """The frozen image encoder's L2-normalised pooled features (N, E) of image files."""
        from visprompt.engine.build import image_transform
        from visprompt.engine.data import encode_samples
        from visprompt.engine.runtime import resolve_precision

        samples = image_samples(images)
        loaded = self.model()
        features = encode_samples(
            loaded.clip, samples, image_transform(loaded.clip), batch_size=loaded.cfg.optim.eval_batch_size,
            device=loaded.device, precision=resolve_precision(loaded.cfg.optim.precision, loaded.device),
            keep_tokens=False, store=loaded.store,
        )  # fmt: skip
        return features.pooled / features.pooled.norm(dim=-1, keepdim=True)  # (N, E)


def train(cfg: RunConfig, *, restart: bool = False, progress: bool | None = False) -> Run:
    """Train and evaluate one run (skipped when done, resumed when interrupted); its :class:`Run`."""
    from visprompt.engine.runner import train_run

    result = train_run(cfg, restart=restart, show_progress=progress)
    return Run(Path(result.run_dir), device=cfg.run.device)


def load_run(
    path: str | Path, device: str = "auto", partial: bool = False, feature_store: str | bool | None = True
) -> Run:
    """An existing run directory; a missing one or a folder without ``config.yaml`` is a one-line ConfigError.

    ``feature_store``: where evaluation and prediction read frozen image features from (and write them to):
    True (the run's ``run.feature_store``), ``"auto"``, a folder, or None (encode every image).
    """
    from visprompt.errors import ConfigError

    run = Path(path)
    if not (run / "config.yaml").is_file():
        raise ConfigError(f"{run} is not a run directory (no config.yaml)")
    return Run(run, device=device, partial=partial, feature_store=feature_store)


def image_samples(images: Sequence[str | Path]) -> list[Any]:
    """Samples (label 0, truth unknown) of image files, each checked to be a readable image first."""
    from visprompt.data.precheck import check_image_header
    from visprompt.data.records import Sample
    from visprompt.errors import DataError

    samples = []
    for i, image in enumerate(images):
        problem = check_image_header(str(image))
        if problem is not None:
            raise DataError(f"image {image} {problem}")
        samples.append(Sample(index=i, path=str(Path(image).resolve()), label=0, true_label=None, classname=""))
    return samples
