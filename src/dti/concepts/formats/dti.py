"""``dti``: our self-describing ``concept.safetensors`` (its layout is :mod:`dti.concepts.concept`'s)."""

from __future__ import annotations

from pathlib import Path

from dti.concepts.concept import CONCEPT_FILENAME, FORMAT_NAME, Concept
from dti.concepts.formats.base import Format, Job, RawFile, save_job


class DTIFormat(Format):
    name = "dti"
    writes = ("dti",)

    def sniff(self, raw: RawFile) -> bool:
        return raw.metadata.get("format") == FORMAT_NAME

    def read(self, raw: RawFile, token: str | None, problems: list[str] | None) -> Concept:
        concept = Concept.load(raw.path, problems)
        return concept.renamed(token) if token else concept

    def paths(self, concept: Concept, fmt: str, out: Path) -> list[Path]:
        return [out / CONCEPT_FILENAME if out.suffix != ".safetensors" else out]

    def jobs(self, concept: Concept, fmt: str, paths: list[Path]) -> list[Job]:
        return [(paths[0], save_job(*concept.serialize()))]
