"""Files on disk: component checkpoints (config.json + safetensors, atomic, versioned),
int8 storage of shipped weights, and images at the edges of the library (PIL <-> tensors,
image sets with a manifest)."""
