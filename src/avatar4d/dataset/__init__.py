"""The prepared dataset: its layout and manifest, masks, background plate, and the rays training reads from it."""
