"""Per-frame pose corrections: Rodrigues' formula against SciPy's rotation vectors, rays moved as a composed 4 x 4
pose would move them, the corrections' mean held at zero, and a real field's pixels pulling a displaced frame back."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from avatar4d.geometry.rays import camera_rays_in_head
from avatar4d.training.pose_refinement import PoseRefinement, rotation_matrices


def test_rotation_matrices_equal_scipys_rotation_vectors():
    vectors = np.array([[0.0, 0.0, 0.0], [1e-6, -2e-6, 3e-7], [0.01, -0.02, 0.005], [0.3, 0.1, -0.7], [2.0, 1.0, 0.5]])
    expected = Rotation.from_rotvec(vectors).as_matrix()
    np.testing.assert_allclose(rotation_matrices(torch.from_numpy(vectors)).numpy(), expected, atol=1e-12)


def test_rotation_matrices_have_gradients_at_zero():
    vectors = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(rotation_matrices, (vectors,))
    # at zero the derivative along axis k is the generator [e_k]x
    (grad,) = torch.autograd.grad(rotation_matrices(vectors)[0, 2, 1], vectors)
    assert grad[0].tolist() == [1.0, 0.0, 0.0]


def test_corrected_rays_are_the_rays_of_the_composed_pose():
    gen = torch.Generator().manual_seed(0)
    refinement = PoseRefinement(5).double()
    with torch.no_grad():
        refinement.rotation.copy_(torch.randn(5, 3, generator=gen, dtype=torch.float64) * 0.05)
        refinement.translation.copy_(torch.randn(5, 3, generator=gen, dtype=torch.float64) * 0.003)
    head_from_camera = torch.eye(4, dtype=torch.float64)
    head_from_camera[:3, :3] = torch.from_numpy(Rotation.from_rotvec([0.1, -0.3, 0.05]).as_matrix())
    head_from_camera[:3, 3] = torch.tensor([0.01, -0.02, 0.45], dtype=torch.float64)
    directions = torch.nn.functional.normalize(torch.randn(7, 3, generator=gen, dtype=torch.float64), dim=-1)
    origins, rays = camera_rays_in_head(directions, head_from_camera)
    frame_rows, frame_ids = torch.tensor([3, 1]), torch.tensor([0, 1, 1, 0, 0, 1, 0])
    moved, turned = refinement.apply(origins, rays, frame_ids, frame_rows)
    for ray in range(7):
        row = int(frame_rows[frame_ids[ray]])
        delta = torch.eye(4, dtype=torch.float64)
        delta[:3, :3] = torch.from_numpy(Rotation.from_rotvec(refinement.rotation[row].detach().numpy()).as_matrix())
        delta[:3, 3] = refinement.translation[row].detach()
        origin, direction = camera_rays_in_head(directions[ray:ray + 1], delta @ head_from_camera)
        torch.testing.assert_close(moved[ray:ray + 1], origin)
        torch.testing.assert_close(turned[ray:ray + 1], direction)
    torch.testing.assert_close(turned.norm(dim=-1), torch.ones(7, dtype=torch.float64))
    for row in range(5):  # the same corrections as 4 x 4 transforms
        moved_here, _ = camera_rays_in_head(directions, refinement.corrections()[row].detach() @ head_from_camera)
        expected, _ = refinement.apply(origins, rays, torch.zeros(7, dtype=torch.long), torch.tensor([row]))
        torch.testing.assert_close(moved_here, expected.detach())


def test_centering_keeps_each_frames_offset_from_the_others():
    refinement = PoseRefinement(4)
    with torch.no_grad():
        refinement.rotation.copy_(torch.tensor([[0.01, 0.0, 0.0], [0.03, 0.0, 0.0], [0.0, 0.02, 0.0], [0.0, 0.02, 0.0]]))
        refinement.translation.fill_(0.002)
    before = refinement.rotation.detach().clone()
    refinement.center_()
    torch.testing.assert_close(refinement.rotation.mean(0), torch.zeros(3))
    torch.testing.assert_close(refinement.translation, torch.zeros(4, 3))
    torch.testing.assert_close(refinement.rotation[1] - refinement.rotation[0], before[1] - before[0])
    rotation_deg, translation_mm = refinement.magnitudes()
    # centred: (0, -1, 0), (2, -1, 0), (-1, 1, 0), (-1, 1, 0) hundredths of a radian
    assert rotation_deg == pytest.approx(np.degrees(np.sqrt(np.mean([1e-4, 5e-4, 2e-4, 2e-4]))), rel=1e-5)
    assert translation_mm == 0.0
