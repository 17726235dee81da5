"""dti: Directional Textual Inversion for text-to-image diffusion models.

Learn a new word for a subject from a few photos by optimizing only the direction of its
embedding on the unit sphere, at a fixed in-distribution norm (Kim et al., ICLR 2026).
"""

from dti.concepts.concept import Concept, EncoderVectors
from dti.core.errors import DTIError
from dti.core.optim import RiemannianSGD
from dti.core.version import __version__
from dti.training.config import TrainConfig
from dti.training.multi import train_manifest
from dti.training.session import resume, train
from dti.training.stopping import RunStopped
from dti.use.loading import load, unload

__all__ = [
    "Concept",
    "DTIError",
    "EncoderVectors",
    "RiemannianSGD",
    "RunStopped",
    "TrainConfig",
    "__version__",
    "load",
    "resume",
    "train",
    "train_manifest",
    "unload",
]
