"""Pretrained backbone families (SD UNet and VAE, CLIP text, Whisper, wav2vec2), each importable on its own."""
