"""Profile real PyTorch models on the roofline (filled in below)."""
