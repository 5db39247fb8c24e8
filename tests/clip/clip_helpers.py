"""Shared constants and tiny configs for the CLIP tests (a uniquely named module, so that
importing it cannot collide with another test directory's ``conftest``)."""

from unclip.clip import CLIPConfig

CAPTIONS = ["a red circle", "a blue square", "a green star left of a red circle", "a yellow triangle"]


def tiny_config(vocab_size: int, **overrides) -> CLIPConfig:
    """A CLIP of ~50k parameters on 16 px images."""
    base = dict(
        image_size=16,
        patch_size=4,
        vision_width=32,
        vision_depth=2,
        vision_heads=2,
        text_width=32,
        text_depth=2,
        text_heads=2,
        context_length=12,
        vocab_size=vocab_size,
        embed_dim=16,
    )
    base.update(overrides)
    return CLIPConfig(**base)
