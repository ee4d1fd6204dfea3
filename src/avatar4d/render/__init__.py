"""Rendering: pixels to rays, rays into head space, sampling, compositing, the renderer."""
