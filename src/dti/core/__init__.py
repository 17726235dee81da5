"""The bottom room: the method's math (sphere, RiemannianSGD, per-sample draws, the trainable rows), the
one error type, settings written once, atomic files, devices. Torch only: no model library reaches it."""
