"""``python -m gpuds.codecs``: print the codec tables of docs/compress.md and README.md, made from
the registry (tests/test_codecs_registry.py fails until the docs hold them)."""

from gpuds.codecs.registry import markdown_table, readme_table

print("docs/compress.md:", markdown_table(), "README.md:", readme_table(), sep="\n\n")
