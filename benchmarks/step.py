"""One dti training step against its floor: the denoiser's own forward + backward (issue 12).

    python benchmarks/step.py --family FAMILY [--tiny] [--device cpu|cuda]
        [--batch N] [--resolution PX] [--precision fp32|bf16|fp16] [--compile] [--gradient-checkpointing] [--quantize SCHEME]
        [--steps N] [--warmup N] [--threads N] [--photos FOLDER] --json OUT

Builds the pipeline in this process, never downloading (HF_HUB_OFFLINE=1): ``--tiny`` takes the
tiny test pipeline of ``dti.testing.build_tiny`` (saved, then loaded with ``from_pretrained``);
without it the full-size architecture with RANDOM weights from ``benchmarks/full_configs.py``.
Then, in one run:

(a) floor: the denoiser's forward + backward to its conditioning input alone. The conditioning
    tensors a real step fed the denoiser (and the same noisy latents and timesteps) are copied as
    leaves that require grad; weights stay frozen; same batch, resolution, dtype; an MSE loss.
(b) step: ``dti.training.loop.Trainer.step()`` after ``setup()`` on the same pipeline.
(c) parts of the step, timed inside the real ``Trainer.step`` by wrapping the adapter's and the
    trainer's own callables and by autograd hooks (no copy of the step's code): data (zero_grad,
    sample indices, ``SubjectData.batch``, per-sample generators, crop infos), latents
    (``LatentCache.sample``), each text encoder's forward, the rest of the prompt encoding,
    denoiser forward, denoiser backward (until the conditioning's gradient is complete), the
    text encoders' backward (until the trainable rows' gradient is), the rest of the loss (noise,
    timesteps, MSE), the update around the optimizer (gradient finiteness, the device-side guard
    that can undo a bad step, the record's norms and angles), the optimizer step, and the host
    sync (``Trainer.step`` reading the step's row with ``.tolist()``).
    On CUDA every boundary synchronizes, so these runs are separate from (b)'s clean timing.
(d) deferred: ``--steps`` steps launched back to back (``Trainer.launch``) and read once, as
    ``Trainer.fit`` runs them on a GPU (it reads every ``SYNC_EVERY`` steps): the mean per step.
    On the CPU it equals (b); on CUDA the difference is what the per-step host sync cost.

Each repetition runs floor, step and instrumented step in turn, in an order rotated each time
(so load on a shared machine, and any after-effect of the call before, hit all three alike);
medians of ``--steps`` after ``--warmup``; ``step_over_floor`` is the ratio of the medians,
``step_over_floor_paired`` the median of each repetition's step / floor.

Peak memory: ``torch.cuda.max_memory_allocated`` of one step (and of one floor call) on CUDA, the
process's max RSS (``getrusage``, whole run, build included) on the CPU. Time to first step: load
(tiny: ``from_pretrained``; full size: random initialisation, which stands in for reading
weights) + ``Trainer.setup`` + the first ``Trainer.step`` (which encodes its crops with the VAE,
and compiles with ``--compile``: what ``dti train --compile`` compiles, the repeated blocks of the
denoiser and of every text encoder, see ``dti.training.compiling``; the floor then runs the compiled denoiser too).

The synthetic subject (default) is 4 noise photos of exactly the resolution, so every crop is
the same and, after the first steps, ``LatentCache`` always hits: (b) is the steady-state step.
``--photos`` trains on real photos (random crops: VAE encodes inside timed steps are counted).
The JSON (``--json``) holds ``floor_ms``, ``step_ms``, ``step_over_floor``, ``parts_ms``,
``peak_memory_mb``, ``first_step_s``, the machine, versions, date and command.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
#: full_configs.FAMILIES' names; ``<family>-<size>`` (wan-14b) is the family at another size (``--tiny``: the family's tiny pipeline)
FAMILIES = (
    *("sd", "sdxl", "sd3", "flux", "pixart", "sana", "chroma", "lumina2", "qwenimage", "wan", "wan-14b"),
    *("zimage", "flux2_klein", "flux2_klein-9b", "hidream"),
)
#: parts every run reports (plus ``text_encoder_fwd:<component>`` per text encoder)
PART_NAMES = (
    "data",
    "latents",
    "encode_prompt_other",
    "denoiser_fwd",
    "denoiser_bwd",
    "text_encoders_bwd",
    "loss_other",
    "update",
    "optimizer",
    "host_sync",
    "other",
)


# ------------------------------------------------------------------ clocks
class Clock:
    """``perf_counter`` that first waits for the GPU (a CUDA boundary is only real after a sync)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()


