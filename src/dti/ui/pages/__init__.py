"""One module per page of the app; each ``build(ctx)`` adds its tab's components and events (gradio only here)."""
