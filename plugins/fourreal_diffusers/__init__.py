"""fourreal built-in plugin package: diffusers."""
