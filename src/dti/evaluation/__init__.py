"""Measure what the paper measures: score generated images against the subject's photos and the prompt.

`protocol` defines the :class:`Scorer` every metric implements and how a prompt is read by a
text metric (the token replaced by the class word); `stats` the bootstrap intervals every report
quotes; `mini` the dti-mini judge as a scorer. Real backbones (DINOv2, SigLIP, CLIP, DINO) live
in `backbones`; `prompts`, `cache`, `runner` and `report` make `dti evaluate`; `sweep` trains
a manifest's subjects x methods.
"""
