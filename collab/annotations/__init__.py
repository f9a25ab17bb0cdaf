"""Annotations of a slide: geometry checks, the spatial index, the server's corrections, the audit
of what users change, QuPath GeoJSON in and out, and their HTTP routes."""
