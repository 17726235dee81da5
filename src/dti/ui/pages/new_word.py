"""New word: photos (upload or folder, thumbnails, dti's photo checks), model, token and initializer
(checked against the tokenizers), method, the family's defaults (editable), the exact command, Start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from dti.core.errors import DTIError
from dti.ui import command, forms
from dti.ui.context import Context
from dti.ui.pages.common import guarded, refusal, say

SETTING_LABELS = {
    "steps": "steps",
    "batch_size": "batch size",
    "lr": "learning rate",
    "resolution": "resolution (empty: family default, at most the model's native size)",
    "validation_every": "samples every N steps",
    "checkpoint_every": "checkpoint every N steps",
    "sample_steps": "sampler steps of the samples",
    "seed": "seed",
}
VRAM_LABEL = "memory preset: the card's GiB (dti picks the savers that fit)"


def build(ctx: Context) -> None:
    ws = ctx.workspace
    from dti import methods

    photos = gr.State([])
    with gr.Row():
        with gr.Column(scale=1):
            upload = gr.File(label="photos (3-6 of the subject)", file_count="multiple", file_types=["image"], elem_id="photos-upload")
            folder = gr.Textbox(label="or the folder that holds them", placeholder="/home/me/photos/my-dog", elem_id="photos-folder")
            thumbs = gr.Gallery(label="photos", columns=6, height=150, elem_id="thumbs", interactive=False)
            photo_notes = gr.Markdown(elem_id="photo-notes")
        with gr.Column(scale=1):
            model = gr.Dropdown(
                ["dti-mini", *ws.models()],
                value="dti-mini",
                label="model (dti-mini, a folder in models/, or a hub id)",
                allow_custom_value=True,
                elem_id="model",
            )
            with gr.Row():
                token = gr.Textbox(label="token (the new word)", placeholder="<my-dog>", elem_id="token")
                init = gr.Textbox(label="initializer (its class word)", placeholder="dog", elem_id="init")
            method = gr.Dropdown(list(methods.METHODS), value="dti", label="method", elem_id="method")
            word_notes = gr.Markdown(elem_id="word-notes")
    with gr.Accordion("settings (the family's defaults; change any)", open=True):
        with gr.Row():
            numbers = {name: gr.Number(label=label, elem_id=f"set-{name}") for name, label in SETTING_LABELS.items()}
        with gr.Row():
            numbers["vram"] = gr.Dropdown(list(command.VRAM_CHOICES), value="none", label=VRAM_LABEL, elem_id="set-vram")
            memory_note = gr.Markdown(elem_id="memory-note")
    cmd = gr.Textbox(label="the command it runs (copy it to run it yourself)", buttons=["copy"], interactive=False, elem_id="command")
    start = gr.Button("Start (put it in the queue)", variant="primary", elem_id="start")
    result = gr.Markdown(elem_id="start-result")
    names = list(numbers)

    def gather(files: list[str] | None, where: str, resolution: float | None) -> tuple[Any, ...]:
        try:
            paths = forms.collect_photos(files, where)
            notes = forms.photo_notes(paths, int(resolution) if resolution else None)
        except DTIError as exc:
            return [], [], refusal(exc)
        lines = [say(f"{len(paths)} photo(s)")] + [say(n, "note") for n in notes] if paths else []
        return [str(p) for p in paths], [str(p) for p in paths], "\n\n".join(lines)

    for source in (upload.change, folder.submit, folder.blur, numbers["resolution"].change):
        source(gather, [upload, folder, numbers["resolution"]], [photos, thumbs, photo_notes])

    @guarded(len(names) + 1, message_at=len(names))
    def defaults(model_name: str, method_name: str) -> tuple[Any, ...]:
        with ctx.lock:  # transformers' lazy imports are not thread-safe, nor is a tokenizer loading twice at once
            values = command.family_defaults(forms.model_argument(ws, model_name), method_name)
        return (*[values[n] for n in names], "")

    for source in (model.change, method.change):
        source(defaults, [model, method], [*numbers.values(), word_notes])

    def check(model_name: str, tok: str, ini: str) -> str:
        if not tok.strip() or not ini.strip():
            return ""
        try:
            with ctx.lock:
                forms.check_word(forms.model_argument(ws, model_name), tok, ini)
        except DTIError as exc:
            return refusal(exc)
        return say(f"{tok} is a new word and '{ini}' a word the model knows")

    for source in (token.change, init.change, model.change):
        source(check, [model, token, init], word_notes)

    def settings_of(values: tuple[Any, ...]) -> dict[str, Any]:
        return {n: v for n, v in zip(names, values) if v is not None}

    def preview(model_name: str, tok: str, ini: str, method_name: str, *values: Any) -> str:
        name = ws.free_name(tok or "word", {Path(j.output).name for j in ctx.queue.jobs()})
        try:
            argv = command.train_argv(
                f"photos/{name}",
                tok or "<token>",
                ini or "<init>",
                model_name or "<model>",
                f"runs/{name}",
                method_name,
                settings_of(values),
            )
        except DTIError as exc:
            return str(exc)
        return command.shown(argv, str(ws.root))

    inputs = [model, token, init, method, *numbers.values()]
    for component in inputs:
        component.change(preview, inputs, cmd)

    def memory(model_name: str, method_name: str, *values: Any) -> str:
        settings = settings_of(values)
        if settings.get("vram") in (None, "none"):
            return ""
        try:
            with ctx.lock:
                return say(command.memory_line(forms.model_argument(ws, model_name), method_name, settings), "note")
        except DTIError as exc:
            return refusal(exc)

    for component in (model, method, *numbers.values()):
        component.change(memory, [model, method, *numbers.values()], memory_note)

    def go(paths: list[str], *values: Any) -> tuple[Any, ...]:
        """Queue the word; the photos are cleared after, so the next word starts from none of them."""
        model_name, tok, ini, method_name, *rest = values
        try:
            with ctx.lock:
                job = forms.queue_word(ws, ctx.queue, [Path(p) for p in paths], model_name, tok, ini, method_name, settings_of(tuple(rest)))
        except Exception as exc:
            return (refusal(exc), *[gr.skip()] * 6)
        ctx.ensure_worker()
        done = say(f"queued {job.name} into {job.output}; follow it on the Queue page")
        return done, command.shown(job.argv, str(ws.root)), None, "", [], [], ""

    start.click(go, [photos, *inputs], [result, cmd, upload, folder, photos, thumbs, photo_notes])
    return model, method, numbers, cmd, defaults, preview, inputs
