"""The New word form without the page: gathering and checking photos, checking the word against the
model's tokenizers, and putting the job in the queue. Every refusal is one DTIError line the page shows."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dti.core.errors import DTIError
from dti.ui.command import train_argv
from dti.ui.queue import Job, Queue
from dti.ui.safety import MAX_PHOTOS, check_upload
from dti.ui.workspace import PHOTOS, RUNS, Workspace


def collect_photos(uploads: Sequence[str | os.PathLike] | None, folder: str | None) -> list[Path]:
    """The photos of the form: uploaded files (each checked for type and size), or a folder's images."""
    from dti.training.data import list_images

    paths = [check_upload(p) for p in uploads or []]
    if folder and folder.strip():
        place = Path(folder.strip()).expanduser()
        if not place.is_dir():
            raise DTIError(f"{folder} is not a folder; give the folder that holds the photos")
        paths += [check_upload(p) for p in list_images(place)]
    if len(paths) > MAX_PHOTOS:
        raise DTIError(f"{len(paths)} photos; a word learns from 3-6, give at most {MAX_PHOTOS}")
    return paths


def photo_notes(paths: Sequence[Path], resolution: int | None = None) -> list[str]:
    """dti's own photo warnings, as the run would print them: too few, and (given the run's
    ``resolution``; the native one is known only once the weights load) smaller than the crops."""
    from dti.training.data import check_photos, load_image

    if not paths:
        return []
    return check_photos([load_image(p) for p in paths], resolution or 0)


def check_word(model: str, token: str, init: str) -> None:
    """The token must be new and the initializer known in every tokenizer of ``model`` (no weights load)."""
    from dti.models import load_tokenizers, model_hints
    from dti.training.checks import check_family_words, check_words

    if not token.strip():
        raise DTIError("the token is missing; give the new word, e.g. <my-dog>")
    if not init.strip():
        raise DTIError("the initializer is missing; give the subject's class word, e.g. dog")
    cls, tokenizers = load_tokenizers(model)
    check_family_words(cls, token)
    check_words(tokenizers, token, init, model_hints(model).get("class_words", []))


def model_argument(workspace: Workspace, model: str) -> str:
    """A model as the command takes it: ``dti-mini``, a hub id, or a local folder inside the workspace."""
    model = model.strip()
    if not model:
        raise DTIError("the model is missing; choose dti-mini, a folder in models/ or a hub id")
    local = workspace.root / model
    if "/" in model and (local / "model_index.json").is_file():
        return workspace.relative(local)
    if Path(model).is_absolute():
        raise DTIError(f"{model}: put local models in the workspace's models/ folder and choose them from the list")
    return model


def queue_word(
    workspace: Workspace,
    queue: Queue,
    photos: Sequence[Path],
    model: str,
    token: str,
    init: str,
    method: str,
    settings: Mapping[str, Any],
) -> Job:
    """Check everything, copy the photos into ``photos/<name>/`` and queue the run into ``runs/<name>/``."""
    if not photos:
        raise DTIError("no photos yet; upload 3-6 photos of the subject or give their folder")
    model = model_argument(workspace, model)
    check_word(model, token, init)
    name = workspace.free_name(token, {Path(j.output).name for j in queue.jobs()})
    photo_dir, output = f"{PHOTOS}/{name}", f"{RUNS}/{name}"
    argv = train_argv(photo_dir, token, init, model, output, method, settings)
    target = workspace.root / photo_dir
    target.mkdir(parents=True)
    for i, path in enumerate(photos):
        shutil.copyfile(path, target / f"{i:02d}{path.suffix.lower()}")
    return queue.add(token, argv, output)
