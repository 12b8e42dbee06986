"""fourreal built-in plugin package: stages."""
