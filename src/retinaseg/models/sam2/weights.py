"""SAM 2 model folders: write them (random init or converted official checkpoint), load them.

Reference §7.2: SAM-OCTA2 fine-tunes official SAM 2 weights, which users bring themselves
(nothing is downloaded). A *model folder* is the Hugging Face format of the full SAM 2 video
model, which also serves the single-image model:

- ``config.json``: a ``Sam2VideoConfig`` (``model_type`` ``sam2_video``);
- ``model.safetensors``: the weights under transformers' names;
- ``retinaseg.json`` (ours only): size, version, SHA-256 of ``model.safetensors`` and source.

:func:`convert_checkpoint` reads an official ``sam2*_hiera_*.pt`` with
``torch.load(weights_only=True)`` (a pickle that needs code is refused), renames its parameters
(:mod:`.keymap`), detects the size from the shapes and writes a folder. :func:`init_weights`
writes random weights of any size through the very same path, so that tests and speed checks
exercise what a real checkpoint goes through. :func:`load_sam2` loads any such folder, also one
downloaded from the Hugging Face hub by the user.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import pickle
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from retinaseg.errors import ModelLoadError
from retinaseg.models.sam2 import keymap
from retinaseg.models.sam2.deps import require_sam_extras
from retinaseg.utils.atomic import atomic_path, make_out_dir, write_text_atomic

require_sam_extras()

from transformers import (  # noqa: E402
    PreTrainedModel,
    Sam2Config,
    Sam2Model,
    Sam2VideoConfig,
    Sam2VideoModel,
)
from transformers.utils import logging as hf_logging  # noqa: E402

from retinaseg.models.sam2.config import (  # noqa: E402
    image_config,
    size_from_dims,
    size_of,
    video_config,
    video_config_from_dict,
)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
INFO_FILE = "retinaseg.json"
FOLDER_HINT = ("a SAM 2 model folder with config.json and model.safetensors, as written by "
               "'retinaseg sam2 convert' or 'retinaseg sam2 init'")


@dataclass(frozen=True)
class Sam2Info:
    """What ``retinaseg.json`` of a model folder records."""

    size: str
    version: str
    sha256: str
    source: str


# ---------------------------------------------------------------- writing folders


def _official_size(state: Mapping[str, torch.Tensor], where: str) -> tuple[str, str]:
    """(size, version) of an official state dict, from the Hiera shapes."""
    patch = state.get("image_encoder.trunk.patch_embed.proj.weight")
    if patch is None:
        raise ModelLoadError(f"'{where}' is not a SAM 2 checkpoint: it has no Hiera image "
                             "encoder (image_encoder.trunk.patch_embed.proj.weight)")
    prefix = "image_encoder.trunk.blocks."
    blocks = {name[len(prefix):].split(".")[0] for name in state if name.startswith(prefix)}
    size = size_from_dims(int(patch.shape[0]), len(blocks))
    if size is None:
        raise ModelLoadError(f"'{where}' is a SAM 2 checkpoint of an unknown size (Hiera width "
                             f"{patch.shape[0]}, {len(blocks)} blocks)")
    return size, "2.1" if "no_obj_embed_spatial" in state else "2"


def _meta_model(config: Sam2VideoConfig | Sam2Config) -> PreTrainedModel:
    """The model of ``config`` without memory for its weights (shapes and names only)."""
    cls = Sam2VideoModel if isinstance(config, Sam2VideoConfig) else Sam2Model
    with torch.device("meta"), _quiet():
        return cls(config)


def _check_fit(shapes: Mapping[str, tuple[int, ...]], model: PreTrainedModel, where: str,
               size: str | None) -> None:
    """Every parameter of ``model`` is in ``shapes`` with its shape; else one clear error."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    what = f"size '{size}'" if size else "its config"
    found = _transformers_size(shapes)
    if size and found and found != size:
        raise ModelLoadError(f"weights in '{where}' do not fit {what}: they are SAM 2 size "
                             f"'{found}' (a checkpoint of another size)")
    for name, shape in expected.items():
        if name in shapes and tuple(shapes[name]) != shape:
            raise ModelLoadError(
                f"weights in '{where}' do not fit {what}: '{name}' has shape "
                f"{list(shapes[name])}, expected {list(shape)} (a checkpoint of another size?)")
    missing = sorted(set(expected) - set(shapes))
    if missing:
        raise ModelLoadError(f"weights in '{where}' lack {len(missing)} parameter(s) of the "
                             f"model, e.g. '{missing[0]}'")


