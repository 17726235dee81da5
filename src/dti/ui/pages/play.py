"""Play: generate with a word; blend two words by slerp (dti's blend and interpolation renderer, as
``dti interpolate``) and move a slider along the strip."""

from __future__ import annotations

from typing import Any

import gradio as gr

from dti.ui.context import Context
from dti.ui.pages.common import guarded, say

BLENDS = 7  # weights 0, 1/6, ..., 1
SHOWN = 192  # a frame is shown at least this large (dti-mini draws 32 px)


def shown(image: Any) -> Any:
    """A small image scaled up for the page, pixels kept sharp."""
    from PIL import Image

    scale = max(1, SHOWN // max(image.size))
    return image.resize((image.width * scale, image.height * scale), Image.NEAREST) if scale > 1 else image


def build(ctx: Context) -> Any:
    ws = ctx.workspace
    runs = ws.runs(finished=True)
    gr.Markdown("### Generate with a word")
    with gr.Row():
        word = gr.Dropdown(runs, value=None, label="word", elem_id="play-word")
        prompt = gr.Textbox("a {}", label="prompt ({} is the word)", elem_id="play-prompt")
        seed = gr.Number(0, label="seed", precision=0, elem_id="play-seed")
        steps = gr.Number(20, label="sampler steps", precision=0, elem_id="play-steps")
    generate = gr.Button("Generate", elem_id="play-generate")
    images = gr.Image(label="images (one per seed)", type="pil", interactive=False, elem_id="play-images")
    gr.Markdown("### Blend two words (slerp: the direction turns from A to B at the fixed norm)")
    with gr.Row():
        a = gr.Dropdown(runs, value=None, label="word A", elem_id="blend-a")
        b = gr.Dropdown(runs, value=None, label="word B", elem_id="blend-b")
        blend_prompt = gr.Textbox("a {}", label="prompt", elem_id="blend-prompt")
        blend_steps = gr.Number(20, label="sampler steps", precision=0, elem_id="blend-steps")
    make = gr.Button("Make the blend strip", elem_id="blend-make")
    message = gr.Markdown(elem_id="play-message")
    frames = gr.State([])
    with gr.Row():
        slider = gr.Slider(0, 1, value=0, step=1 / (BLENDS - 1), label="weight of B", elem_id="blend-slider", scale=2)
        frame = gr.Image(label="the blend at this weight", type="pil", interactive=False, elem_id="blend-frame", height=160, scale=1)
    strip = gr.Image(label="the strip (rows: seeds; columns: weight of B)", type="filepath", interactive=False, elem_id="blend-strip")

    @guarded(2)
    def make_images(run: str | None, text: str, s: float, n: float) -> tuple[Any, ...]:
        from dti.concepts.formats import read
        from dti.core.images import grid
        from dti.use.generate import generate as generate_images

        if not run:
            return say("choose a word first", "error"), None
        concept = read(ws.inside(run) / "concept.safetensors")
        with ctx.lock:
            pipe = ctx.pipeline(ctx.run_model(run))
            shots = generate_images(pipe, text.replace("{}", concept.token), [concept], n=2, seed=int(s or 0), sample_steps=int(n or 20))
        sheet = grid([[shown(s) for s in shots]], col_labels=[f"seed {int(s or 0) + i}" for i in range(len(shots))])
        return say(f"{len(shots)} images of {concept.token}"), sheet

    generate.click(make_images, [word, prompt, seed, steps], [message, images])

    @guarded(4)
    def make_strip(run_a: str | None, run_b: str | None, text: str, n: float) -> tuple[Any, ...]:
        from dti.concepts.blend import blend
        from dti.concepts.formats import read
        from dti.core.files import save_image
        from dti.use.generate import interpolation_grid, interpolation_images

        if not run_a or not run_b:
            return say("choose words A and B", "error"), [], None, None
        first, second = read(ws.inside(run_a) / "concept.safetensors"), read(ws.inside(run_b) / "concept.safetensors")
        weights = [i / (BLENDS - 1) for i in range(BLENDS)]
        mix = blend(first, second, weights, "slerp")
        with ctx.lock:
            pipe = ctx.pipeline(ctx.run_model(run_a))
            columns = interpolation_images(pipe, mix, text, [0], int(n or 20), 5.0)
        name = f"{run_a.split('/')[-1]}--{run_b.split('/')[-1]}"
        path = save_image(interpolation_grid(columns, weights, [0]), ws.inside(f"blends/{name}.png"))
        shots = [shown(column[0]) for column in columns]
        return say(f"slerp from {first.token} to {second.token}: {BLENDS} weights"), shots, shots[0], str(path)

    make.click(make_strip, [a, b, blend_prompt, blend_steps], [message, frames, frame, strip]).then(lambda: 0, None, slider)

    def show(weight: float, shots: list) -> Any:
        if not shots:
            return None
        return shots[round(float(weight) * (len(shots) - 1))]

    slider.change(show, [slider, frames], frame)

    def listing() -> tuple[Any, ...]:
        found = ws.runs(finished=True)
        return gr.update(choices=found), gr.update(choices=found), gr.update(choices=found)

    return (word, a, b), listing
