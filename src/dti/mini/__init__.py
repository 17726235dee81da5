"""A toy text-to-image world with exact ground truth (`dti.mini.world`) and a judge that scores images of it (`dti.mini.judge`)."""
