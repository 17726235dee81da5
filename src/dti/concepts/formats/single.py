"""One file for every encoder, keyed by encoder kind: the layout A1111, ComfyUI, kohya, InvokeAI and
OneTrainer read. ``{clip_l, clip_g}`` for SDXL, ``{clip_l, t5xxl, t5}`` for FLUX, ... (every key a tool
looks up for a kind: :data:`~dti.models.kinds.KIND_KEYS`); one CLIP encoder (SD 1.x/2.x) is
``{emb_params}``. The file is named after the token: that name is what A1111 users type."""

from __future__ import annotations

from pathlib import Path

import torch

from dti.concepts.concept import Concept, EncoderVectors
from dti.concepts.formats.base import Format, Job, RawFile, file_token, matrix, metadata, problem, save_job, single
from dti.concepts.kinds import components_for_kinds, key_kinds, single_file_keys
from dti.core.errors import DTIError
from dti.models.kinds import ONE_CLIP_KEYS
from dti.text.words import file_stem


class KeyedFile(Format):
    """Read: entries named by encoder kind (ComfyUI's, A1111's and OneTrainer's keys). Write: the
    single file of ``--to a1111 / comfyui / kohya``."""

    name = "single-file"
    writes = ("a1111", "comfyui", "kohya", "invokeai", "onetrainer")

    def sniff(self, raw: RawFile) -> bool:
        return any(k in key_kinds() for k in raw.data)

    def read(self, raw: RawFile, token: str | None, problems: list[str] | None) -> Concept:
        by_key = key_kinds()
        keyed = [k for k in raw.data if k in by_key]
        groups: dict[str, list[str]] = {}
        for key in keyed:
            groups.setdefault(by_key[key], []).append(key)
        for keys in groups.values():  # several keys of one kind (t5xxl and t5) must be copies of one block
            first = raw.data[keys[0]]
            for other in keys[1:]:
                value = raw.data[other]
                same = isinstance(first, torch.Tensor) and isinstance(value, torch.Tensor) and first.shape == value.shape
                if not (same and torch.equal(first, value)):
                    raise DTIError(
                        f"{raw.path}: entries {sorted(keys)} name the same encoder twice with different vectors; the file is inconsistent"
                    )
        extra = sorted(set(map(str, raw.data)) - set(keyed) - {"dti_meta"})
        if extra:
            raise DTIError(f"{raw.path}: unexpected entries {extra} beside {sorted(keyed)}; the file is inconsistent")
        components = components_for_kinds(set(groups))
        if components is None:
            raise DTIError(f"{raw.path}: no supported model family has exactly the encoders {sorted(keyed)}; check the file")
        encoders = {
            components[kind]: EncoderVectors(matrix(raw.data[keys[0]], raw.path, keys[0], problems), kind=kind)
            for kind, keys in groups.items()
        }
        counts = {e.n_vectors for e in encoders.values()}
        if len(counts) != 1:
            problem(
                problems, raw.path, f"{', '.join(sorted(keyed))} have different vector counts {sorted(counts)}; the file is inconsistent"
            )
        carried = dict(raw.carried)
        carried.pop("encoder_kinds", None)
        name = file_token(raw, token, raw.stored_name, problems)
        return Concept(name, encoders, {"method": "unknown", **carried, "source_format": "single-file"})

    def paths(self, concept: Concept, fmt: str, out: Path) -> list[Path]:
        single_file_keys(concept.encoders, concept.meta, fmt)  # refuses a concept no single file holds
        return [out if out.suffix.lower() == ".safetensors" else out / f"{file_stem(concept.token)}.safetensors"]

    def jobs(self, concept: Concept, fmt: str, paths: list[Path]) -> list[Job]:
        keys = single_file_keys(concept.encoders, concept.meta, fmt)
        return [(paths[0], save_job({key: concept.encoders[name].vectors for key, name in keys.items()}, metadata(concept, fmt)))]


class KohyaFile(Format):
    """Read: ``{emb_params: [n, d]}``, one encoder (kohya's, A1111's and ComfyUI's SD 1.x/2.x layout),
    or OneTrainer's spelling of it, ``emp_params``."""

    name = "kohya"

    def sniff(self, raw: RawFile) -> bool:
        return any(key in raw.data for key in ONE_CLIP_KEYS.values())

    def read(self, raw: RawFile, token: str | None, problems: list[str] | None) -> Concept:
        key = next(key for key in ONE_CLIP_KEYS.values() if key in raw.data)
        vectors = matrix(raw.data[key], raw.path, key, problems)
        return single(vectors, file_token(raw, token, raw.stored_name, problems), "kohya", raw.carried)