def _transformers_size(shapes: Mapping[str, tuple[int, ...]]) -> str | None:
    """The size of weights under transformers' names, from the Hiera shapes (None: unknown)."""
    patch = shapes.get("vision_encoder.backbone.patch_embed.projection.weight")
    prefix = "vision_encoder.backbone.blocks."
    blocks = {name[len(prefix):].split(".")[0] for name in shapes if name.startswith(prefix)}
    return size_from_dims(int(patch[0]), len(blocks)) if patch else None


def _write_folder(state: Mapping[str, torch.Tensor], config: Sam2VideoConfig, out: str | Path,
                  size: str, version: str, source: str) -> Path:
    folder = make_out_dir(out)
    tensors = {k: v.detach().to(torch.float32).contiguous() for k, v in state.items()}
    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    write_text_atomic(folder / CONFIG_FILE, config.to_json_string())
    info = Sam2Info(size, version, _sha256_files([folder / WEIGHTS_FILE]), source)
    write_text_atomic(folder / INFO_FILE, json.dumps(asdict(info), indent=2) + "\n")
    return folder


def _convert_state(state: Mapping[str, Any], out: str | Path, where: str, size: str | None,
                   source: str) -> Path:
    """The common path of :func:`convert_checkpoint` and :func:`init_weights`."""
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ModelLoadError(f"'{where}' is not a state dict of named tensors")
    found, version = _official_size(state, where)
    if size is not None and size != found:
        raise ModelLoadError(f"checkpoint '{where}' is SAM 2 size '{found}', not '{size}'")
    renamed, unknown = keymap.official_to_transformers(state)
    if unknown:
        raise ModelLoadError(f"'{where}' is not an official SAM 2 checkpoint: {len(unknown)} "
                             f"unknown parameter(s), e.g. '{unknown[0]}'")
    config = video_config(found, version)
    model = _meta_model(config)
    _check_fit({k: tuple(v.shape) for k, v in renamed.items()}, model, where, found)
    extra = sorted(set(renamed) - set(model.state_dict()))
    if extra:
        raise ModelLoadError(f"'{where}' has parameters that size '{found}' lacks, e.g. "
                             f"'{extra[0]}'")
    return _write_folder(renamed, config, out, found, version, source)


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "global" not in str(err).lower():  # torch names the class or function it refused
            raise ModelLoadError(f"cannot read checkpoint '{path}': not a PyTorch checkpoint "
                                 "of tensors") from None
        raise ModelLoadError(
            f"refusing '{path}': it holds objects that need code to unpickle; only checkpoints "
            "of plain tensors load (torch.load with weights_only=True)") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as err:
        raise ModelLoadError(f"cannot read checkpoint '{path}': {err}") from None


def convert_checkpoint(checkpoint: str | Path, out: str | Path, size: str | None = None) -> Path:
    """Convert an official SAM 2 / 2.1 checkpoint (``.pt``) into a model folder ``out``.

    ``size`` (optional) is checked against the size read from the checkpoint's shapes.
    Returns the folder. Raises ModelLoadError for a missing or unreadable file, a pickle that
    needs code, a checkpoint that is not SAM 2, or a size mismatch.
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise ModelLoadError(f"SAM 2 checkpoint '{path}' does not exist")
    obj = _torch_load(path)
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise ModelLoadError(f"'{path}' holds no state dict (expected {{'model': state_dict}})")
    return _convert_state(state, out, str(path), size, f"converted from {path.name}")


def init_weights(size: str, out: str | Path, seed: int = 0, version: str = "2.1") -> Path:
    """Write a model folder of ``size`` with random weights (for tests and speed checks).

    The weights take the path of a real checkpoint: renamed to the official names, then
    converted by the same code as :func:`convert_checkpoint`.
    """
    config = video_config(size, version)
    with torch.random.fork_rng(devices=[]), _quiet():
        torch.manual_seed(seed)
        model = Sam2VideoModel(config)
    state = model.state_dict()
    state[keymap.GAUSSIAN_COPY] = state[keymap.GAUSSIAN]  # one matrix, as in official weights
    official = keymap.transformers_to_official(state)
    return _convert_state(official, out, f"random {size}", size, f"random init, seed {seed}")


# ---------------------------------------------------------------- reading folders


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence transformers' warnings and progress bars (our checks say what matters)."""
    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _folder(folder: str | Path) -> Path:
    p = Path(folder)
    if not p.exists():
        raise ModelLoadError(f"SAM 2 model folder '{p}' does not exist; expected {FOLDER_HINT}")
    if not p.is_dir():
        raise ModelLoadError(f"SAM 2 model '{p}' is not a folder; expected {FOLDER_HINT}")
    return p


