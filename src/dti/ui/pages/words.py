"""Words: every finished word with its samples, norm chart, what ``dti inspect`` says (nearest vocabulary
words included, measured on the run's model), its files for each tool to download, and conversion."""

from __future__ import annotations

from typing import Any

import gradio as gr

from dti.concepts import formats
from dti.ui.context import Context
from dti.ui.pages.common import guarded, say


def build(ctx: Context) -> Any:
    ws = ctx.workspace
    with gr.Row():
        pick = gr.Dropdown(ws.runs(finished=True), value=None, label="word (a finished run)", elem_id="word-pick", scale=3)
        reload = gr.Button("Refresh the list", elem_id="word-refresh", scale=1)
    message = gr.Markdown(elem_id="word-message")
    with gr.Row():
        samples = gr.Image(label="samples", type="filepath", interactive=False, elem_id="word-samples")
        norms = gr.Image(label="norm over training", type="filepath", interactive=False, elem_id="word-norms")
    report = gr.Textbox(
        label="dti inspect (with the run's model: nearest vocabulary words)", lines=12, interactive=False, elem_id="word-inspect"
    )
    files = gr.File(
        label="files for each tool (dti, diffusers, A1111 / ComfyUI / kohya)",
        file_count="multiple",
        interactive=False,
        elem_id="word-files",
    )
    with gr.Row():
        to = gr.Dropdown(list(formats.FORMATS), value="comfyui", label="convert to", elem_id="convert-to")
        convert = gr.Button("Convert", elem_id="convert")
    converted = gr.File(label="converted", file_count="multiple", interactive=False, elem_id="converted")

    def listing() -> Any:
        return gr.update(choices=ws.runs(finished=True))

    reload.click(listing, None, pick)

    @guarded(5)
    def open_word(run: str | None) -> tuple[Any, ...]:
        from dti.use.inspection import format_report, inspect

        if not run:
            return "", None, None, "", []
        folder = ws.inside(run)
        with ctx.lock:
            pipe = ctx.pipeline(ctx.run_model(run))
            text = format_report(inspect(folder / "concept.safetensors", pipe, top=8))
        made = [p for p in sorted(folder.rglob("*.safetensors")) if p.parent.name not in ("snapshots", "checkpoints")]
        sheet = folder / "samples.png"
        plot = folder / "norms.png"
        return (
            say(f"{run}: {len(made)} file(s)"),
            str(sheet) if sheet.is_file() else None,
            str(plot) if plot.is_file() else None,
            text,
            [str(p) for p in made],
        )

    pick.change(open_word, pick, [message, samples, norms, report, files])

    @guarded(2)
    def convert_word(run: str | None, fmt: str) -> tuple[Any, ...]:
        from dti.use.convert import convert as convert_concept

        if not run:
            return say("choose a word first", "error"), None
        folder = ws.inside(run)
        target = ws.inside(f"{run}/converted/{fmt}")
        if target.is_dir() and any(target.iterdir()):  # converted before: the same files (nothing is replaced unasked)
            found = sorted(p for p in target.rglob("*") if p.is_file())
            return say(f"{len(found)} file(s) for {fmt}, converted before, in {ws.relative(target)}"), [str(p) for p in found]
        written = convert_concept(folder / "concept.safetensors", fmt, target)
        return say(f"wrote {len(written)} file(s) for {fmt} into {ws.relative(target)}"), [str(p) for p in written]

    convert.click(convert_word, [pick, to], [message, converted])
    return pick, listing
