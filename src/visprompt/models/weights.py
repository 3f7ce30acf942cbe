"""Reading CLIP weight files offline: formats, checksums and open_clip's cache.

Three file formats are read, told apart by content rather than by extension:

* an OpenAI TorchScript archive (``RN50.pt``, ``ViT-B-16.pt``, ...): a zip holding ``code/`` and
  ``constants.pkl``; read with ``torch.jit.load`` and reduced to its state dict;
* a safetensors file (``*.safetensors``), whose metadata may declare the activation (``quick_gelu``);
* a pickled state dict written by ``torch.save`` (optionally wrapped as ``{"state_dict": ...}`` and/or
  prefixed with ``module.``), read with ``weights_only=True``.

The published SHA-256 of the OpenAI archives is checked whenever it is known. Pretrained tags such as
``"openai"`` are resolved against open_clip's two caches (the Hugging Face hub cache and the legacy URL
cache, ``~/.cache/clip``) without any network access: a miss is a one-line :class:`WeightsError` naming the
file to put where. Nothing here ever downloads.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from visprompt.errors import WeightsError

logger = logging.getLogger(__name__)

# SHA-256 of the OpenAI CLIP archives as published in their download URLs
# (https://openaipublic.azureedge.net/clip/models/<sha256>/<file>). The paper's six backbones.
OPENAI_SHA256: dict[str, str] = {
    "RN50": "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762",
    "RN101": "8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599",
    "RN50x4": "7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd",
    "RN50x16": "52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa",
    "ViT-B-32": "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af",
    "ViT-B-16": "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f",
}

# Keys of the OpenAI archives' state dicts that are attributes, not open_clip parameters.
_OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")

_HF_FILENAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


@dataclass(frozen=True)
class WeightsFile:
    """A state dict read from a file, with what the file says about itself.

    Attributes:
        path: the file read.
        state_dict: tensors keyed by open_clip parameter names (prefixes and wrappers removed).
        fmt: ``"torchscript"``, ``"safetensors"`` or ``"state_dict"``.
        quick_gelu: the activation the weights were trained with when the file declares it (OpenAI archives
            are QuickGELU; safetensors metadata may say), else ``None``.
        sha256: the file's SHA-256 when it was computed (checked against a known value), else ``None``.
    """

    path: Path
    state_dict: dict[str, torch.Tensor]
    fmt: str
    quick_gelu: bool | None
    sha256: str | None


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def openai_sha256(arch: str) -> str | None:
    """Published SHA-256 of the OpenAI archive for an open_clip architecture name (``-quickgelu`` ignored).

    Falls back on the digest embedded in open_clip's download URL for OpenAI models not in our table.
    """
    base = arch.removesuffix("-quickgelu")
    if base in OPENAI_SHA256:
        return OPENAI_SHA256[base]
    try:
        import open_clip

        url = open_clip.get_pretrained_url(base, "openai")
    except Exception:  # an older/newer open_clip without this helper
        return None
    parts = url.split("/")
    if "openaipublic" in url and len(parts) >= 2 and len(parts[-2]) == 64:
        return parts[-2]
    return None


def is_torchscript_archive(path: str | Path) -> bool:
    """Whether a file is a TorchScript zip archive (the OpenAI release format)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def _clean_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """Unwrap ``{"state_dict": ...}`` and strip a ``module.`` prefix (DistributedDataParallel checkpoints)."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: not a CLIP state dict (expected a mapping of parameter names to tensors)")
    if all(k.startswith("module.") for k in obj):
        obj = {k.removeprefix("module."): v for k, v in obj.items()}
    return dict(obj)


def _parse_bool(value: str | None) -> bool | None:
    if value is None:
        return None
    return value.strip().lower() in ("1", "true", "yes")


def read_weights(path: str | Path, *, expected_sha256: str | None = None) -> WeightsFile:
    """Read a weights file in any supported format, checking its SHA-256 when one is expected.

    Args:
        path: the file.
        expected_sha256: hex digest the file must have (e.g. the published one of an OpenAI archive); checked
            before the file is deserialised.

    Raises:
        WeightsError: the file is missing, unreadable, not a state dict, or has the wrong checksum.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    digest = None
    if expected_sha256:
        digest = file_sha256(path)
        if digest != expected_sha256.lower():
            raise WeightsError(
                f"{path}: wrong SHA-256 {digest[:16]}..., expected {expected_sha256[:16]}... "
                "(a truncated download or a different file); replace it with the published file"
            )
    unpickling = False
    try:
        if is_torchscript_archive(path):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated; OpenAI shipped it
                module = torch.jit.load(str(path), map_location="cpu")
            sd = {k: v for k, v in module.state_dict().items() if k not in _OPENAI_EXTRA_KEYS}
            return WeightsFile(path, _clean_state_dict(sd, path), "torchscript", True, digest)
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt", device="cpu") as fh:
                meta = fh.metadata() or {}
                sd = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (safe_open is not a dict)
            return WeightsFile(
                path, _clean_state_dict(sd, path), "safetensors", _parse_bool(meta.get("quick_gelu")), digest
            )
        unpickling = True  # the last resort: a tensor-only state dict; any failure from here means "not weights"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # e.g. "pickle protocol 63" from random bytes: we say it
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except WeightsError:
        raise
    except Exception as err:  # pickle, zip, safetensors header errors: one line naming the file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "weights_only" in str(err) or "Weights only load failed" in first:  # torch's advice is never ours
            first = "visprompt never unpickles other objects"
        if unpickling:  # random bytes fail in many ways inside the unpickler (pop from empty list, EOF, ...)
            first = f"not a weights file (not safetensors, a TorchScript archive or a tensor-only state dict); {first}"
        raise WeightsError(f"{path}: cannot read weights ({first[:240]})") from None
    quick_gelu = obj.get("quick_gelu") if isinstance(obj, dict) and isinstance(obj.get("quick_gelu"), bool) else None
    return WeightsFile(path, _clean_state_dict(obj, path), "state_dict", quick_gelu, digest)


