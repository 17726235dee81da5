"""A learned word as data: the Concept, its blocks per encoder and their kinds, blending, and the files
of every tool (``concepts.formats``)."""
