"""dti: Directional Textual Inversion for text-to-image diffusion models.

Learn a new word for a subject from a few photos by optimizing only the direction of its
embedding on the unit sphere, at a fixed in-distribution norm (Kim et al., ICLR 2026).

The public API is one function per verb of the ``dti`` command, plus the nouns:

- learn: :func:`train`, :func:`resume`, :func:`train_manifest` (many subjects at once), :func:`sweep`
- use: :func:`load` / :func:`unload` (into a diffusers pipeline), :func:`generate`, :func:`interpolate`
- files: :func:`inspect`, :func:`convert`, :func:`rescale`
- measure: :func:`evaluate`
- nouns: :class:`Concept`, :class:`EncoderVectors`, :class:`TrainConfig`, :class:`RiemannianSGD`,
  :class:`DTIError` (bad input, one line), :class:`RunStopped` (a run that stopped, resumable)
"""

from dti.concepts.concept import Concept, EncoderVectors
from dti.core.errors import DTIError
from dti.core.optim import RiemannianSGD
from dti.core.version import __version__
from dti.evaluation.runner import evaluate
from dti.training.config import TrainConfig
from dti.training.multi import train_manifest
from dti.training.session import resume, train
from dti.training.stopping import RunStopped
from dti.training.sweep import sweep
from dti.use.convert import convert, rescale
from dti.use.generate import generate
from dti.use.inspection import inspect
from dti.use.interpolate import interpolate
from dti.use.loading import load, unload

__all__ = [
    "Concept",
    "DTIError",
    "EncoderVectors",
    "RiemannianSGD",
    "RunStopped",
    "TrainConfig",
    "__version__",
    "convert",
    "evaluate",
    "generate",
    "inspect",
    "interpolate",
    "load",
    "rescale",
    "resume",
    "sweep",
    "train",
    "train_manifest",
    "unload",
]
