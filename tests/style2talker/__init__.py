"""Style2Talker tests: StyleGAN2 / DualStyleGAN ops and the manifest-driven golden fixtures."""
