"""Ship a pretraining checkpoint as the testbed's assets and write its model card.

:func:`export_assets` copies a pretraining run's checkpoint into ``assets/``; :func:`measure` evaluates it on
every task (:mod:`visprompt.testbed.evaluate`); :func:`write_model_card` renders ``MODEL_CARD.md`` from the run's
``pretrain_meta.json``, those measurements and, when given, the prompt-learning results the engine measured
(clean 16-shot CoOp and CoOp at 75% symmetric noise per task).
"""

from __future__ import annotations

import json
import logging
import platform
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from visprompt.testbed.model import ASSETS, CHECKPOINT_NAME, CONFIG_NAME, VOCAB_NAME, build_clip, load_weights
from visprompt.testbed.tasks import EXTRA_TASKS, TASKS
from visprompt.testbed.world import MENTION_PROB

logger = logging.getLogger(__name__)

META_NAME = "pretrain_meta.json"
EVAL_NAME = "testbed_eval.json"
CARD_NAME = "MODEL_CARD.md"


def export_assets(run: str | Path, assets: str | Path = ASSETS) -> Path:
    """Copy a run's checkpoint (fp16), config, vocabulary and meta into ``assets``; returns it."""
    from visprompt.testbed.model import save_weights

    run, assets = Path(run), Path(assets)
    assets.mkdir(parents=True, exist_ok=True)
    config = json.loads((run / CONFIG_NAME).read_text())
    model = load_weights(build_clip(config), run / CHECKPOINT_NAME)
    save_weights(model, assets / CHECKPOINT_NAME)  # fp16, with the activation in the metadata
    (assets / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    shutil.copyfile(run / VOCAB_NAME, assets / VOCAB_NAME)
    shutil.copyfile(run / META_NAME, assets / META_NAME)
    return assets


def measure(directory: str | Path = ASSETS, test_per_class: int = 100, seed: int = 0) -> dict[str, dict[str, float]]:
    """Zero-shot (shifted and in-domain) and 16-shot linear-probe accuracy of a checkpoint on every task
    (the extra tasks included)."""
    from visprompt.testbed.evaluate import evaluate_task
    from visprompt.testbed.model import load_testbed_model

    model, tokenizer = load_testbed_model(directory)
    results = {}
    for task in (*TASKS, *EXTRA_TASKS):
        results[task.name] = evaluate_task(model, tokenizer, task, test_per_class=test_per_class, seed=seed)
        logger.info("%s: %s", task.name, results[task.name])
    return results


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def _camera(task) -> str:
    style = task.style
    parts = []
    if style.hue != (0.0, 0.0):
        parts.append(f"hue rotated {style.hue[0]:g} deg" if style.hue[0] == style.hue[1] else f"hue {style.hue}")
    if style.gain != (1.0, 1.0, 1.0):
        parts.append("colour cast, RGB gain " + "/".join(f"{g:g}" for g in style.gain))
    return ", ".join(parts) or "none"


def write_model_card(
    directory: str | Path,
    evaluation: dict[str, Any],
    command: str,
    coop: dict[str, dict[str, float]] | None = None,
    notes: Sequence[str] = (),
    coop_source: str = "measured by the training engine.",
) -> Path:
    """Write ``MODEL_CARD.md`` in ``directory`` (which holds the checkpoint, config and ``pretrain_meta.json``).

    ``evaluation`` is :func:`measure`'s result plus ``"test_per_class"``; ``coop`` maps task name to
    ``{"coop_clean": acc, "coop_noise75": acc}`` when the engine has measured them; ``notes`` are extra lines
    for the pretraining section (e.g. how a run was resumed); ``coop_source`` says how CoOp was measured.
    """
    directory = Path(directory)
    meta = json.loads((directory / META_NAME).read_text())
    config = json.loads((directory / CONFIG_NAME).read_text())["model_cfg"]
    vocab = json.loads((directory / VOCAB_NAME).read_text())
    size_mb = (directory / CHECKPOINT_NAME).stat().st_size / 2**20
    v, t = config["vision_cfg"], config["text_cfg"]
    pre = meta["pretrain_config"]
    lines = [
        "# Testbed tiny CLIP (a stand-in, not a real CLIP)",
        "",
        "A ~1 M-parameter CLIP pretrained contrastively on visprompt's procedural image world, shipped so that",
        "every code path (backbone loading, prompt learners, noisy-label methods, the demo) runs offline on a CPU.",
        "Its numbers say nothing about real CLIP models or real datasets.",
        "",
        "## Architecture",
        "",
        f"- `open_clip.CLIP`, GELU; joint embedding {config['embed_dim']}.",
        f"- Image tower: ViT, {v['image_size']} px input, patch {v['patch_size']} "
        f"({(v['image_size'] // v['patch_size']) ** 2} patch tokens + CLS), width {v['width']}, {v['layers']} layers, "
        f"{v['width'] // v['head_width']} heads.",
        f"- Text tower: width {t['width']}, {t['layers']} layers, {t['heads']} heads, context {t['context_length']}.",
        f"- Tokenizer: the real CLIP BPE, ids remapped to a compact {t['vocab_size']}-row vocabulary "
        f"(`{VOCAB_NAME}`; order kept, so end-of-text is the largest id; unknown tokens map to UNK = 1).",
        f"- Parameters: {meta['parameters']:,}. Checkpoint `{CHECKPOINT_NAME}`: fp16 safetensors, {size_mb:.2f} MB; "
        f"config `{CONFIG_NAME}` (open_clip format). Load with `visprompt.testbed.load_testbed_clip()`.",
        "",
        "## Pretraining",
        "",
        "- Data: fresh procedural scenes every step (`visprompt.testbed.world`, `render.PRETRAIN` corruption: "
        "light noise, blur, tint, clutter lines, distractors), data seed "
        f"{pre['seed']}; half of each batch drawn from two colours (hard negatives). Share of captions naming each "
        "attribute: " + ", ".join(f"{k} {round(100 * p)}%" for k, p in MENTION_PROB.items()) + ".",
        "- Loss: symmetric InfoNCE, identical captions in a batch share the target; AdamW "
        f"(lr {pre['lr']}, weight decay {pre['weight_decay']}), {pre['warmup_steps']} warm-up steps, cosine decay "
        f"over max(step / {pre['max_steps']}, elapsed / {pre['time_budget_min']:g} min), batch {pre['batch_size']}, "
        f"{pre['threads']} CPU thread(s).",
        f"- Command: `{command}`",
        *[
            f"  - from step {g['start_step']} ({g['start_minutes']:.1f} min): batch {g['batch_size']}, "
            f"{g['threads']} thread(s), max {g['max_steps']} steps, budget {g['time_budget_min']} min"
            for g in meta.get("segments", [])
        ],
        *[f"- {note}" for note in notes],
        f"- Ran: {meta['steps']:,} steps, {meta['samples']:,} samples, {meta['minutes']:.1f} min of training "
        "wall clock on a shared 2-core CPU (other jobs running); "
        f"final batch loss {meta['loss']:.3f}, in-batch image-to-text accuracy {meta['acc']:.3f}.",
        "",
        "## Downstream tasks (`visprompt testbed build --root DATA`)",
        "",
        "Rendered with light corruption (noise, blur, tint, clutter, distractors, unseen textures) plus one consistent",
        "camera change per task; see `visprompt.testbed.tasks` for why. Extra tasks are built only when named.",
        "",
        "| task | classifies | classes | zero-shot template | camera change | train / val / test |",
        "|---|---|---|---|---|---|",
    ]
    for task in (*TASKS, *EXTRA_TASKS):
        c, extra = task.expected_counts, " (extra)" if task in EXTRA_TASKS else ""
        lines.append(
            f"| {task.name}{extra} | {task.attribute} | {task.num_classes} | `{task.template}` "
            f"| {_camera(task)} | {c['train']} / {c['val']} / {c['test']} |"
        )
    n = evaluation.get("test_per_class", "?")
    lines += [
        "",
        "## Measured accuracy (%)",
        "",
        f"Zero-shot and the 16-shot linear probe (logistic regression on frozen image features) on {n} test images per",
        "class rendered in memory with the task's seed; in-domain renders the same scenes in the pretraining style.",
        "Acceptance: zero-shot (shifted) in [35, 75]; clean 16-shot CoOp >= zero-shot + 10; CoOp at 75% symmetric",
        "noise <= clean CoOp - 15.",
        "",
        "| task | zero-shot (shifted) | zero-shot (in-domain) | linear probe 16-shot | CoOp 16-shot clean "
        "| CoOp 75% noise |",
        "|---|---|---|---|---|---|",
    ]
    for task in (*TASKS, *EXTRA_TASKS):
        r, cp = evaluation[task.name], (coop or {}).get(task.name, {})
        name = f"{task.name} (extra)" if task in EXTRA_TASKS else task.name
        lines.append(
            f"| {name} | {_pct(r['zero_shot'])} | {_pct(r['zero_shot_in_domain'])} | {_pct(r['linear_probe'])} "
            f"| {_pct(cp.get('coop_clean'))} | {_pct(cp.get('coop_noise75'))} |"
        )
    lines += ["", f"CoOp columns: {coop_source}" if coop else "CoOp columns: not yet measured."]
    lines += [
        "",
        f"Measured with torch {torch.__version__} on {platform.machine()} "
        "(`python scripts/testbed_card.py --run <run dir>`).",
        f"Vocabulary: {len(vocab['bpe_ids'])} tokens.",
        "",
    ]
    path = directory / CARD_NAME
    path.write_text("\n".join(lines))
    return path
