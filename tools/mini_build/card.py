"""The model card of a dti-mini folder (README.md), written from the facts stored beside it:
``dti_mini.json`` (architecture, training), ``quality.json`` (the judge's quality gate) and
``probe.json`` (word use). Export, evaluate and probe rewrite it; by hand:

    python -m tools.mini_build.card src/dti/mini/dti-mini
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tools.mini_build import Parser, script

from dti.core.errors import DTIError
from dti.core.files import write_text

GATE_SINGLE, GATE_JOINT = 0.85, 0.60
WEIGHTING = {"min-snr": "Min-SNR-5 loss weighting", "uniform": "unweighted v-prediction loss"}


def _params(folder: Path) -> dict[str, float]:
    """Millions of parameters per component, counted from the weight files."""
    from safetensors.torch import load_file

    return {
        part: sum(t.numel() for f in (folder / part).glob("*.safetensors") for t in load_file(f).values()) / 1e6
        for part in ("unet", "text_encoder_2", "vae")
    }


def refresh_card(report: str | Path) -> None:
    """Rewrite the card when a report (quality.json, probe.json) was just written into a model folder."""
    folder = Path(report).parent
    if Path(report).name in ("quality.json", "probe.json") and (folder / "dti_mini.json").is_file():
        write_card(folder)


def write_card(folder: str | Path) -> Path:
    """Write ``folder/README.md`` from the folder's facts; returns its path."""
    folder = Path(folder)
    if not (folder / "dti_mini.json").is_file():
        raise DTIError(f"{folder}: no dti_mini.json there; pass a folder exported by tools.mini_build.train_base")
    info = json.loads((folder / "dti_mini.json").read_text())
    quality = json.loads((folder / "quality.json").read_text()) if (folder / "quality.json").is_file() else None
    probe = json.loads((folder / "probe.json").read_text()) if (folder / "probe.json").is_file() else None
    params = _params(folder)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20
    t = info.get("training", {})
    weighting = WEIGHTING[t.get("weighting", "min-snr")]
    flags = "".join(
        f" {flag} {value}"
        for flag, value in (("--vae-from", t.get("vae_from")), ("--weighting", t.get("weighting")), ("--high-noise", t.get("high_noise")))
        if value and value != "min-snr"
    )
    vae = f"VAE {t.get('vae_steps', '?')} steps first"
    if t.get("vae_from"):
        vae = f"the VAE ({t.get('vae_steps', '?')} steps) of the dti-mini that was in `{t['vae_from']}` when this run began, frozen"
    if t.get("high_noise"):
        weighting += f", {t['high_noise']:.0%} of each batch drawn from t >= 800"
    lines = [
        "# dti-mini",
        "",
        "A small text-to-image diffusion model trained from scratch by `python -m tools.mini_build.train_base` on the procedurally "
        "rendered world of `dti.mini.world` (coloured shapes in five positions on plain and textured backgrounds, 32x32 px). "
        "It ships with dti so that personalization can be tried, tested and measured offline on a CPU.",
        "",
        "## Architecture (the classes of the large models)",
        "",
        f"- `CLIPTokenizer` over the world's {info.get('vocabulary_words', 45)} words (every word one BPE token), max length "
        f"{info['config']['max_length']}.",
        f"- `CLIPTextModelWithProjection`: {info['config']['text_layers']} pre-norm layers, width {info['config']['text_hidden']}, "
        f"learned absolute positions ({params['text_encoder_2']:.2f} M parameters); token and position embeddings "
        f"initialized with std {info['config'].get('text_embed_init_std', 0.02)} (CLIP's own init is 0.02).",
        f"- `UNet2DConditionModel` on 16x16x4 latents, channels {info['config']['unet_channels']}, cross-attention, SDXL's "
        f"`text_time` conditioning ({params['unet']:.2f} M parameters).",
        f"- `AutoencoderKL`, one 2x downsampling ({params['vae']:.2f} M parameters); latent scale {info['latent_scale']:.4f}.",
        "- Assembled as `StableDiffusionXLPipeline` with a single text encoder (`text_encoder_2`): the UNet reads the "
        "penultimate hidden states with no final LayerNorm, plus the pooled projection, exactly SDXL's conditioning.",
        f"- `DPMSolverMultistepScheduler`, {info['config']['prediction_type']}, {info['config']['beta_schedule']} schedule.",
        f"- Weights in fp16; {size:.1f} MB on disk.",
        "",
        "## Training",
        "",
        f"- {info['steps']} steps of the UNet + text encoder (batch {t.get('batch', '?')}, AdamW lr {t.get('lr', '?')}, "
        f"cosine decay, {weighting}, 10% empty captions, EMA {t.get('ema', '?')}); {vae}.",
        f"- Training time {info['train_seconds'] / 3600:.2f} h of the UNet stage on {t.get('hardware', 'the CPU')}, "
        f"seed {t.get('seed', 0)}.",
        *(
            [
                "- Learning rate as trained (the cosine's length can change on resume): "
                + ", ".join(f"step {k}: {v:.2e}" for k, v in t["lr_by_step"].items())
                + "."
            ]
            if t.get("lr_by_step")
            else []
        ),
        "- Data: fresh renders every step from `dti.mini.world.sample_caption`; the held-out (shape, colour, texture) "
        "combinations and the appearance of every personalization subject never appear.",
        *(
            [
                "- These weights were trained while batches still came from one running random stream; the current script "
                "draws batch k from (seed, k), so it trains the same recipe on another sample of the same distribution."
            ]
            if t.get("data", "sequential") == "sequential"
            else []
        ),
        "",
    ]
    if quality:
        acc = quality["accuracy"]
        passed = all(v >= GATE_SINGLE for v in acc.values()) and quality["joint"] >= GATE_JOINT
        lines += [
            "## Quality gate (judge on held-out captions)",
            "",
            f"{quality['captions']} full captions of held-out combinations, one image each ({quality['sampler_steps']} sampler steps, "
            f"guidance {quality['guidance']}), read by `dti.mini.judge`. Target: every attribute >= {GATE_SINGLE:.0%}, all "
            f"attributes of a caption jointly >= {GATE_JOINT:.0%}. **{'Passed' if passed else 'Not passed'}.**",
            "",
            "| " + " | ".join(acc) + " | joint |",
            "|" + "---|" * (len(acc) + 1),
            "| " + " | ".join(f"{v:.1%}" for v in acc.values()) + f" | {quality['joint']:.1%} |",
            "",
            "Joint accuracy by number of objects: " + ", ".join(f"{k}: {v:.1%}" for k, v in quality["by_objects"].items()) + ".",
            "",
        ]
        for name, label in (("clean_renders", "the judge on clean renders"), ("vae_reconstructions", "the judge on VAE reconstructions")):
            if name in quality.get("ceiling", {}):
                c = quality["ceiling"][name]
                lines.append(
                    f"Ceiling, {label} of the same scenes: joint {c['joint']:.1%}, weakest attribute "
                    + "{} {:.1%}.".format(*min(c["accuracy"].items(), key=lambda kv: kv[1]))
                )
        lines.append("")
    if probe:
        lines += [
            "## Word use (`python -m tools.mini_build.probe`)",
            "",
            f"Denoising loss on {probe['scenes']} single-object renders with one word of the caption swapped for a wrong one, "
            "relative to the true caption (mean over t = " + ", ".join(str(t) for t in probe["true_loss"]) + "). "
            "About 0 means the model ignores that kind of word.",
            "",
            "| " + " | ".join(probe["use"]) + " |",
            "|" + "---|" * len(probe["use"]),
            "| " + " | ".join(f"{row['mean']:+.1%}" for row in probe["use"].values()) + " |",
            "",
        ]
    lines += [
        f"Reproduce: `python -m tools.mini_build.train_base --out runs/mini-base{flags} --export src/dti/mini/dti-mini --overwrite` "
        "(with `--resume` and "
        "the `--steps` of each leg to follow the learning rate above), then "
        "`python -m tools.mini_build.evaluate --out src/dti/mini/dti-mini/quality.json` and "
        "`python -m tools.mini_build.probe --out src/dti/mini/dti-mini/probe.json`. Train on from these weights with "
        "`--init-from src/dti/mini/dti-mini`."
    ]
    return write_text(folder / "README.md", "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Rewrite a model folder's card: 0 when done, 2 with one ``error:`` line for bad input."""
    p = Parser(__doc__, prog="python -m tools.mini_build.card")
    p.add_argument("folder", help="an exported dti-mini folder (holds dti_mini.json)")
    return script(p, argv, lambda args: print(f"wrote {write_card(args.folder)}"))


if __name__ == "__main__":
    sys.exit(main())
