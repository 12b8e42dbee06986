"""The files and small numeric helpers the plugins share, in one place.

A plain library package on top of :mod:`fourreal_core` and :mod:`fourreal_media` (no entry
point, no plugin kind), like :mod:`fourreal_media`. Plugin packages import these instead of
keeping copies, and never import each other for them (``tests/test_layering.py`` fails on an
import cycle between packages):

- :mod:`fourreal_formats.transforms` -- nerfstudio / instant-ngp / D-NeRF ``transforms.json``
  <-> :class:`~fourreal_core.types.PosedVideo` (``load_transforms``, ``write_transforms``).
- :mod:`fourreal_formats.points` -- point clouds as PLY or ``.npz`` (``read_points``,
  ``write_points_ply``) and the one PLY opener ``read_plydata``.
- :mod:`fourreal_formats.scene4d` -- the trained 4D scene (``Scene4D``, ``scene4d.json``).
- :mod:`fourreal_formats.region` -- w_t restricted to the reference video's dynamic region
  (``motion_region.safetensors``).
- :mod:`fourreal_formats.cameras` -- cameras on a sphere or orbit (``cameras_at``,
  ``orbit_cameras``, ``up_basis``), ``points_in_view``, and orbits of a camera about a 4D
  scene (``look_at_target``, ``scene_up``, ``orbit_about``).
- :mod:`fourreal_formats.quaternions` -- the wxyz quaternion maths (``quat_multiply``,
  ``quat_to_matrix``, ``matrix_to_quat``, ``slerp``; was ``fourreal_core.quaternions``).

The numeric helpers that sit lower live where their layer does: the one ``psnr`` and the one
``resize_frames`` in :mod:`fourreal_media`, the one log-linear learning-rate decay
(``log_linear_decay``) in :mod:`fourreal_core.interfaces` (the ``Deformer`` base uses it).
"""
