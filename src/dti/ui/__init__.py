"""``dti ui``: a local web app over a workspace folder (new words, the queue, words, play, evaluate).

Small modules, one job each: ``workspace`` (the folder's layout, paths that stay inside it), ``queue``
(the job list as one JSON file, edited under a lock), ``command`` (the ``dti train`` command a form
makes), ``worker`` (the one process that runs the queue), ``safety`` (host, auth, uploads), ``live``
(what a run folder says while it trains), ``app`` and ``pages/`` (the Gradio page; gradio is imported
only there, so dti works without it).
"""
