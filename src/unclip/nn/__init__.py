"""Network blocks shared by every model: attention, transformers, UNet blocks."""
