"""Tests of the pretrained backbone families."""
