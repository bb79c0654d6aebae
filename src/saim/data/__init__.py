"""Data IO: NIfTI volumes, nnU-Net raw datasets, slicing, synthetic phantoms, TotalSegmentator import."""
