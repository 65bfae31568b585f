"""Independent PyTorch references written from the published formulas (used where no pip package has one)."""
