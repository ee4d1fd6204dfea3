"""The head surface as a mesh: marching cubes of the field's density at one expression, with vertex colours, and a
shaded preview image.

``export_mesh(avatar, "head.ply")`` writes ``head.ply`` (or ``.obj`` / ``.glb``), ``head_preview.png`` and
``head_report.json`` beside it.

- **Where.** The density is sampled on a regular grid of vertices spanning the avatar's head box (head frame,
  metres): ``resolution`` vertices along the box's longest side, the other sides in proportion (near-cubic cells).
- **Which expression.** The neutral face (expression code 0, the video's mean face) or a given code, always with the
  mean of the training frames' latent codes (what novel frames use).
- **Iso level.** :func:`choose_level`: the level at which the surface lies where the avatar's rendered light ends.
  Seen from the front, each column of the density grid absorbs half its light at some depth (``sum density dz``
  reaches ln 2: the renderer's median depth); the level is the one whose first crossing in each column lies closest
  to that depth (median over the columns that render at least half opaque), among the levels ``ln 2 / voxel *
  sqrt(2) ** k`` (``ln 2 / voxel``, 139 per metre for the preview preset's 5 mm voxels, is the density at which one
  canonical voxel is half opaque; k from -12 to 4) whose mesh also covers what the avatar renders as opaque from the
  front (the front silhouette of the largest piece of ``density > level`` against those columns, by intersection
  over union, within 0.02 of the best level's). A crisp field gives nearly the same surface at every level; a soft
  one (briefly trained: opacity builds up over centimetres) needs a lower level, and a fixed one would put the mesh
  in front of or behind the face that the avatar renders. The face is a trained field's crispest part and takes a
  higher level than hair and clothes: over the columns that look at the tracked face, :func:`face_level` picks the
  level whose surface lies where the light ends there; it holds within 1 cm of the face's landmarks and everywhere
  in front of them (a column through the face ends its light at the face: thinner density in front of it is haze
  the renders see through, and at the lower level it became a sheet over the chin or cheeks), and blends
  (geometrically, over another centimetre) into the level of the rest; the surface is that of ``density /
  level(x)`` at 1. ``level=`` overrides all this (one level everywhere).
- **Blur.** Before the level is chosen, the sampled density is blurred by a Gaussian of 2.5 mm in the log domain
  (:func:`avatar4d.mesh.surface.smoothed_density`; ``density_blur_m=``): a decoder applied to trilinearly read
  features dimples its level sets at the grid's pitch where the density rises slowly, and the blur takes those
  pits off before marching cubes.
- **Closed surface.** The grid is padded with empty space before marching cubes, so where the head meets the box
  (the neck at its bottom face) the surface is capped flat on the box face rather than left open; the vertices of
  such caps are put back onto the box face.
- **One piece.** Only the largest connected component (by faces) is kept: floaters of stray density and enclosed
  inner shells are dropped (:attr:`MeshResult.dropped_components` says how many).
- **Colour.** Each vertex gets the field's colour at that point seen from the front (view direction (0, 0, -1): from
  the +z side of the head frame into the face), as uint8 RGB.
- **Smoothing.** Taubin smoothing (10 iterations by default) takes the marching cubes' stair steps off the surface
  without shrinking it (:func:`avatar4d.mesh.surface.smooth_surface`).
- **Quality.** ``<stem>_report.json`` and the summary line give the face region's roughness, how much of the face
  the mesh covers, and its distance to the tracked face surface in millimetres (:mod:`avatar4d.mesh.quality`).
- **Preview.** ``<stem>_preview.png``: the mesh from the front, a three-quarter view and the profile, side by side,
  orthographic, Lambert shading times the vertex colour, by the z-buffer rasteriser of
  :mod:`avatar4d.geometry.raster`.

Head frame: x towards the subject's left, y up, z out of the face (see ``avatar4d.geometry.camera``).
"""

from avatar4d.mesh.export import MESH_SUFFIXES, MeshResult, export_mesh
from avatar4d.mesh.surface import EmptySurfaceError

__all__ = ["MESH_SUFFIXES", "EmptySurfaceError", "MeshResult", "export_mesh"]
