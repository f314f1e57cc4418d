"""Which checkpoint a run resumes from, and whether its files are whole.

A run killed while saving leaves a folder without `trainer_state.json` (the Trainer writes it last): such a folder is
not a checkpoint. A checkpoint can still be damaged afterwards (a full disk, a copy cut short, bit rot): its files are
checked from their headers and archive directories, without loading tensors or unpickling anything, and the run
resumes from the newest intact one, naming every damaged file it skipped.
"""

import json
import logging
import re
import zipfile
import zlib
from pathlib import Path

from safetensors import SafetensorError, safe_open
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

logger = logging.getLogger(__name__)


class DamagedCheckpointError(RuntimeError):
    """A checkpoint the run would resume from has a truncated or unreadable file; the message names each one."""


_TORCH_SUFFIXES = (".pt", ".pth", ".bin")
_CHECKPOINT_NAME = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


def _safetensors_damage(path: Path) -> str | None:
    """Why a safetensors file cannot load, or None when it can: the safetensors library parses the header and checks
    that the file holds exactly the bytes it describes (a file cut short while saving does not); no tensor is read."""
    try:
        with safe_open(str(path), framework="pt"):
            return None
    except SafetensorError as error:
        return f"cannot be read as safetensors ({error}; {path.stat().st_size:,} bytes)"


def _torch_file_damage(path: Path) -> str | None:
    """Why a `torch.save` file (`optimizer.pt`, `rng_state.pth`, `training_args.bin`, ...) cannot load, or None.

    Such a file is a zip archive: its central directory must be readable (a truncated archive has lost it) and every
    member must match its CRC-32. Nothing is unpickled. The data is read once, as resuming reads it anyway; a
    member without a CRC (`torch.serialization.set_crc32_options(False)`) is only checked for presence.
    """
    with open(path, "rb") as f:
        magic = f.read(4)
    if not magic:
        return "empty (0 bytes)"
    if magic.startswith(b"\x80"):
        return None  # torch's legacy pickle format: nothing to check without unpickling it
    if not magic.startswith(b"PK"):
        return f"not a torch zip archive (it starts with bytes {magic.hex()})"
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.CRC == 0 and info.file_size > 0:
                    continue
                with archive.open(info) as member:
                    while member.read(1 << 20):
                        pass
    except (zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError) as error:
        return f"damaged or truncated zip archive ({path.stat().st_size:,} bytes: {error})"
    return None


def _json_damage(path: Path) -> str | None:
    """Why a JSON file (`trainer_state.json`, `config.json`, ...) does not parse, or None; an index of shards must
    also name only shards that exist next to it."""
    text = path.read_bytes()
    if not text:
        return "empty (0 bytes)"
    try:
        content = json.loads(text)
    except (ValueError, UnicodeDecodeError) as error:
        return f"not valid JSON ({error}; {len(text):,} bytes)"
    if path.name.endswith(".index.json") and isinstance(content, dict):
        shards = set((content.get("weight_map") or {}).values())
        missing = sorted(shard for shard in shards if not (path.parent / shard).is_file())
        if missing:
            return f"names shard(s) {missing} that are missing"
    return None


def _file_damage(path: Path) -> str | None:
    """Why one checkpoint file cannot be loaded, judged by its kind (safetensors, torch zip, JSON), or None."""
    try:
        if path.suffix == ".safetensors":
            return _safetensors_damage(path)
        if path.suffix in _TORCH_SUFFIXES:
            return _torch_file_damage(path)
        if path.suffix == ".json":
            return _json_damage(path)
        return None
    except OSError as error:
        return f"unreadable ({type(error).__name__}: {error.strerror or error})"


def checkpoint_damage(checkpoint: str | Path) -> list[str]:
    """Every damaged file of a checkpoint folder, as 'checkpoint-8/trainer_state.json: not valid JSON (...)';
    empty when the folder looks loadable.

    Checks what resuming loads, without loading whole tensors: safetensors headers against file lengths, shard
    indexes against the shards present, JSON files, and `torch.save` zip archives. Files of other kinds are not
    judged.
    """
    checkpoint = Path(checkpoint)
    try:
        files = sorted(path for path in checkpoint.rglob("*") if path.is_file() or path.is_symlink())
    except OSError as error:
        return [f"{checkpoint.name}: unreadable folder ({error.strerror or error})"]
    damage = []
    for path in files:
        reason = _file_damage(path)
        if reason is not None:
            damage.append(f"{checkpoint.name}/{path.relative_to(checkpoint).as_posix()}: {reason}")
    return damage


def _complete_checkpoints(output_dir: Path) -> list[Path]:
    """The `checkpoint-<step>` folders of `output_dir` that hold a `trainer_state.json`, newest (highest step) first.

    The Trainer writes that state last; a run killed while saving leaves a folder without it, which is skipped."""
    complete = [
        path
        for path in output_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*")
        if _CHECKPOINT_NAME.match(path.name) and (path / TRAINER_STATE_NAME).exists()
    ]
    return sorted(complete, key=lambda path: int(_CHECKPOINT_NAME.match(path.name).group(1)), reverse=True)


def resume_checkpoint(training_args) -> str | None:
    """The checkpoint to resume from: the one the user named, else the newest intact complete one in `output_dir`.

    - A checkpoint is complete once the Trainer has written its `trainer_state.json`, which it does last; a run
      killed while saving leaves a folder without it, and resuming falls back to the checkpoint before.
    - A complete checkpoint can still be damaged (a full disk, a copy cut short): each is checked with
      `checkpoint_damage`, a damaged one is skipped with a warning naming the file, and the newest intact one wins.
      When every checkpoint is damaged, `DamagedCheckpointError` lists the files instead of resuming from nothing.
    - A checkpoint named with `--resume_from_checkpoint` is used as named, or, when damaged, refused with the file
      named: the user asked for that one, so no other is picked silently.
    """
    named = training_args.resume_from_checkpoint
    if named:
        damage = checkpoint_damage(named) if Path(named).is_dir() else []
        if damage:
            raise DamagedCheckpointError(
                f"Cannot resume from {named}, which --resume_from_checkpoint names: it is damaged.\n  - "
                + "\n  - ".join(damage)
                + "\nName an intact checkpoint, or leave --resume_from_checkpoint unset to resume from the newest "
                "intact one in the output_dir."
            )
        return named
    output_dir = Path(training_args.output_dir)
    if not output_dir.is_dir():
        return None
    checkpoints = _complete_checkpoints(output_dir)
    all_damage = []
    for checkpoint in checkpoints:
        damage = checkpoint_damage(checkpoint)
        if not damage:
            logger.warning(f"Resuming from the last intact checkpoint in {output_dir}: {checkpoint}")
            return str(checkpoint)
        logger.warning(f"Skipping damaged checkpoint {checkpoint}:\n  - " + "\n  - ".join(damage))
        all_damage += damage
    if not checkpoints:
        return None
    folders = " ".join(str(checkpoint) for checkpoint in checkpoints)
    raise DamagedCheckpointError(
        f"Every checkpoint in {output_dir} is damaged, so the run cannot resume:\n  - "
        + "\n  - ".join(all_damage)
        + f"\nDelete them (rm -r {folders}) to train from the start in this output_dir, or start over with "
        "another --output_dir."
    )
