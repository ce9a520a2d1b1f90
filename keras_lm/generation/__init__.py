"""Generation engine: prefill, compiled decode chunks, beams and contrastive search."""
