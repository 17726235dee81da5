"""The page: five tabs over one workspace, and serving it (local, offline, files from the workspace only)."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from dti.ui.context import Context
from dti.ui.safety import MAX_UPLOAD_BYTES
from dti.ui.workspace import Workspace

TITLE = "dti"


def offline_environment(workspace: Workspace) -> None:
    """Before gradio is imported: no analytics, and its cache (every image it serves) inside the workspace."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ["GRADIO_TEMP_DIR"] = str(workspace.cache)
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def build(ctx: Context) -> Any:
    """The Blocks app of ``ctx``'s workspace."""
    offline_environment(ctx.workspace)
    import gradio as gr
    import transformers  # noqa: F401  imported here, once: its lazy imports race when two events first need it at once
    from diffusers import DiffusionPipeline  # noqa: F401
    from transformers import AutoTokenizer  # noqa: F401

    from dti.ui.pages import evaluate, new_word, play, queue_page, words

    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        gr.Markdown(f"## dti · Directional Textual Inversion\nworkspace `{ctx.workspace.root}`")
        with gr.Tabs():
            with gr.Tab("New word", id="new"):
                model, method, numbers, cmd, defaults, preview, inputs = new_word.build(ctx)
            with gr.Tab("Queue", id="queue"):
                queue_page.build(ctx)
            with gr.Tab("Words", id="words") as words_tab:
                word_pick, word_listing = words.build(ctx)
            with gr.Tab("Play", id="play") as play_tab:
                play_picks, play_listing = play.build(ctx)
            with gr.Tab("Evaluate", id="evaluate") as eval_tab:
                eval_runs, eval_listing = evaluate.build(ctx)
        words_tab.select(word_listing, None, word_pick)
        play_tab.select(play_listing, None, list(play_picks))
        eval_tab.select(eval_listing, None, eval_runs)
        demo.load(defaults, [model, method], [*numbers.values(), gr.Markdown(visible=False)]).then(preview, inputs, cmd)
    return demo


def serve(
    workspace: Workspace, host: str, port: int, auth: tuple[str, str] | None, start_worker: bool = True, block: bool = True
) -> tuple[Any, Context]:
    """Start the worker and the server; ``block`` waits until Ctrl-C, then stops the worker (its job is
    checkpointed and stays queued)."""
    ctx = Context(workspace, start_worker)
    demo = build(ctx)
    ctx.ensure_worker()
    demo.queue(default_concurrency_limit=4)
    try:
        demo.launch(
            server_name=host,
            server_port=port,
            auth=auth,
            allowed_paths=[str(workspace.root)],
            max_file_size=MAX_UPLOAD_BYTES,
            share=False,
            inbrowser=False,
            prevent_thread_lock=True,  # dti waits itself (below): a Ctrl-C always ends the server
            quiet=True,
            footer_links=[],
            ssr_mode=False,
            pwa=False,
            mcp_server=False,
            show_error=False,
        )
    except BaseException:
        ctx.stop_worker()
        raise
    if block:
        try:
            while True:
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass
        finally:
            ctx.stop_worker()
            closing = threading.Thread(target=demo.close, daemon=True)  # gradio's close is bounded; never wait past 15 s
            closing.start()
            closing.join(15)
    return demo, ctx
