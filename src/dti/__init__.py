"""dti: Directional Textual Inversion for text-to-image diffusion models.

Learn a new word for a subject from a few photos by optimizing only the direction of its
embedding on the unit sphere, at a fixed in-distribution norm (Kim et al., ICLR 2026).
"""

__version__ = "0.1.0"

from dti.concept import Concept, EncoderVectors
from dti.config import TrainConfig
from dti.errors import DTIError
from dti.loading import load, unload
from dti.multi import train_manifest
from dti.optim import RiemannianSGD
from dti.stopping import RunStopped
from dti.trainer import resume, train

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
