"""The hospital archive over DICOMweb: finding slides, annotations to and from it."""
