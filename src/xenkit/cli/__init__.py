"""The xenkit command line: thin wrappers that parse, call and render."""
