"""What a run writes, one callback per kind of file: the run's config, its log, concept snapshots,
sample grids, the norm plot, the files other tools load, checkpoints, and the concept itself.

The :class:`~dti.training.loop.Trainer` calls each callback in list order at the start of a run
(after its checkpoint is restored), after every step the host has read, and when the last step is
done; only the main process of a run that has a folder writes. The default order is the order the
files must appear in: the concept comes last, so a folder that holds ``concept.safetensors`` holds
a finished run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dti.concepts.formats import write, write_diffusers
from dti.core.files import save_image, write_json
from dti.core.version import __version__
from dti.models import model_record
from dti.training.plots import plot_norms
from dti.training.run_folder import WEBUI_DIR

if TYPE_CHECKING:
    from dti.concepts.concept import Concept
    from dti.training.loop import Trainer


class Callback:
    """One kind of file a run writes; every hook may be left as is."""

    def on_start(self, trainer: Trainer, resumed: bool) -> None:
        """The run is set up (and, ``resumed``, its checkpoint restored); no step has run yet."""

    def on_step(self, trainer: Trainer, step: int, record: dict[str, Any], loss: float | None) -> None:
        """Step ``step`` is read on the host (``loss`` None: it was skipped)."""

    def on_finish(self, trainer: Trainer, concept: Concept) -> None:
        """The last step is done; ``concept`` is the result."""


def every(step: int, n: int) -> bool:
    return bool(n) and step % n == 0


class ConfigFile(Callback):
    """``config.json``: the resolved settings, with local paths made absolute so that ``--resume``
    works from any folder."""

    def on_start(self, trainer: Trainer, resumed: bool) -> None:
        assert trainer.run is not None
        write_json(trainer.run.config, recorded_config(trainer.config))


class LogWriter(Callback):
    """``train_log.jsonl``: the step-0 record, then every ``log_every``-th step, every skipped one and the last."""

    def on_start(self, trainer: Trainer, resumed: bool) -> None:
        assert trainer.run is not None
        c = trainer.config
        if trainer.step_count == 0:
            trainer.run.rewrite_log(trainer.records[:1])
        elif resumed:  # the log as of the checkpoint: what the killed run logged after it is dropped
            logged = [r for r in trainer.records if r["step"] == 0 or r["step"] % max(c.log_every, 1) == 0 or r.get("skipped")]
            trainer.run.rewrite_log(logged)

    def on_step(self, trainer: Trainer, step: int, record: dict[str, Any], loss: float | None) -> None:
        assert trainer.run is not None
        c = trainer.config
        if step % max(c.log_every, 1) == 0 or step == c.steps or loss is None:
            trainer.run.append_log(record)


class Snapshots(Callback):
    """``snapshots/concept-step-N.safetensors`` every ``snapshot_every`` steps before the last."""

    def on_step(self, trainer: Trainer, step: int, record: dict[str, Any], loss: float | None) -> None:
        assert trainer.run is not None
        if every(step, trainer.config.snapshot_every) and step < trainer.config.steps:
            trainer.concept(step).save(trainer.run.snapshot(step))


class SampleGrids(Callback):
    """With ``validation_every``: ``samples/step-0.png`` before the first step (the initializer word, what
    training starts from: the first thing a person watching a run wants to see) and ``samples/step-N.png``
    every ``validation_every`` steps; at the end ``samples/step-<steps>.png`` and ``samples.png``."""

    def on_start(self, trainer: Trainer, resumed: bool) -> None:
        assert trainer.run is not None
        c = trainer.config
        if c.validate and c.validation_every > 0 and not resumed and trainer.step_count == 0:
            save_image(trainer.samples(), trainer.run.sample_grid(0))

    def on_step(self, trainer: Trainer, step: int, record: dict[str, Any], loss: float | None) -> None:
        assert trainer.run is not None
        c = trainer.config
        if c.validate and every(step, c.validation_every) and step < c.steps:
            save_image(trainer.samples(), trainer.run.sample_grid(step))

    def on_finish(self, trainer: Trainer, concept: Concept) -> None:
        assert trainer.run is not None
        if trainer.config.validate:
            sheet = trainer.samples()
            save_image(sheet, trainer.run.sample_grid(trainer.config.steps))
            save_image(sheet, trainer.run.work / "samples.png")


class NormsPlot(Callback):
    """``norms.png``: each row's norm over training against the vocabulary's range."""

    def on_finish(self, trainer: Trainer, concept: Concept) -> None:
        assert trainer.run is not None
        c = trainer.config
        plot_norms(trainer.records, trainer.stats, trainer.run.norms_plot, title=f"{c.token} ({c.method}, init '{c.init}')")


class ToolFiles(Callback):
    """The files other tools load: diffusers' ``learned_embeds*.safetensors`` and the single file of
    A1111 / ComfyUI / kohya in ``webui/`` (named after the trigger word)."""

    def on_finish(self, trainer: Trainer, concept: Concept) -> None:
        assert trainer.run is not None
        write_diffusers(concept, trainer.run.work)
        write(concept, "a1111", trainer.run.work / WEBUI_DIR / f"{trainer.webui_name}.safetensors")


class LoraFiles(Callback):
    """A run with ``--lora``: diffusers' ``pytorch_lora_weights.safetensors`` and kohya's
    ``webui/<trigger>-lora.safetensors`` (A1111 / ComfyUI; the word bundled in it)."""

    def on_finish(self, trainer: Trainer, concept: Concept) -> None:
        assert trainer.run is not None
        if trainer.lora is not None:
            webui = trainer.run.work / WEBUI_DIR / f"{trainer.webui_name}-lora.safetensors"
            roles = [role.component for role in type(trainer.adapter).roles]
            trainer.lora.write(trainer.run.work, webui, concept, trainer.webui_name, roles)


class Checkpoints(Callback):
    """``checkpoints/step-N.pt`` every ``checkpoint_every`` steps, and the last step's (so a finished
    run can be trained further); the last ``keep_checkpoints`` are kept."""

    def on_step(self, trainer: Trainer, step: int, record: dict[str, Any], loss: float | None) -> None:
        if every(step, trainer.config.checkpoint_every) and step < trainer.config.steps:
            trainer.save_checkpoint()

    def on_finish(self, trainer: Trainer, concept: Concept) -> None:
        if trainer.config.checkpoint_every:
            trainer.save_checkpoint()


class ConceptFile(Callback):
    """``concept.safetensors``, written last: its presence means the run finished."""

    def on_finish(self, trainer: Trainer, concept: Concept) -> None:
        assert trainer.run is not None
        concept.save(trainer.run.concept)


def default_callbacks() -> Sequence[Callback]:
    """Every file of a run folder, in the order they must be written."""
    return (ConfigFile(), LogWriter(), Snapshots(), SampleGrids(), NormsPlot(), ToolFiles(), LoraFiles(), Checkpoints(), ConceptFile())


def recorded_config(config: Any) -> dict[str, Any]:
    """The resolved config as saved with the run: the photos' folder and a local model folder made
    absolute, so ``--resume`` works from any folder (a hub id or ``dti-mini`` is kept as given)."""
    from pathlib import Path

    data = {**config.to_dict(), "dti_version": __version__}
    data["photos"] = str(Path(config.photos).resolve())
    data["model"] = model_record(config.model)
    return data
