"""Names of the training augmentation presets (kept apart from transforms.py so that the command
line can list them without importing albumentations)."""
AUGMENT_PRESETS = ("standard", "robust", "framing", "zoom")
