"""fourreal built-in plugin package: gaussians."""