def median_ms(values: Sequence[float]) -> float:
    return round(statistics.median(values) * 1000, 3)


# ------------------------------------------------------------------ building
def synthetic_photos(count: int, size: int, seed: int = 0) -> list[Any]:
    """``count`` smooth noise photos of ``size`` x ``size`` (content does not matter for timing)."""
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    photos = []
    for _ in range(count):
        low = torch.rand(1, 3, max(size // 16, 2), max(size // 16, 2), generator=g)
        img = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)[0]
        photos.append(Image.fromarray((img.permute(1, 2, 0) * 255).to(torch.uint8).numpy()))
    return photos


def build_pipe(args: argparse.Namespace, dtype: torch.dtype, device: torch.device, workdir: Path) -> tuple[Any, dict[str, float]]:
    """(pipeline, timings): tiny = build + save (scaffolding) then ``load_adapter`` (timed as load);
    full size = random initialisation on the device (timed as load)."""
    times: dict[str, float] = {}
    if args.tiny:
        from dti.models import load_adapter
        from dti.testing import build_tiny

        t0 = time.perf_counter()
        name = args.family.split("-")[0]
        folder = build_tiny(name, workdir / name)
        times["build_tiny_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        pipe = load_adapter(folder, dtype, device, quiet=True).pipe
        times["load_s"] = time.perf_counter() - t0
        return pipe, times
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    from full_configs import build_pipeline

    t0 = time.perf_counter()
    pipe = build_pipeline(args.family, dtype, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    times["load_s"] = time.perf_counter() - t0
    return pipe, times


def compile_mode(adapter: Any) -> str:
    """What ``--compile`` compiles in training (``dti.training.compiling``): each network's repeated blocks."""
    from dti.training.compiling import repeated_blocks

    parts = []
    for net in (adapter.denoiser, *(slot.text_encoder for slot in adapter.encoders)):
        names = sorted({type(b).__name__ for b in repeated_blocks(net)}) or [f"{type(net).__name__} (whole)"]
        parts.append(", ".join(names))
    return "regional: " + "; ".join(parts)


# ------------------------------------------------------------------ floor
def leaves(obj: Any) -> Any:
    """A copy of a (nested) denoiser argument: tensors on the gradient path become leaves that
    require grad, the others plain detached tensors."""
    if isinstance(obj, torch.Tensor):
        copy = obj.detach().clone()
        return copy.requires_grad_(True) if obj.requires_grad else copy
    if isinstance(obj, dict):
        return {k: leaves(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(leaves(v) for v in obj)
    return obj


def grad_tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj] if obj.requires_grad else []
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in grad_tensors(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in grad_tensors(v)]
    return []


class Floor:
    """The denoiser call of a real step, replayed: ``predict(noisy, t, cond)`` + MSE + backward to
    the conditioning leaves only (the adapter's ``predict`` is the denoiser call with the family's
    argument plumbing: FLUX's latent packing, the DiTs' variance half)."""

    def __init__(self, adapter: Any) -> None:
        self.adapter = adapter
        self.predict = type(adapter).predict.__get__(adapter)
        self.args: tuple[torch.Tensor, torch.Tensor, dict[str, Any]] | None = None
        self.target: torch.Tensor | None = None

    @contextlib.contextmanager
    def capturing(self) -> Iterator[None]:
        """While active, every ``adapter.predict`` call of the trainer is recorded (the last one kept)."""

        def wrapped(noisy, timesteps, cond):
            self.args = (noisy.detach().clone(), timesteps.detach().clone(), leaves(cond))
            return self.predict(noisy, timesteps, cond)

        with patched(self.adapter, "predict", wrapped):
            yield

    def __call__(self) -> None:
        assert self.args is not None, "no denoiser call captured"
        noisy, timesteps, cond = self.args
        conditioning = grad_tensors(cond)
        for t in conditioning:
            t.grad = None
        pred = self.predict(noisy, timesteps, cond)
        if self.target is None:
            self.target = torch.randn(pred.shape, generator=torch.Generator().manual_seed(0)).to(pred.device)
        F.mse_loss(pred.float(), self.target).backward()
        assert all(t.grad is not None for t in conditioning), "the floor did not reach the conditioning"

    def conditioning_shapes(self) -> list[list[int]]:
        assert self.args is not None
        return [list(t.shape) for t in grad_tensors(self.args[2])]


def with_tensors(obj: Any, replacements: Iterator[torch.Tensor]) -> Any:
    """``obj`` with its gradient-path tensors (in :func:`grad_tensors` order) replaced."""
    if isinstance(obj, torch.Tensor):
        return next(replacements) if obj.requires_grad else obj
    if isinstance(obj, dict):
        return {k: with_tensors(v, replacements) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(with_tensors(v, replacements) for v in obj)
    return obj


class _Barrier(torch.autograd.Function):
    """Identity on the conditioning tensors whose backward marks the end of the denoiser's backward."""

    @staticmethod
    def forward(ctx, probe, *tensors):
        ctx.probe = probe
        return tuple(t.view_as(t) for t in tensors)

    @staticmethod
    def backward(ctx, *grads):
        ctx.probe.mark("denoiser_bwd_end")
        return (None, *grads)


@contextlib.contextmanager
def patched(obj: Any, name: str, value: Any) -> Iterator[None]:
    """Set an instance attribute for the duration (shadowing the class's method), then remove it."""
    had = name in vars(obj)
    old = vars(obj).get(name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        if had:
            setattr(obj, name, old)
        else:
            delattr(obj, name)


# ------------------------------------------------------------------ parts
class StepProbe:
    """Marks the boundaries of one real ``Trainer.step`` (wrappers around the trainer's own
    callables, module hooks on the text encoders, autograd hooks on the conditioning and the
    trainable rows) and turns them into disjoint parts that add up to the step."""

    def __init__(self, trainer: Any, clock: Clock) -> None:
        self.trainer, self.adapter, self.clock = trainer, trainer.adapter, clock
        self.slots = [(slot.name, slot.text_encoder) for slot in self.adapter.encoders]
        self.marks: dict[str, float] = {}
        self.encoder_time: dict[str, float] = {}
        self._open: dict[str, float] = {}

    def mark(self, key: str, latest: bool = False) -> None:
        now = self.clock.now()
        self.marks[key] = max(now, self.marks.get(key, now)) if latest else now

    def _timed(self, fn: Callable[..., Any], start: str, end: str, after: Callable[[Any], None] | None = None) -> Callable[..., Any]:
        def wrapper(*args, **kwargs):
            self.mark(start)
            out = fn(*args, **kwargs)
            self.mark(end)
            if after is not None:
                after(out)
            return out

        return wrapper

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        t, a = self.trainer, self.adapter

        def on_loss(loss: torch.Tensor) -> None:
            loss.register_hook(lambda grad: self.mark("bwd_start"))

        def predict(noisy, timesteps, cond):
            # one identity node between the conditioning and the denoiser: its backward runs once the
            # denoiser's gradient to all of the conditioning is complete, and before any text encoder's
            cond = with_tensors(cond, iter(_Barrier.apply(self, *grad_tensors(cond))))
            self.mark("predict_start")
            out = type(a).predict(a, noisy, timesteps, cond)
            self.mark("predict_end")
            return out

        handles = []
        for name, module in self.slots:
            handles.append(module.register_forward_pre_hook(lambda m, args, name=name: self._open.__setitem__(name, self.clock.now())))
            handles.append(module.register_forward_hook(lambda m, args, out, name=name: self._close(name)))
        for param in t.trainable():
            handles.append(param.register_post_accumulate_grad_hook(lambda p: self.mark("bwd_end", latest=True)))
        with contextlib.ExitStack() as stack:
            stack.enter_context(patched(t.cache, "sample", self._timed(t.cache.sample, "latents_start", "latents_end")))
            stack.enter_context(patched(a, "loss", self._timed(a.loss, "loss_start", "loss_end", on_loss)))
            stack.enter_context(patched(a, "condition", self._timed(a.condition, "condition_start", "condition_end")))
            stack.enter_context(patched(a, "predict", predict))
            stack.enter_context(patched(t.optimizer, "step", self._timed(t.optimizer.step, "optimizer_start", "optimizer_end")))
            stack.enter_context(patched(t, "update", self._timed(t.update, "update_start", "update_end")))
            try:
                yield
            finally:
                for h in handles:
                    h.remove()

    def _close(self, name: str) -> None:
        self.encoder_time[name] = self.encoder_time.get(name, 0.0) + self.clock.now() - self._open.pop(name)

    def step(self) -> tuple[dict[str, float], float, bool]:
        """One instrumented ``trainer.step()``: (parts in seconds, total seconds, finite)."""
        self.marks, self.encoder_time = {}, {}
        self.mark("start")
        loss = self.trainer.step()
        self.mark("end")
        m = self.marks
        finite = loss is not None
        if "optimizer_start" not in m:  # fp16's skipped step: no optimizer call
            m["optimizer_start"] = m["optimizer_end"] = m["update_end"]
        encoders = sum(self.encoder_time.values())
        condition = m["condition_end"] - m["condition_start"]
        predict = m["predict_end"] - m["predict_start"]
        parts = {
            "data": (m["latents_start"] - m["start"]) + (m["loss_start"] - m["latents_end"]),
            "latents": m["latents_end"] - m["latents_start"],
            **{f"text_encoder_fwd:{name}": self.encoder_time.get(name, 0.0) for name, _ in self.slots},
            "encode_prompt_other": condition - encoders,
            "denoiser_fwd": predict,
            "loss_other": (m["loss_end"] - m["loss_start"]) - condition - predict,
            "denoiser_bwd": m["denoiser_bwd_end"] - m["bwd_start"],
            "text_encoders_bwd": m["bwd_end"] - m["denoiser_bwd_end"],
            "update": (m["optimizer_start"] - m["bwd_end"]) + (m["update_end"] - m["optimizer_end"]),
            "optimizer": m["optimizer_end"] - m["optimizer_start"],
            "host_sync": m["end"] - m["update_end"],
            "other": m["bwd_start"] - m["loss_end"],
        }
        return parts, m["end"] - m["start"], finite


def count_syncs(trainer: Any, steps: int) -> dict[str, Any]:
    """The host syncs ``steps`` launched steps make, by CUDA's sync debug mode: the count per step
    and where they come from (file:line of the Python caller), dti's own and the pipeline's."""
    import warnings

    where: collections.Counter[str] = collections.Counter()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(steps):
                trainer.launch(trainer.step_count + 1)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for w in caught:
        if "synchroniz" in str(w.message):
            where[f"{Path(w.filename).parent.name}/{Path(w.filename).name}:{w.lineno}"] += 1
    return {"per_step": round(sum(where.values()) / steps, 2), "sources": dict(where.most_common())}


# ------------------------------------------------------------------ the run
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", required=True, choices=FAMILIES)
    p.add_argument("--tiny", action="store_true", help="the tiny test pipeline (dti.testing.build_tiny) instead of full size")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--resolution", type=int, default=None, help="default: 64 tiny, else the family's training default")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"), help="auto: bf16 on CUDA, fp32 on CPU")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--quantize", default="none", help="dti train --quantize: the frozen linear layers' scheme (none, int8, fp8, nf4, int4)")
    p.add_argument("--steps", type=int, default=10, help="timed repetitions of each measurement (medians)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--photos", default=None, help="a folder of real photos instead of the synthetic subject")
    p.add_argument("--json", required=True, help="write the results here")
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.batch < 1:
        p.error("--steps and --batch must be positive, --warmup not negative")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda, but torch sees no CUDA device")
    return args


def machine(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "gpu": None,
    }
    with contextlib.suppress(OSError):
        info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def max_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def run(args: argparse.Namespace) -> dict[str, Any]:
    import diffusers
    import transformers

    from dti.core.devices import resolve_dtype
    from dti.models import adapter_for
    from dti.training.config import TrainConfig, resolve
    from dti.training.data import Sample, load_photos
    from dti.training.loop import Trainer

    device = torch.device(args.device)
    dtype = resolve_dtype(args.precision, device)
    clock = Clock(device)
    result: dict[str, Any] = {
        "family": args.family,
        "setting": "tiny" if args.tiny else "full",
        "device": args.device,
        "precision": str(dtype).replace("torch.", ""),
        "batch": args.batch,
        "compile": args.compile,
        "gradient_checkpointing": args.gradient_checkpointing,
        "quantize": args.quantize,
        "steps": args.steps,
        "warmup": args.warmup,
        "machine": machine(device),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": ["python", "benchmarks/step.py", *sys.argv[1:]] if args.argv is None else ["python", "benchmarks/step.py", *args.argv],
    }
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with tempfile.TemporaryDirectory() as tmp:
        pipe, times = build_pipe(args, dtype, device, Path(tmp))
        t_setup = time.perf_counter()
        adapter = adapter_for(pipe)
        resolution = args.resolution or (64 if args.tiny else None)
        synthetic = args.photos is None
        config = TrainConfig(
            photos=args.photos or "(synthetic)",
            token="<bench>",
            init="dog",
            model=f"{args.family}-{result['setting']}",
            resolution=resolution,
            batch_size=args.batch,
            grad_accum=1,  # one micro-batch of --batch: the floor's batch (SANA's default is 2 x 2)
            precision=args.precision,
            device=args.device,
            gradient_checkpointing=args.gradient_checkpointing,
            quantize=args.quantize,
            compile=args.compile,
            validate=False,
            progress=False,
            checkpoint_every=0,
        )
        config = resolve(config, adapter.defaults, adapter.native_resolution())
        result["resolution"] = config.resolution
        photos = synthetic_photos(4, config.resolution) if synthetic else load_photos(args.photos)
        trainer = Trainer(config, adapter, photos, run=None)
        trainer.setup()
        setup_s = time.perf_counter() - t_setup
        floor = Floor(adapter)
        if args.compile:  # compiled by the trainer's own setup (config.compile), as `dti train --compile` does
            result["compile_mode"] = compile_mode(adapter)
        nonfinite = 0
        with floor.capturing():
            t0 = clock.now()
            nonfinite += trainer.step() is None
            first_step = clock.now() - t0
            if synthetic:  # every photo's one crop encoded now, so timed steps always hit the cache
                for i in range(len(trainer.data)):
                    trainer.cache.distribution(trainer.data, Sample(i, 0, 0, ""))
            for _ in range(args.warmup):
                nonfinite += trainer.step() is None
        t0 = clock.now()
        floor()
        first_floor = clock.now() - t0
        for _ in range(args.warmup):
            floor()
        peak: dict[str, float] = {}
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            floor()
            peak["floor"] = torch.cuda.max_memory_allocated(device) / 2**20
            torch.cuda.reset_peak_memory_stats(device)
            nonfinite += trainer.step() is None
            peak["step"] = torch.cuda.max_memory_allocated(device) / 2**20
        encodes_before = trainer.cache.encodes
        probe = StepProbe(trainer, clock)
        floor_times, step_times, parts_runs, probe_totals = [], [], [], []

        def timed_floor() -> None:
            t0 = clock.now()
            floor()
            floor_times.append(clock.now() - t0)

        def timed_step() -> None:
            nonlocal nonfinite
            t0 = clock.now()
            nonfinite += trainer.step() is None
            step_times.append(clock.now() - t0)

        def probed_step() -> None:
            nonlocal nonfinite
            with probe.installed():
                parts, total, finite = probe.step()
            parts_runs.append(parts)
            probe_totals.append(total)
            nonfinite += not finite

        # floor, step and instrumented step in turn, the order rotated each repetition: load on a
        # shared machine and any after-effect of the previous call fall on all three alike
        turns = [timed_floor, timed_step, probed_step]
        for i in range(args.steps):
            for fn in turns[i % 3 :] + turns[: i % 3]:
                fn()
        # (d) launched back to back, read once
        t0 = clock.now()
        start = trainer.step_count
        rows = [(start + k + 1, trainer.launch(start + k + 1)) for k in range(args.steps)]
        read = torch.stack([row for _, row in rows]).tolist()
        deferred_s = (clock.now() - t0) / args.steps
        nonfinite += sum(trainer.settle(s, r) is None for (s, _), r in zip(rows, read))
        syncs = count_syncs(trainer, 3) if device.type == "cuda" else None
        encodes_timed = trainer.cache.encodes - encodes_before
        cond_shapes = floor.conditioning_shapes()
        trainer.detach()

    floor_ms, step_ms = median_ms(floor_times), median_ms(step_times)
    parts_ms = {k: median_ms([p[k] for p in parts_runs]) for k in parts_runs[0]}
    parts_ms["denoiser_fwd_bwd"] = round(parts_ms["denoiser_fwd"] + parts_ms["denoiser_bwd"], 3)
    if device.type == "cuda":
        peak_mb, peak_kind = round(peak["step"], 1), "torch.cuda.max_memory_allocated during one step"
        result["peak_memory_floor_mb"] = round(peak["floor"], 1)
    else:
        peak_mb, peak_kind = max_rss_mb(), "process max RSS (getrusage), whole run incl. building the model"
    first_step_s = times["load_s"] + setup_s + times.get("compile_call_s", 0.0) + first_step
    result.update(
        {
            "floor_ms": floor_ms,
            "step_ms": step_ms,
            "step_over_floor": round(step_ms / floor_ms, 4),
            "step_deferred_ms": round(deferred_s * 1000, 3),
            "step_deferred_over_floor": round(deferred_s * 1000 / floor_ms, 4),
            "syncs_per_launched_step": syncs,
            # median over the repetitions of step_i / floor_i (each pair ran in the same repetition): steadier under drifting load
            "step_over_floor_paired": round(statistics.median(s / f for s, f in zip(step_times, floor_times)), 4),
            "parts_ms": parts_ms,
            "parts_step_ms": median_ms(probe_totals),
            # what the step spends outside the denoiser, from the parts (median of each run's sum)
            "outside_denoiser_ms": median_ms([sum(p.values()) - p["denoiser_fwd"] - p["denoiser_bwd"] for p in parts_runs]),
            "peak_memory_mb": peak_mb,
            "peak_memory_kind": peak_kind,
            "first_step_s": round(first_step_s, 3),
            "first_step_parts_s": {
                **{k: round(v, 3) for k, v in times.items()},
                "setup_s": round(setup_s, 3),
                "first_step_s": round(first_step, 3),
                "first_floor_call_s": round(first_floor, 3),
            },
            "floor_ms_all": [round(t * 1000, 3) for t in floor_times],
            "step_ms_all": [round(t * 1000, 3) for t in step_times],
            "parts_step_ms_all": [round(t * 1000, 3) for t in probe_totals],
            "conditioning_shapes": cond_shapes,
            "text_encoders": [name for name, _ in probe.slots],
            "nonfinite_steps": int(nonfinite),
            "vae_encodes_in_timed_steps": encodes_timed,
            "subject": "synthetic: 4 noise photos at the resolution (cache always hits)" if synthetic else str(args.photos),
        }
    )
    if args.compile:
        # the first step minus a steady one: what compilation added (plus the first crops' VAE encodes)
        result["compile_s_estimate"] = round(first_step - step_ms / 1000, 3)
    if device.type != "cuda":
        with contextlib.suppress(OSError):
            result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return result


def summary(r: dict[str, Any]) -> str:
    parts = {k: v for k, v in r["parts_ms"].items() if k != "denoiser_fwd_bwd"}
    top = sorted(parts.items(), key=lambda kv: -kv[1])[:5]
    head = (
        f"{r['family']} {r['setting']} {r['device']} {r['precision']} batch {r['batch']} {r['resolution']} px"
        f"{' compiled' if r['compile'] else ''}{' checkpointed' if r['gradient_checkpointing'] else ''}"
    )
    gpu = r["machine"]["gpu"] or f"{r['machine']['cpu_count']} CPU cores, {r['machine']['torch_threads']} threads"
    return "\n".join(
        [
            f"{head} ({gpu}; torch {r['torch']}, diffusers {r['diffusers']}, transformers {r['transformers']})",
            f"  floor (denoiser fwd+bwd to the conditioning) {r['floor_ms']:.1f} ms | dti step {r['step_ms']:.1f} ms | "
            f"step / floor {r['step_over_floor']:.2f} (paired {r['step_over_floor_paired']:.2f}) | "
            f"deferred reads {r['step_deferred_ms']:.1f} ms ({r['step_deferred_over_floor']:.2f})",
            f"  parts (instrumented step {r['parts_step_ms']:.1f} ms): " + ", ".join(f"{k} {v:.1f}" for k, v in top),
            f"  denoiser fwd+bwd inside the step {r['parts_ms']['denoiser_fwd_bwd']:.1f} ms, outside it "
            f"{r['outside_denoiser_ms']:.1f} ms; peak memory {r['peak_memory_mb']:.0f} MB "
            f"({r['peak_memory_kind']}); first step after {r['first_step_s']:.1f} s; non-finite steps {r['nonfinite_steps']}",
        ]
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    args.argv = None if argv is None else list(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    try:
        result = run(args)
    finally:
        torch.set_num_threads(threads)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(summary(result))
    return result


if __name__ == "__main__":
    main()
