"""lesionseg: skin-lesion segmentation with DS-AttentionUNet (train, evaluate, predict, app)."""
__version__ = "0.1.0"
