"""Names of the training augmentation presets (kept apart from transforms.py so that the command
line can list them without importing albumentations)."""
AUGMENT_PRESETS = ("standard", "robust", "framing", "zoom")
# the presets built on the robust one (framing crops, colour constancy, blur, pen marks)
ROBUST_PRESETS = ("robust", "framing", "zoom")
# the share of photos that the zoom preset frames on the lesion (--zoom-p)
ZOOM_P = 0.25
