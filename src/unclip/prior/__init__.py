"""Priors P(z_i | y): from a caption's CLIP text encoding to a CLIP image embedding."""
