"""Video: decoding and frames, shots, face tracks, and the faces of a video."""
