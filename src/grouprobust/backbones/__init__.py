"""Backbones for end-to-end fine-tuning and what feeds them their inputs."""