def read_config(folder: str | Path) -> Sam2VideoConfig | Sam2Config:
    """The config of a model folder (video or image-only SAM 2), with clear errors."""
    path = _folder(folder) / CONFIG_FILE
    if not path.is_file():
        raise ModelLoadError(f"'{folder}' holds no {CONFIG_FILE}; expected {FOLDER_HINT}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"'{path}' is not readable JSON ({err})") from None
    kind = data.get("model_type") if isinstance(data, dict) else None
    classes = {"sam2_video": video_config_from_dict, "sam2": Sam2Config.from_dict}
    if kind not in classes:
        raise ModelLoadError(f"'{path}' describes a '{kind}' model, not SAM 2 "
                             "(model_type sam2_video or sam2)")
    try:
        with _quiet():
            return classes[kind](data)
    except Exception as err:  # transformers raises many kinds for a bad field
        raise ModelLoadError(f"'{path}' is not a valid SAM 2 config ({err})") from None


def weight_files(folder: str | Path) -> list[Path]:
    """The safetensors file(s) of a model folder (one file, or the shards of an index)."""
    p = _folder(folder)
    if (p / WEIGHTS_FILE).is_file():
        return [p / WEIGHTS_FILE]
    if (p / WEIGHTS_INDEX).is_file():
        try:
            index = json.loads((p / WEIGHTS_INDEX).read_text(encoding="utf-8"))
            files = sorted(set(index["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise ModelLoadError(f"'{p / WEIGHTS_INDEX}' is not a readable index ({err})") from None
        missing = [f for f in files if not (p / f).is_file()]
        if missing:
            raise ModelLoadError(f"'{p}' lacks the weights shard '{missing[0]}'")
        return [p / f for f in files]
    raise ModelLoadError(f"'{p}' holds no {WEIGHTS_FILE}; expected {FOLDER_HINT} (pickle "
                         "weights such as pytorch_model.bin are not loaded)")


def _shapes(files: list[Path]) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as handle:
                for name in handle.keys():  # noqa: SIM118 (safe_open is not a Mapping)
                    shapes[name] = tuple(handle.get_slice(name).get_shape())
        except (SafetensorError, OSError, ValueError) as err:
            raise ModelLoadError(f"'{f}' is not a readable safetensors file ({err})") from None
    return shapes


def load_sam2(folder: str | Path, video: bool = False,
              device: str | torch.device = "cpu") -> PreTrainedModel:
    """Load a model folder as ``Sam2Model`` (one image at a time) or, with ``video``,
    ``Sam2VideoModel`` (memory for propagation); float32, eval mode, all weights from disk.

    Raises ModelLoadError for a missing folder, a missing or invalid ``config.json`` or
    weights file, and weights that do not fit the config (a checkpoint of another size).
    """
    config = read_config(folder)
    if video and not isinstance(config, Sam2VideoConfig):
        raise ModelLoadError(f"'{folder}' holds an image-only SAM 2 (model_type sam2), without "
                             "the memory that propagation through frames needs")
    if not video:
        config = image_config(config)
    files = weight_files(folder)
    _check_fit(_shapes(files), _meta_model(config), str(folder), size_of(config))
    cls = Sam2VideoModel if video else Sam2Model
    try:
        with _quiet():
            model = cls.from_pretrained(str(folder), config=config, local_files_only=True,
                                        use_safetensors=True, dtype=torch.float32)
    except (OSError, ValueError, RuntimeError, SafetensorError) as err:
        raise ModelLoadError(f"cannot load SAM 2 weights from '{folder}': {err}") from None
    return model.to(device).eval()


def read_info(folder: str | Path) -> Sam2Info | None:
    """``retinaseg.json`` of a folder written by retinaseg; None for other folders."""
    path = _folder(folder) / INFO_FILE
    if not path.is_file():
        return None
    try:
        return Sam2Info(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as err:
        raise ModelLoadError(f"'{path}' is not a readable retinaseg.json ({err})") from None


_HASHES: dict[tuple[tuple[str, int, int], ...], str] = {}


def _sha256_files(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for f in files:
        with f.open("rb") as handle:
            while chunk := handle.read(1 << 24):
                digest.update(chunk)
    return digest.hexdigest()


def weights_sha256(folder: str | Path) -> str:
    """SHA-256 of the weights of a model folder (its safetensors files, in name order), read
    from disk (cached while the files keep their size and modification time)."""
    files = weight_files(folder)
    key = tuple((str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    if key not in _HASHES:
        _HASHES[key] = _sha256_files(files)
    return _HASHES[key]


def load_state(folder: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a model folder under transformers' names (for tests and tools)."""
    state: dict[str, torch.Tensor] = {}
    for f in weight_files(folder):
        state.update(load_file(str(f)))
    return state
