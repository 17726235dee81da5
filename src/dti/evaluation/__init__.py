"""Measure what the paper measures: score generated images against the subject's photos and the prompt.

`protocol` defines the :class:`Scorer` every metric implements and how a prompt is read by a
text metric (the token replaced by the class word); `scorers` holds one module per metric
(DINOv2, SigLIP, CLIP, DINO, the dti-mini judge), registered by name; `stats` the bootstrap
intervals every report quotes; `prompts`, `cache`, `runner` and `report` make `dti evaluate`;
`demo` is `dti demo`'s scored walk through dti-mini. Sweeps that train the runs live in
:mod:`dti.training.sweep`; this room reads their index and never imports the command line.
"""