def find_cached_pretrained(arch: str, tag: str, cache_dir: str | Path | None = None) -> tuple[Path, str | None]:
    """Locate the cached file of an open_clip pretrained tag, offline; never downloads.

    Looks in the Hugging Face hub cache (``try_to_load_from_cache``, no network) and then in open_clip's legacy
    URL cache (``cache_dir`` or ``~/.cache/clip``).

    Returns:
        (path, expected_sha256) where the checksum is the published one for OpenAI archives, else ``None``.

    Raises:
        WeightsError: the tag is unknown for ``arch`` or no cached file exists; the message names the file to
            put where.
    """
    import open_clip

    cfg = open_clip.get_pretrained_cfg(arch, tag)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        known = ", ".join(tags) if tags else "none"
        raise WeightsError(f"no pretrained weights {tag!r} for {arch} in open_clip (known tags: {known})")
    hf_hub, url = cfg.get("hf_hub", ""), cfg.get("url", "")
    if hf_hub:
        repo_id, filename = os.path.split(hf_hub)  # "org/repo/" -> ("org/repo", ""): open_clip's default names
        found = _hf_cached(repo_id, (filename,) if filename else _HF_FILENAMES, cache_dir)
        if found is not None:
            return found, None
    expected = None
    if url:
        url_dir = Path(cache_dir).expanduser() if cache_dir else Path("~/.cache/clip").expanduser()
        candidate = url_dir / os.path.basename(url)
        if "openaipublic" in url:
            expected = url.split("/")[-2]
        if candidate.is_file():
            return candidate, expected
        sha_hint = f" (sha256 {expected[:12]}...)" if expected else ""
        raise WeightsError(
            f"no cached weights for {arch}:{tag}: put {os.path.basename(url)}{sha_hint} in {url_dir}, "
            f"or pass the file itself as weights=<path>"
        )
    raise WeightsError(
        f"no cached weights for {arch}:{tag}: download {hf_hub} into the Hugging Face cache "
        f"({os.environ.get('HF_HUB_CACHE', '~/.cache/huggingface/hub')}), or pass the file as weights=<path>"
    )


def _hf_cached(repo_id: str, filenames: tuple[str, ...], cache_dir: str | Path | None) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for name in filenames:
        hit = try_to_load_from_cache(repo_id, name, cache_dir=str(cache_dir) if cache_dir else None)
        if isinstance(hit, str) and os.path.isfile(hit):
            return Path(hit)
    return None
