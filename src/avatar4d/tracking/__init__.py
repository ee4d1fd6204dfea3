"""Face tracking: landmarks, camera, rigid head pose, the subject's face model (template, expression basis,
semantic controls), and ``prepare`` (video -> tracked dataset)."""
