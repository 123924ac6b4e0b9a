"""Melon playlist continuation models: recommendation layer, baselines, title model, denoising autoencoder."""
