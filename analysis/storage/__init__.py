"""The dataset on disk: the face store, scanning, paths, locks, exports, image files."""
