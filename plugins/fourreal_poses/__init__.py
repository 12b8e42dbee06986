"""fourreal built-in plugin package: poses."""
