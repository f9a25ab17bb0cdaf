"""Slides: the registry, Deep Zoom tiles of slide files, the generated demo slide, HTTP."""
