"""fourreal built-in plugin package: deformers."""
