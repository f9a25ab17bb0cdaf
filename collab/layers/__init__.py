"""Detection layers: cells and other objects from image analysis, kept apart from the live document."""
