"""Words and rows in a loaded tokenizer and text encoder: vocabulary norms, placeholder and initializer
rules, prompt templates, and the one attach path that routes a word's ids to its rows."""
