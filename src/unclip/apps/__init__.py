"""Applications built on the library: the command line, the demo, bench, the web app.

Nothing in the library imports this package (DESIGN.md section 2: arrows point down).
"""
