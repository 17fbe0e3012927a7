"""Training scripts behind ``hf-contrastive train``; each runs alone under ``accelerate launch -m <module>``."""
