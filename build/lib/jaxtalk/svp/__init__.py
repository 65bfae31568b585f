"""SVP: video UNet parts, audio projection, kps guider, motion module, style extractor."""
