"""Point trackers: OpenCV (pyramidal Lucas-Kanade or DIS flow, chained) and tracks from a file."""
