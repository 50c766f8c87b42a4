"""Neural networks: the video autoencoder and the temporal U-Net (and their building blocks)."""
