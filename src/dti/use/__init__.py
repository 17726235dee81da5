"""Using a learned word, never training one: loading it into a pipeline, generating, blending,
inspecting, converting between tools."""
