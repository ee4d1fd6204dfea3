"""Many videos at once: ``avatar4d batch`` (each video prepared, trained and evaluated into its own folder, with a
summary), on a local process pool or a Ray cluster."""
