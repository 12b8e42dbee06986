"""fourreal built-in plugin package: synthetic."""
