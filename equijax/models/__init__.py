"""Flax ports of pretrained models (CLIP, ResNet, GPT-2, seq2seq) with Hugging Face loading."""
